"""One latent step per provider: tokens + gradient + Adam update + greedy re-decode of N latents.

Every provider does the same work per call (docs/algorithm.md: one seek iteration's latent
part) on a random LM head ``W [V, d]`` and random latents ``[N, d]``, reward -1, lr 0.03:

- ``reference``: the research code's way: full logits, ``softmax + 1e-8``, argmax tokens,
  ``log(p[token] + 1e-10)``, autograd backward, ``torch.optim.Adam`` step (default options,
  latents in the model dtype), then a second LM-head product + argmax for the re-decode.
  3 products of 2NVd FLOPs, 3 passes over W, several [N, V] tensors.
- ``compile``: the same three pieces under ``torch.compile`` (loss, optimizer step, re-decode);
  compile time is spent in the warm-up and reported as ``compile_s``.
- ``torch``: our seek loop's steady state: ``latent_adam_`` with the pending direction, then
  one ``latent_policy_grad(..., backend="torch")`` call that yields the re-decode argmax and the
  next direction. 2 products (4NVd), one pass over W.
- ``triton``: the same with ``backend="triton"`` (CUDA only: the interpreter is no benchmark).
  Its gradient kernel recomputes the logits: 3 products, 2 passes over W.
- ``cce`` / ``liger`` (CUDA, when importable): ``cut_cross_entropy.linear_cross_entropy`` /
  Liger's fused linear cross-entropy on the argmax tokens (backward w.r.t. the latents only),
  ``torch.optim.Adam(fused=True)``, and the argmax re-decode. cce: 4 products (forward, backward
  recompute + gradient, re-decode), 3 passes; liger: 3 products (it forms the input gradient in
  its forward), 2 passes.

Columns (see bench/README.md): times, ``peak_mem_mb`` (harness.peak_memory of one call),
``speedup`` and ``mem_ratio`` against ``reference``, ``useful_tflops`` (4NVd / time),
``achieved_tflops`` (the products the provider really runs / time), ``gbps`` (W bytes times
W passes / time) and their percentages of the ceilings measured once per run
(``harness.measure_peaks``), and ``agree``: the share of re-decoded tokens equal to the
reference's after one step from the same latents.

Run: ``python bench/bench_step.py`` (CPU defaults) or ``--device cuda``; smoke:
``python bench/bench_step.py --n 4 --models smollm2 --repeats 1 --out /tmp/step.csv``.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes as S  # noqa: E402
from harness import (  # noqa: E402
    STEP_COLUMNS,
    bench_device,
    markdown_table,
    measure_peaks,
    peak_memory,
    roofline,
    time_fn,
    write_rows,
)

PROVIDERS = ("reference", "compile", "torch", "triton", "cce", "liger")
# (products of 2NVd FLOPs actually run, passes over W) per step; see the module docstring.
WORK = {
    "reference": (3, 3),
    "compile": (3, 3),
    "torch": (2, 1),
    "triton": (3, 2),
    "cce": (4, 3),
    "liger": (3, 2),
}
USEFUL_PRODUCTS = 2  # logits at the updated latents + the gradient product: 4NVd
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
REWARD = -1.0
LR = 0.03


class Skip(Exception):
    """A provider that cannot run here; the message is recorded in the row."""


# --- the research code's step, as plain functions (also what torch.compile compiles) ---------


def _ref_loss(p, W, reward: float, softcap: float | None):
    logits = F.linear(p, W)
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    probs = torch.softmax(logits, dim=-1) + 1e-8
    tokens = torch.argmax(probs, dim=-1)
    logp = torch.log(probs.gather(1, tokens.unsqueeze(1)).squeeze(1) + 1e-10)
    return -reward * logp.sum()


def _redecode(p, W):
    # A soft-cap is monotone, so the argmax needs no tanh.
    return torch.argmax(F.linear(p, W), dim=-1)


def _adam(params, lr, device, fused: bool):
    if fused:
        try:
            return torch.optim.Adam(params, lr=lr, fused=True), True
        except (RuntimeError, ValueError):  # fused Adam not supported for this device/dtype
            pass
    return torch.optim.Adam(params, lr=lr), False


def make_reference(W, h0, softcap, compiled: bool, dynamic: bool | None = None):
    p = torch.nn.Parameter(h0.clone())
    opt = torch.optim.Adam([p], lr=LR)  # the research code's optimizer: default options
    loss_fn, redecode, opt_step = _ref_loss, _redecode, opt.step
    if compiled:
        loss_fn = torch.compile(_ref_loss, dynamic=dynamic)
        redecode = torch.compile(_redecode, dynamic=dynamic)

        @torch.compile(dynamic=dynamic)
        def opt_step():
            opt.step()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(p, W, REWARD, softcap).backward()
        opt_step()
        with torch.no_grad():
            return redecode(p.detach(), W)

    return step, ("dynamic shapes" if dynamic else "") if compiled else ""


def make_fused(W, h0, softcap, backend: str, adam_impl: str):
    from latentseek_fast.ops.latent_adam import latent_adam_
    from latentseek_fast.ops.latent_policy_grad import latent_policy_grad

    if backend == "triton" and W.device.type != "cuda":
        raise Skip("triton runs on CUDA only (its CPU interpreter is not a benchmark)")
    lat = h0.clone().contiguous()
    master = lat.float() if lat.dtype != torch.float32 else None
    m = torch.zeros(lat.shape, dtype=torch.float32, device=lat.device)
    v = torch.zeros_like(m)

    def lpg():
        return latent_policy_grad(lat, W, 1.0, softcap=softcap, backend=backend, need_grad=True)

    state = {"pending": lpg(), "t": 0}

    def step():
        state["t"] += 1
        latent_adam_(lat, state["pending"].grad, REWARD, m, v, state["t"], LR, master=master, impl=adam_impl)
        state["pending"] = lpg()  # re-decode argmax now, next direction for the next step
        return state["pending"].argmax

    note = ""
    if adam_impl != "torch":
        from latentseek_fast import _ext

        if not _ext.ext_has_kernel("latent_adam_", lat.device.type):
            note = "latent_adam_ on its torch fallback (no native kernel here)"
    return step, note


def make_peer(W, h0, softcap, which: str):
    if W.device.type != "cuda":
        raise Skip(f"{which} is a CUDA (Triton) kernel")
    try:
        if which == "cce":
            from cut_cross_entropy import linear_cross_entropy

            def ce(p, tok):
                kw = {"softcap": softcap} if softcap else {}
                return linear_cross_entropy(p, W, tok, reduction="sum", **kw)

        else:
            from liger_kernel.transformers.fused_linear_cross_entropy import (
                LigerFusedLinearCrossEntropyLoss,
            )

            kw = {"softcap": softcap} if softcap else {}
            loss_mod = LigerFusedLinearCrossEntropyLoss(reduction="sum", **kw)

            def ce(p, tok):
                out = loss_mod(W, p, tok)
                return out[0] if isinstance(out, tuple) else out

    except Exception as exc:  # ImportError, or a broken install
        raise Skip(f"{which} not importable ({type(exc).__name__}: {exc})") from None
    p = torch.nn.Parameter(h0.clone())
    opt, fused = _adam([p], LR, W.device, fused=True)
    state = {"tok": _redecode(h0, W)}

    def step():
        opt.zero_grad(set_to_none=True)
        # -r * sum log pi[tok] = r * sum CE(tok)
        (REWARD * ce(p, state["tok"])).backward()
        opt.step()
        with torch.no_grad():
            state["tok"] = _redecode(p.detach(), W)
        return state["tok"]

    return step, "" if fused else "torch.optim.Adam default (fused unsupported)"


def make_step(provider, W, h0, softcap, adam_impl, compile_dynamic: bool | None = None):
    if provider in ("reference", "compile"):
        return make_reference(W, h0, softcap, compiled=provider == "compile", dynamic=compile_dynamic)
    if provider in ("torch", "triton"):
        return make_fused(W, h0, softcap, provider, adam_impl)
    return make_peer(W, h0, softcap, provider)


def _inputs(shape: S.HeadShape, n: int, dtype, device, seed: int):
    g = torch.Generator(device=device).manual_seed(seed)
    # Rows of W ~ N(0, 1/d) and latents ~ N(0, 2^2): logits with a standard deviation of ~2.
    W = torch.randn(shape.V, shape.d, generator=g, device=device, dtype=torch.float32)
    W = W.mul_(1.0 / math.sqrt(shape.d)).to(dtype)
    h0 = (2.0 * torch.randn(n, shape.d, generator=g, device=device, dtype=torch.float32)).to(dtype)
    return W, h0


def bench_one(provider, shape, n, dtype, device, args, peaks, ref) -> dict:
    """One row; ``ref`` holds the reference's tokens/time/memory for this shape once measured."""
    row = dict.fromkeys(COLUMNS, "")
    row |= {
        "provider": provider,
        "model": shape.name,
        "N": n,
        "V": shape.V,
        "d": shape.d,
        "dtype": str(dtype).removeprefix("torch."),
        "device": device.type,
        "softcap": shape.softcap or "",
        "status": "ok",
    }
    W, h0 = _inputs(shape, n, dtype, device, args.seed)
    try:
        t0 = time.perf_counter()
        step, note = make_step(provider, W, h0, shape.softcap, args.adam_impl, args.compile_dynamic)
        first = step()  # the warm-up (and the compile for ``compile``) starts here
        if device.type == "cuda":
            torch.cuda.synchronize()
        row["compile_s"] = time.perf_counter() - t0 if provider == "compile" else ""
        warm = max(args.warmup - 1, 1 if provider == "compile" else 0)
        t = time_fn(step, warmup=warm, repeats=args.repeats, device=device)
        gc.collect()
        mem = peak_memory(step, device=device)
    except Skip as exc:
        row["status"] = f"skipped: {exc}"
        return row
    except Exception as exc:  # a provider failing here (e.g. torch.compile without a C compiler) is a result
        row["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return row
    row["note"] = note
    row.update({k: t[k] for k in ("median_s", "min_s", "max_s", "iqr_s", "runs")})
    row["peak_mem_mb"] = mem / 2**20
    products, passes = WORK[provider]
    nvd = n * shape.V * shape.d
    row["useful_flops"] = 2 * USEFUL_PRODUCTS * nvd
    row["achieved_flops"] = 2 * products * nvd
    row["w_passes"] = passes
    row["hbm_bytes"] = W.element_size() * shape.V * shape.d * passes
    rates = roofline(
        t["median_s"], row["useful_flops"], row["hbm_bytes"], peaks, achieved_flops=row["achieved_flops"]
    )
    row.update(rates)
    if provider == "reference":
        ref.update(tokens=first.detach().cpu(), s=t["median_s"], mem=mem)
    if ref:
        row["speedup"] = ref["s"] / t["median_s"]
        row["mem_ratio"] = mem / ref["mem"] if ref["mem"] else ""
        row["agree"] = float((first.detach().cpu() == ref["tokens"]).float().mean())
    return row


# Every row has every column (rows are appended one by one as they are measured).
COLUMNS = [
    "provider", "model", "N", "V", "d", "dtype", "device", "softcap", "status", "note", "compile_s",
    "median_s", "min_s", "max_s", "iqr_s", "runs", "peak_mem_mb", "speedup", "mem_ratio",
    "useful_flops", "achieved_flops", "w_passes", "hbm_bytes", "useful_tflops", "achieved_tflops",
    "gbps", "pct_peak_flops", "pct_peak_bw", "agree",
    "peak_gemm_tflops", "peak_copy_gbps", "peak_gemm_dtype", "peak_gemm_n", "peak_copy_mib",
]  # fmt: skip

TABLE = STEP_COLUMNS


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), help="default: fp32 on cpu, bf16 on cuda")
    ap.add_argument("--n", type=int, nargs="+", help="latent rows (default: 64 300 cpu, 16 64 300 cuda)")
    ap.add_argument(
        "--models",
        nargs="+",
        help=f"heads: {', '.join(S.MODELS)} or VxD (default: smollm2 qwen2.5-0.5b on cpu; "
        "the V x d grid of shapes.GPU_V x shapes.GPU_D on cuda)",
    )
    ap.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    ap.add_argument("--repeats", type=int, help="timed runs (default: 5 on cpu, 20 on cuda)")
    ap.add_argument("--warmup", type=int, help="warm-up runs (default: 1 on cpu, 3 on cuda)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--adam-impl", default="auto", choices=("auto", "native", "torch"))
    ap.add_argument(
        "--compile-dynamic",
        choices=("auto", "yes", "no"),
        default="auto",
        help="torch.compile(dynamic=...): auto = yes on cuda (one compile for the whole grid), "
        "torch's automatic choice on cpu",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-peaks", action="store_true", help="skip measuring the GEMM/copy ceilings")
    ap.add_argument("--out", default="step", help="CSV name under bench/results/, or a path to a .csv")
    ap.add_argument(
        "--time-budget",
        type=float,
        help="seconds: start no new shape after this (rows so far are already written)",
    )
    args = ap.parse_args(argv)
    started = time.perf_counter()

    device = bench_device(ap, args.device, args.threads)
    cuda = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("bf16" if cuda else "fp32")]
    ns = args.n or (S.GPU_N if cuda else S.CPU_N)
    if args.models:
        heads = S.resolve(args.models)
    elif cuda:
        heads = [S.grid_shape(V, d) for V in S.GPU_V for d in S.GPU_D]
        heads.sort(key=lambda h: h.model == "synthetic")  # real models' heads first (time budget)
    else:
        heads = S.resolve(S.CPU_MODELS)
    args.repeats = args.repeats or (20 if cuda else 5)
    args.warmup = args.warmup or (3 if cuda else 1)
    args.compile_dynamic = {"yes": True, "no": False, "auto": True if cuda else None}[args.compile_dynamic]
    if "compile" in args.providers:
        import torch._dynamo.config as dcfg

        # Many shapes in one process: let dynamo keep a graph per shape rather than fall back.
        for knob in ("recompile_limit", "cache_size_limit"):
            if hasattr(dcfg, knob):
                setattr(dcfg, knob, 256)

    peaks = None if args.no_peaks else measure_peaks(device, dtype)
    if peaks:
        print(
            f"ceilings on {device.type}: {peaks['peak_gemm_tflops']:.3g} TFLOP/s "
            f"({peaks['peak_gemm_dtype']} GEMM n={peaks['peak_gemm_n']}), "
            f"{peaks['peak_copy_gbps']:.4g} GB/s copy",
            flush=True,
        )
    order = sorted(args.providers, key=PROVIDERS.index)  # the reference first: the others compare to it
    rows = []
    path = None
    configs = [(shape, n) for shape in heads for n in ns]
    for i, (shape, n) in enumerate(configs):
        if args.time_budget and time.perf_counter() - started > args.time_budget:
            print(f"time budget of {args.time_budget:g} s spent: {len(configs) - i} shape(s) not run")
            break
        ref: dict = {}
        for provider in order:
            row = bench_one(provider, shape, n, dtype, device, args, peaks, ref)
            if peaks:
                row.update(peaks)
            rows.append(row)
            path = write_rows(args.out, [row])
            print(
                f"{provider:>9} {shape.name:>14} N={n:<4} "
                + (f"{row['median_s'] * 1e3:9.2f} ms" if row["status"] == "ok" else row["status"]),
                flush=True,
            )
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
    print()
    print(markdown_table(rows, TABLE))
    print(f"rows appended to {path}")
    return rows


if __name__ == "__main__":
    main()
