"""The latent update alone: one Adam step on fp32 latents [N, d] with gradient ``reward * direction``.

Providers, each timed per call including forming ``reward * direction`` and the clipping:

- ``native``: ``latent_adam_(..., impl="native")``, the compiled op (one pass, no gradient tensor;
  with clipping one extra read-only pass for the norm).
- ``fallback``: ``latent_adam_(..., impl="torch")``, its plain-torch twin.
- ``adam-foreach`` / ``adam-fused`` / ``adam-default``: ``p.grad = reward * direction``, then
  ``clip_grad_norm_`` (when clipping), then ``torch.optim.Adam(foreach=True)`` /
  ``(fused=True)`` / default options (the research code's optimizer) ``.step()``.

Each configuration runs with and without clipping (``max_grad_norm=1.0``, far below the
gradient's norm, so the clip really scales). ``speedup`` is against ``adam-foreach`` with the
same clipping. ``gbps`` counts the minimal traffic, 7 fp32 arrays of N x d (read latents,
direction and both moments; write latents and both moments); at these sizes they sit in cache
on most CPUs, so the percentage of the copy ceiling can exceed 100.

Run: ``python bench/bench_update.py`` (CPU) or ``--device cuda``; smoke:
``python bench/bench_update.py --n 4 --d 64 --repeats 3 --out /tmp/update.csv``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    bench_device,
    markdown_table,
    measure_peaks,
    peak_memory,
    roofline,
    time_fn,
    write_rows,
)

PROVIDERS = ("native", "fallback", "adam-foreach", "adam-fused", "adam-default")
BASELINE = "adam-foreach"
REWARD = -1.0
LR = 0.03
CLIP = 1.0
N_DEFAULT = (16, 64, 300)
D_DEFAULT = (576, 3584)


class Skip(Exception):
    pass


def make_update(provider: str, lat0: torch.Tensor, direction: torch.Tensor, clip: float | None):
    """A closure doing one update (state kept inside) and a note."""
    if provider in ("native", "fallback"):
        from latentseek_fast.ops.latent_adam import latent_adam_

        impl = "native" if provider == "native" else "torch"
        if impl == "native":
            from latentseek_fast import _ext

            if not _ext.ext_has_kernel("latent_adam_", lat0.device.type):
                why = _ext.ext_unavailable_reason() or f"no {lat0.device.type} kernel in the extension"
                raise Skip(f"native latent_adam_ unavailable: {why}")
        lat = lat0.clone()
        m = torch.zeros_like(lat, dtype=torch.float32)
        v = torch.zeros_like(m)
        state = {"t": 0}

        def step():
            state["t"] += 1
            latent_adam_(lat, direction, REWARD, m, v, state["t"], LR, max_grad_norm=clip, impl=impl)

        return step

    p = torch.nn.Parameter(lat0.clone())
    kw = {"adam-foreach": {"foreach": True}, "adam-fused": {"fused": True}, "adam-default": {}}[provider]
    try:
        opt = torch.optim.Adam([p], lr=LR, **kw)
    except (RuntimeError, ValueError) as exc:
        raise Skip(f"torch.optim.Adam({kw}) unsupported here: {exc}") from None

    def step():
        p.grad = REWARD * direction
        if clip:
            torch.nn.utils.clip_grad_norm_([p], clip)
        opt.step()

    try:  # fused/foreach support is only checked at the first step
        step()
    except (RuntimeError, ValueError) as exc:
        raise Skip(f"torch.optim.Adam({kw}).step() failed here: {str(exc).splitlines()[0][:160]}") from None
    return step


def bench_one(provider, n, d, clip, device, args, peaks) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    row |= {"provider": provider, "N": n, "d": d, "clip": bool(clip), "dtype": "float32"}
    row["device"] = device.type
    g = torch.Generator(device=device).manual_seed(args.seed)
    lat0 = torch.randn(n, d, generator=g, device=device)
    direction = torch.randn(n, d, generator=g, device=device)  # norm ~ sqrt(N d) >> CLIP
    try:
        step = make_update(provider, lat0, direction, clip)
        t = time_fn(step, warmup=args.warmup, repeats=args.repeats, device=device)
        mem = peak_memory(step, device=device)
    except Skip as exc:
        row["status"] = f"skipped: {exc}"
        return row
    except Exception as exc:
        row["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return row
    row["status"] = "ok"
    row.update({k: t[k] for k in ("median_s", "min_s", "max_s", "iqr_s", "runs")})
    row["peak_mem_mb"] = mem / 2**20
    row["hbm_bytes"] = 7 * 4 * n * d
    # Adam with the gradient formed and clipped: ~14 FLOPs per element (not a matrix product).
    rates = roofline(t["median_s"], 14 * n * d, row["hbm_bytes"], peaks)
    row.update({k: v for k, v in rates.items() if k in ("gbps", "pct_peak_bw")})
    return row


# Every row has every column (rows are appended group by group as they are measured).
COLUMNS = [
    "provider", "N", "d", "clip", "dtype", "device", "status", "median_s", "min_s", "max_s", "iqr_s",
    "runs", "speedup", "peak_mem_mb", "hbm_bytes", "gbps", "pct_peak_bw",
    "peak_gemm_tflops", "peak_copy_gbps", "peak_gemm_dtype", "peak_gemm_n", "peak_copy_mib",
]  # fmt: skip
TABLE = ["provider", "N", "d", "clip", "median_s", "iqr_s", "speedup", "gbps", "pct_peak_bw", "status"]


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--n", type=int, nargs="+", default=list(N_DEFAULT))
    ap.add_argument("--d", type=int, nargs="+", default=list(D_DEFAULT))
    ap.add_argument("--clip", choices=("both", "on", "off"), default="both")
    ap.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    ap.add_argument("--repeats", type=int, help="timed runs (default: 200 on cpu, 500 on cuda)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-peaks", action="store_true", help="skip measuring the GEMM/copy ceilings")
    ap.add_argument("--out", default="update", help="CSV name under bench/results/, or a path to a .csv")
    args = ap.parse_args(argv)

    device = bench_device(ap, args.device, args.threads)
    cuda = device.type == "cuda"
    args.repeats = args.repeats or (500 if cuda else 200)
    clips = {"both": (None, CLIP), "on": (CLIP,), "off": (None,)}[args.clip]
    peaks = None if args.no_peaks else measure_peaks(device, torch.float32)

    rows, path = [], None
    for d in args.d:
        for n in args.n:
            for clip in clips:
                group = []
                for provider in args.providers:
                    row = bench_one(provider, n, d, clip, device, args, peaks)
                    if peaks:
                        row.update(peaks)
                    group.append(row)
                    print(
                        f"{provider:>13} N={n:<4} d={d:<5} clip={bool(clip)!s:<5} "
                        + (f"{row['median_s'] * 1e6:10.1f} us" if row["status"] == "ok" else row["status"]),
                        flush=True,
                    )
                base = next((r for r in group if r["provider"] == BASELINE and r["status"] == "ok"), None)
                for r in group:
                    if base and r["status"] == "ok":
                        r["speedup"] = base["median_s"] / r["median_s"]
                rows += group
                path = write_rows(args.out, group)
    print()
    print(markdown_table(rows, TABLE))
    print(f"rows appended to {path}")
    return rows


if __name__ == "__main__":
    main()
