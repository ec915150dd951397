"""Bench helpers that run in seconds: ``bench/bench_occupancy.py``'s accounting on a hand-made
trace (the benchmark itself runs for minutes; what it reports must add up) and the benches'
option checks (``harness.check_at_least``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import bench_occupancy as occ  # noqa: E402
import harness  # noqa: E402


def test_bands_cover_every_row_count_once():
    assert [occ.band_of(r) for r in (1, 2, 4, 5, 16, 17, 64, 65, 256, 257)] == [
        "1", "2-4", "2-4", "5-8", "9-16", "17-32", "49-64", "65-128", "129-256", ">256"
    ]  # fmt: skip


def test_summarise_splits_the_wall_by_phase_band_and_time():
    # (start, seconds, slots, width, rows fed, tokens fed); the run starts at 100 s, lasts 10 s
    trace = [(100.0, 2.0, 64, 2, 64, 128), (102.5, 1.0, 64, 1, 60, 60), (109.5, 0.4, 3, 3, 3, 9)]
    phase, bands, timeline = occ.summarise("x", 100.0, 10.0, 64, 64, 1.5, trace)
    assert phase == {"config": "x", "batch_size": 64, "problems": 64, "wall_s": 10.0, "backbone_s": 3.4,
                     "head_s": 1.5, "rest_s": 5.1, "forwards": 3, "mean_rows_fed": 42.3}  # fmt: skip
    assert [(b["rows_fed"], b["forwards"], b["seconds"]) for b in bands] == [
        ("2-4", 1, 0.4),
        ("49-64", 2, 3.0),
    ]
    big = bands[1]
    assert big["ms_per_row"] == pytest.approx(1000 * 3.0 / 124, abs=0.01)
    assert big["ms_per_token"] == pytest.approx(1000 * 3.0 / 188, abs=0.01)
    assert big["tokens_per_row"] == pytest.approx(188 / 124, abs=0.01)
    assert big["share_of_wall"] == 0.3
    assert [t["forwards"] for t in timeline] == [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    assert [t["mean_rows_fed"] for t in timeline][::9] == ["64.0", "3.0"]


def test_head_clock_times_the_module_until_removed():
    head = torch.nn.Linear(8, 4)
    clock = occ.HeadClock(head)
    head(torch.ones(2, 8))
    timed = clock.seconds
    assert timed > 0
    clock.remove()
    head(torch.ones(2, 8))
    assert clock.seconds == timed


def test_check_at_least_names_the_first_option_below_its_minimum(capsys):
    ap = argparse.ArgumentParser(prog="b")
    ok = argparse.Namespace(limit=1, max_steps=0)
    harness.check_at_least(ap, ok, {"limit": 1, "max_steps": 0})  # at the minimums: no error
    with pytest.raises(SystemExit):
        harness.check_at_least(ap, argparse.Namespace(limit=3, max_steps=-1), {"limit": 1, "max_steps": 0})
    assert "b: error: --max-steps -1: expected an integer >= 0" in capsys.readouterr().err
