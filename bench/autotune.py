"""Time the spill-free block configurations of both Triton passes against the defaults (GPU).

Candidates are the rows of ``bench/results/aot.csv`` (``bench/aot_check.py``) for this GPU's
architecture, bf16, that compiled with no spill instruction: the default configurations and the
``--subset tune`` alternatives. Rows of the running triton version are preferred; another
version's rows are used only when this one has none. For each N and pass the script checks that
a candidate gives the default's answer (pass 1: the same argmax and lse within 1e-3; pass 2: the
gradient within 2e-2 of its largest entry, bf16 products), then times the kernel alone
(``triton.testing.do_bench``: median of repeated launches, L2 flushed between them) and reports
its speed-up over the default. Rows go to ``--out`` (CSV).

    python bench/autotune.py --out /tmp/autotune.csv                       # on a GPU
    TRITON_INTERPRET=1 python bench/autotune.py --device cpu --v 512 --d 64 --n 16 --budget 60
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
AOT_CSV = ROOT / "bench" / "results" / "aot.csv"
COLUMNS = (
    "triton",
    "gpu",
    "kernel",
    "dtype",
    "V",
    "d",
    "n",
    "blocks",
    "default",
    "ms",
    "speedup",
    "tflops",
    "gbps",
    "check",
)


def candidates(aot_csv: Path, arch: int, kernel: str, version: str) -> list[tuple[int, int, int, int]]:
    """Spill-free bf16 ``(BLOCK_M, BLOCK_N, BLOCK_K, num_warps)`` of ``kernel`` for ``arch``."""
    with open(aot_csv, newline="") as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if r["kernel"] == kernel
            and int(r["arch"]) == arch
            and r["dtype"] == "bfloat16"
            and r["status"] == "ok"
            and int(r["spill_insts"]) == 0
        ]
    mine = [r for r in rows if r["triton"] == version]
    out = []
    for r in mine or rows:
        cfg = tuple(int(r[k]) for k in ("block_m", "block_n", "block_k", "num_warps"))
        if cfg not in out:
            out.append(cfg)
    return out


def _bench(fn, device) -> float:
    """Median milliseconds of ``fn``."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=10, rep=40, return_mode="median"))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--v", type=int, default=152064, help="vocabulary (default: Qwen2.5-7B's head)")
    ap.add_argument("--d", type=int, default=3584)
    ap.add_argument("--n", type=int, nargs="+", default=[16, 64, 300])
    ap.add_argument("--aot", type=Path, default=AOT_CSV)
    ap.add_argument("--arch", type=int, help="architecture rows to read (default: the GPU's, 90 on cpu)")
    ap.add_argument("--budget", type=float, default=120.0, help="seconds: start no new candidate after this")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("autotune: no CUDA device", file=sys.stderr)
        return 2
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        print("autotune: --device cpu needs TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    import triton
    from latentseek_fast.kernels._common import default_blocks
    from latentseek_fast.kernels.lpg_forward import combine, fwd_launch
    from latentseek_fast.kernels.lpg_grad import grad_launch

    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        arch, gpu = args.arch or 10 * major + minor, torch.cuda.get_device_name(device)
    else:
        arch, gpu = args.arch or 90, "cpu-interpreter"
    dtype = torch.bfloat16
    v, d = args.v, args.d
    gen = torch.Generator(device="cpu").manual_seed(0)
    weight = (torch.randn(v, d, generator=gen) / d**0.5).to(device, dtype)
    w_bytes = v * d * weight.element_size()
    started = time.perf_counter()
    rows = []
    for n in args.n:
        hidden = (2.0 * torch.randn(n, d, generator=gen)).to(device, dtype)
        reward_t = torch.full((n,), -1.0, device=device)
        launch, part = fwd_launch(hidden, weight, None, None, None, 1.0, "greedy", 0)
        launch.run()
        tok, _, lse, argmax, _ = combine(part)
        glaunch, g_ref = grad_launch(hidden, weight, None, tok, lse, reward_t, None, 1.0)
        glaunch.run()
        g_scale = float(g_ref.abs().max()) or 1.0
        for kernel, flops_per in (("fwd", 2), ("grad", 4)):
            default = default_blocks(n, dtype, grad=kernel == "grad")
            cands = [default] + [
                c for c in candidates(args.aot, arch, kernel, triton.__version__) if c != default
            ]
            for cfg in cands:
                if cfg != default and time.perf_counter() - started > args.budget:
                    print(f"autotune: budget of {args.budget:.0f} s spent; {kernel} N={n} {cfg} not timed")
                    continue
                try:
                    if kernel == "fwd":
                        lc, p = fwd_launch(hidden, weight, None, None, None, 1.0, "greedy", 0, blocks=cfg)
                        lc.run()
                        _, _, lse_c, am_c, _ = combine(p)
                        ok = bool((am_c == argmax).all()) and float((lse_c - lse).abs().max()) < 1e-3
                        check = "ok" if ok else "MISMATCH"
                    else:
                        lc, g = grad_launch(hidden, weight, None, tok, lse, reward_t, None, 1.0, blocks=cfg)
                        lc.run()
                        err = float((g - g_ref).abs().max()) / g_scale
                        check = "ok" if err < 2e-2 else f"MISMATCH rel {err:.2e}"
                    ms = _bench(lc.run, device)
                except Exception as exc:  # a candidate that fails to run is a result
                    ms, check = float("nan"), f"error: {type(exc).__name__}: {str(exc)[:120]}"
                rows.append(
                    dict(
                        triton=triton.__version__,
                        gpu=gpu,
                        kernel=kernel,
                        dtype="bfloat16",
                        V=v,
                        d=d,
                        n=n,
                        blocks="x".join(map(str, cfg[:3])) + f"/{cfg[3]}",
                        default=int(cfg == default),
                        ms=round(ms, 4),
                        tflops=round(flops_per * n * v * d / (ms * 1e-3) / 1e12, 2),
                        gbps=round(w_bytes / (ms * 1e-3) / 1e9, 1),
                        check=check,
                    )
                )
        base = {r["kernel"]: r["ms"] for r in rows if r["n"] == n and r["default"]}
        for r in rows:
            if r["n"] == n:
                r["speedup"] = round(base[r["kernel"]] / r["ms"], 3) if r["ms"] == r["ms"] else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(
            f"{r['kernel']:4} N={r['n']:<4} {r['blocks']:14} {'default' if r['default'] else '':7} "
            f"{r['ms']:9.4f} ms  x{r['speedup']}  {r['tflops']} TFLOP/s  {r['gbps']} GB/s  {r['check']}"
        )
    best = {}
    for r in rows:
        if r["check"] == "ok" and r["ms"] == r["ms"]:
            key = (r["kernel"], r["n"])
            if key not in best or r["ms"] < best[key]["ms"]:
                best[key] = r
    for (kernel, n), r in sorted(best.items()):
        print(f"autotune best: {kernel} N={n}: {r['blocks']} ({r['ms']} ms, x{r['speedup']} vs default)")
    bad = [r for r in rows if r["check"] != "ok"]
    print(f"autotune: {len(rows)} timings, {len(bad)} not ok; rows in {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
