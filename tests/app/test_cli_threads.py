"""The CLI's default CPU thread count (``app/cli/load.py``: ``default_cpu_threads``, ``cli_threads``)."""

from __future__ import annotations

import argparse

import pytest

from latentseek_fast.app.cli import load


@pytest.mark.parametrize(
    "cores,load1,expected",
    [
        (2, 0.0, 2),
        (2, 0.4, 2),
        (2, 0.6, 1),
        (2, 1.4, 1),
        (2, 9.8, 1),
        (16, 3.2, 13),
        (1, 0.0, 1),
        (4, 0.0, 4),
    ],
)
def test_default_cpu_threads_leaves_loaded_cores_alone(cores, load1, expected):
    assert load.default_cpu_threads(cores, load1) == expected


def _args(threads=None):
    return argparse.Namespace(threads=threads)


def test_cli_threads_respects_the_user_and_torchrun(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(load.os, "getloadavg", lambda: (5.0, 5.0, 5.0))
    assert load.cli_threads(_args(3), "cpu") == 3  # --threads wins
    assert load.cli_threads(_args(), "cpu") == 1  # a loaded machine: 1 thread
    assert load.cli_threads(_args(), "cuda") is None  # a GPU: torch's threads as they are
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert load.cli_threads(_args(), "cpu") is None  # the environment chose
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert load.cli_threads(_args(), "cpu") is None  # torchrun.resolve_threads split the cores
