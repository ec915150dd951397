"""CPU micro-benchmarks (pytest-benchmark) of the latent step providers and the latent update.

Run: ``python -m pytest bench/ --benchmark-only`` (a few minutes on a 2-core CPU; set
``LATENTSEEK_BENCH_THREADS=1`` on a machine others are loading: the chunked torch twin's many
small ops suffer most from busy cores). Not part of the test run: the project's ``testpaths``
is ``tests/``. Without ``--benchmark-only`` the same functions run as plain tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step  # noqa: E402
import bench_update  # noqa: E402
import shapes  # noqa: E402

pytest.importorskip("pytest_benchmark")

if os.environ.get("LATENTSEEK_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["LATENTSEEK_BENCH_THREADS"]))

CPU = torch.device("cpu")
# (N, V, d): a SmolLM2-wide head with a cut vocabulary, small enough for many rounds.
STEP_SHAPES = [(16, 8192, 576), (64, 16384, 576)]
UPDATE_SHAPES = [(64, 576), (300, 3584)]


def _step(provider, n, V, d):
    shape = shapes.HeadShape(f"V{V}xd{d}", "synthetic", V, d, "float32", False)
    W, h0 = bench_step._inputs(shape, n, torch.float32, CPU, seed=0)
    step, _ = bench_step.make_step(provider, W, h0, None, "auto")
    return step


@pytest.mark.parametrize("n,V,d", STEP_SHAPES, ids=[f"N{n}-V{v}-d{d}" for n, v, d in STEP_SHAPES])
@pytest.mark.parametrize("provider", ["reference", "torch"])
def test_step(benchmark, provider, n, V, d):
    step = _step(provider, n, V, d)
    benchmark.group = f"step N={n} V={V} d={d}"
    benchmark.extra_info.update(provider=provider, N=n, V=V, d=d, useful_flops=4 * n * V * d)
    tokens = benchmark.pedantic(step, rounds=8, warmup_rounds=1, iterations=1)
    assert tokens.shape == (n,)


def test_step_compile(benchmark):
    """``torch.compile`` of the reference step at the smaller shape (its compile is the warm-up)."""
    n, V, d = STEP_SHAPES[0]
    step = _step("compile", n, V, d)
    try:
        step()
    except Exception as exc:  # inductor needs a working C++ compiler
        pytest.skip(f"torch.compile failed here: {type(exc).__name__}: {exc}")
    benchmark.group = f"step N={n} V={V} d={d}"
    benchmark.extra_info.update(provider="compile", N=n, V=V, d=d)
    benchmark.pedantic(step, rounds=8, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("n,d", UPDATE_SHAPES, ids=[f"N{n}-d{d}" for n, d in UPDATE_SHAPES])
@pytest.mark.parametrize("provider", ["native", "fallback", "adam-foreach", "adam-fused"])
def test_update(benchmark, provider, n, d):
    g = torch.Generator().manual_seed(0)
    lat0 = torch.randn(n, d, generator=g)
    direction = torch.randn(n, d, generator=g)
    try:
        step = bench_update.make_update(provider, lat0, direction, bench_update.CLIP)
    except bench_update.Skip as exc:
        pytest.skip(str(exc))
    benchmark.group = f"update+clip N={n} d={d}"
    benchmark.extra_info.update(provider=provider, N=n, d=d, clip=bench_update.CLIP)
    benchmark.pedantic(step, rounds=200, warmup_rounds=10, iterations=1)
