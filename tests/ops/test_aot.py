"""Ahead-of-time compilation of the Triton kernels for sm_90 and sm_80, on this CPU machine.

Runs ``bench/aot_check.py --subset ci`` (8 real compiles with triton's bundled ptxas, about a
minute on 2 cores) in a subprocess without ``TRITON_INTERPRET`` (the interpreter replaces the
compiler in a process that imported triton under it), then checks the table it wrote.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AOT = ROOT / "bench" / "aot_check.py"


def _nvidia_backend_reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    try:
        from triton import knobs

        missing = [t for t in ("ptxas", "cuobjdump") if not os.path.exists(getattr(knobs.nvidia, t).path)]
    except Exception as exc:  # no NVIDIA backend in this triton build
        return f"triton's NVIDIA backend is unusable here ({type(exc).__name__}: {exc})"
    return f"triton ships no {', '.join(missing)} here" if missing else None


def _load_aot():
    spec = importlib.util.spec_from_file_location("aot_check", AOT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ci_subset_covers_every_code_path():
    aot = _load_aot()
    rows = aot.ci_set([90, 80])
    for kernel, modes in (("fwd", set(aot.MODES)), ("grad", {"-"})):
        sub = [r for r in rows if r["kernel"] == kernel]
        assert {r["dtype"] for r in sub} == set(aot.DTYPES), kernel
        assert {r["bias"] for r in sub} == {0, 1}, kernel
        assert {r["softcap"] for r in sub} == {0, 1}, kernel
        assert {r["mode"] for r in sub} == modes, kernel
        assert {r["arch"] for r in sub} == {90, 80}, kernel
        assert {r["n"] for r in sub} == set(aot.N_CASES), kernel
    # The full set: 3 dtypes x 4 switch pairs x 2 N x (3 modes + grad) x 2 archs, + 12 at N = 32.
    full = aot.full_set([90, 80])
    assert len(full) == 3 * 4 * 2 * 4 * 2 + 12
    assert len({tuple(sorted(v.items())) for v in full}) == len(full)


def test_kernels_compile_for_hopper_and_ampere(tmp_path):
    reason = _nvidia_backend_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "aot.csv"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = env.get("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run(
        [sys.executable, str(AOT), "--subset", "ci", "--jobs", "1", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(_load_aot().ci_set([90, 80]))
    for r in rows:
        assert r["status"] == "ok", r
        assert 0 < int(r["regs"]) <= 255, r
        assert int(r["spill_insts"]) == 0, r
        assert 0 < int(r["shared_bytes"]) <= int(r["shared_limit"]), r
        if r["dtype"] != "float32":
            # bf16/fp16 must reach the tensor cores: wgmma on sm_90, mma.sync on sm_80.
            assert r["tensor_core"] == "yes" and int(r["mma_ptx"]) > 0, r
        if r["kernel"] == "grad":
            assert int(r["atomics_sass"]) > 0, r  # the gradient's fp32 atomic adds
