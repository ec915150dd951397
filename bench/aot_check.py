"""Compile every Triton kernel variant ``latent_policy_grad`` can launch, for sm_90 and sm_80, on a CPU.

No GPU is needed: each variant's launch is built by the launchers themselves
(``fwd_launch`` / ``grad_launch``) on meta tensors of a real LM head (V = 152064, d = 3584),
specialised exactly as triton's launcher would (its own binder), and compiled with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` and triton's bundled
ptxas. The cubin is then read with triton's bundled ``cuobjdump``:

- registers, stack and local memory per thread (``--dump-resource-usage``);
- spill instructions: local-memory stores and loads (``STL`` / ``LDL``) in the SASS;
- shared memory per block (triton's ``metadata.shared``, the launch's dynamic shared memory);
- the instruction mix: tensor-core instructions in the PTX (``wgmma.mma_async`` on sm_90,
  ``mma.sync`` on sm_80) and the SASS (``HGMMA`` / ``HMMA``), and global atomics (pass 2).

Variants: both passes x fp32/fp16/bf16 x bias on/off x soft-cap on/off x greedy/sample/teacher
(pass 1) x the block configurations ``default_blocks`` picks for small and large N (N = 16 and
300: BLOCK_M 16 and 64; the rest follows from the dtype), for each architecture, plus the
heaviest variants at N = 32 (BLOCK_M 32). ``--subset ci`` is a covering
subset (every switch, dtype, mode, block configuration and architecture at least once) for the
test suite; ``--subset tune`` adds the non-default bf16 configurations that
``bench/autotune.py`` times on a GPU.

Exit status 1 on a compile error, on a spill in a default configuration, on shared memory above
the architecture's per-block limit, or on a 16-bit variant without tensor-core instructions.
Rows go to ``bench/results/aot.csv``, replacing the rows of the same variants and triton version
(the rows of other versions, and of variants not run, are kept).

    python bench/aot_check.py                      # full set, both architectures
    python bench/aot_check.py --subset ci --out /tmp/aot.csv
    python bench/aot_check.py --subset full --dtype float32    # the fp32 default variants only
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "aot.csv"

# Largest shared memory one block may use (dynamic, after the cudaFuncSetAttribute opt-in that
# triton's launcher makes), in bytes. CUDA's tuning guides: "Tuning CUDA Applications for NVIDIA
# Hopper GPU Architecture" (H100: 228 KB per SM, up to 227 KB per thread block) and "... for
# NVIDIA Ampere GPU Architecture" (A100: 164 KB per SM, up to 163 KB per thread block); the
# missing 1 KB per block is reserved by CUDA.
SHARED_LIMIT = {90: 227 * 1024, 80: 163 * 1024}
# Multiprocessors of the parts the V split is sized for (H100/H200 SXM: 132, A100: 108).
SMS = {90: 132, 80: 108}
V, D = 152064, 3584  # Qwen2.5-7B's LM head (bench/shapes.py)
N_CASES = (16, 32, 300)  # default_blocks -> BLOCK_M 16, 32, 64
DTYPES = ("float32", "float16", "bfloat16")
MODES = ("greedy", "sample", "teacher")
# Non-default (BLOCK_M, BLOCK_N, BLOCK_K, num_warps) for bf16 on sm_90: the autotune's candidates.
TUNE_BLOCKS = (
    (16, 256, 64, 4),
    (32, 256, 64, 4),
    (64, 256, 64, 8),
    (64, 128, 128, 4),
    (64, 128, 64, 8),
    (64, 64, 128, 4),
    (128, 128, 64, 8),
    (128, 64, 64, 4),
)

COLUMNS = (
    "triton",
    "arch",
    "kernel",
    "dtype",
    "bias",
    "softcap",
    "mode",
    "n",
    "block_m",
    "block_n",
    "block_k",
    "num_warps",
    "num_stages",
    "default",
    "regs",
    "spill_insts",
    "local_bytes",
    "stack_bytes",
    "shared_bytes",
    "shared_limit",
    "tensor_core",
    "mma_ptx",
    "mma_sass",
    "atomics_sass",
    "compile_s",
    "status",
)


def variant(kernel, arch, dtype, bias, softcap, mode, n, blocks=None):
    return dict(
        kernel=kernel, arch=arch, dtype=dtype, bias=bias, softcap=softcap, mode=mode, n=n, blocks=blocks
    )


def full_set(archs):
    """Every default variant for small and large N: both passes, all dtypes, switches and modes at
    N = 16 and N = 300 (BLOCK_M 16 and 64), plus the heaviest variants (bias, soft-cap, sampling)
    at N = 32 (BLOCK_M 32)."""
    out = []
    for arch, dtype, bias, softcap, n in itertools.product(archs, DTYPES, (0, 1), (0, 1), (16, 300)):
        for mode in MODES:
            out.append(variant("fwd", arch, dtype, bias, softcap, mode, n))
        out.append(variant("grad", arch, dtype, bias, softcap, "-", n))
    for arch, dtype in itertools.product(archs, DTYPES):
        out.append(variant("fwd", arch, dtype, 1, 1, "sample", 32))
        out.append(variant("grad", arch, dtype, 1, 1, "-", 32))
    return out


def ci_set(archs):
    """A covering subset: each dtype, switch value, mode, BLOCK_M and architecture at least once
    per pass, plus fp32 pass-1 sampling at 16 rows on sm_80, the variant nearest a spill (ptxas
    held 16 x 64 x 32 at 64 registers and spilled; bench/results/aot.csv) (8 compiles)."""
    a90, a80 = (90, 80) if len(archs) == 2 else (archs[0], archs[0])
    return [
        variant("fwd", a90, "bfloat16", 1, 1, "sample", 300),
        variant("fwd", a80, "float16", 0, 0, "teacher", 16),
        variant("fwd", a90, "float32", 1, 0, "greedy", 32),
        variant("fwd", a80, "float32", 0, 0, "sample", 16),
        variant("grad", a90, "bfloat16", 0, 1, "-", 16),
        variant("grad", a80, "bfloat16", 1, 0, "-", 300),
        variant("grad", a80, "float32", 0, 1, "-", 32),
        variant("grad", a90, "float16", 1, 1, "-", 300),
    ]


def tune_set():
    """bf16, sm_90, no bias or soft-cap: the autotune's non-default candidates for both passes."""
    return [
        variant(kernel, 90, "bfloat16", 0, 0, "greedy" if kernel == "fwd" else "-", blocks[0], blocks)
        for kernel in ("fwd", "grad")
        for blocks in TUNE_BLOCKS
    ]


def build_launch(v):
    """The launchers' own KernelLaunch for variant ``v``, on meta tensors (nothing is allocated)."""
    import torch
    from latentseek_fast.kernels.lpg_forward import fwd_launch
    from latentseek_fast.kernels.lpg_grad import grad_launch

    dtype = getattr(torch, v["dtype"])
    meta = dict(device="meta")
    n = v["n"]
    hidden = torch.empty(n, D, dtype=dtype, **meta)
    weight = torch.empty(V, D, dtype=dtype, **meta)
    bias = torch.empty(V, dtype=dtype, **meta) if v["bias"] else None
    softcap = 30.0 if v["softcap"] else None
    if v["kernel"] == "fwd":
        tokens = torch.empty(n, dtype=torch.int64, **meta) if v["mode"] == "teacher" else None
        mode = "sample" if v["mode"] == "sample" else "greedy"
        launch, _ = fwd_launch(
            hidden,
            weight,
            bias,
            tokens,
            softcap,
            0.7,
            mode,
            0xDEADBEEF,  # a key >= 2**31: passed as int32 all the same
            sms=SMS[v["arch"]],
            blocks=v["blocks"],
        )
    else:
        tokens = torch.empty(n, dtype=torch.int64, **meta)
        lse = torch.empty(n, dtype=torch.float32, **meta)
        r_t = torch.empty(n, dtype=torch.float32, **meta)
        launch, _ = grad_launch(hidden, weight, bias, tokens, lse, r_t, softcap, 0.7, blocks=v["blocks"])
    return launch


def compile_launch(launch, arch):
    """Compile ``launch`` for ``sm_<arch>`` as triton's launcher would, without a GPU."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.kernel
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    # The launcher's own binder: argument types and specialisation (16-byte divisibility, ints
    # equal to 1 as constants) come out exactly as at a real launch with these arguments.
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*launch.args, **launch.meta)
    options, signature, constexprs, attrs = fn._pack_args(
        backend, dict(launch.meta), bound_args, specialization, options
    )
    src = ASTSource(fn, signature, constexprs, attrs)
    return triton.compile(src, target=target, options=options.__dict__)


def _tool(name):
    from triton import knobs

    return getattr(knobs.nvidia, name).path


def inspect_cubin(cubin: bytes, workdir: str) -> dict:
    """Registers, stack, local memory, spill, tensor-core and atomic instructions of a cubin."""
    path = os.path.join(workdir, "k.cubin")
    with open(path, "wb") as f:
        f.write(cubin)
    cuobjdump = _tool("cuobjdump")
    res = subprocess.run(
        [cuobjdump, "--dump-resource-usage", path], capture_output=True, text=True, check=True
    )
    usage = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", res.stdout))
    sass = subprocess.run([cuobjdump, "--dump-sass", path], capture_output=True, text=True, check=True).stdout
    ops = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", sass)
    count = lambda *names: sum(1 for op in ops if op in names)  # noqa: E731
    return dict(
        regs=int(usage.get("REG", -1)),
        stack_bytes=int(usage.get("STACK", -1)),
        local_bytes=int(usage.get("LOCAL", -1)),
        spill_insts=count("STL", "LDL"),
        mma_sass=count("HGMMA", "HMMA"),
        atomics_sass=count("RED", "ATOM", "REDG", "ATOMG"),  # global; REDUX is a warp reduction
    )


def run_variant(v: dict) -> dict:
    """Compile and inspect one variant; never raises (errors land in ``status``)."""
    import triton

    row = {k: v[k] for k in ("arch", "kernel", "dtype", "bias", "softcap", "mode", "n")}
    row["triton"] = triton.__version__
    row["default"] = int(v["blocks"] is None)
    t0 = time.perf_counter()
    try:
        launch = build_launch(v)
        m = launch.meta
        row.update(block_m=m["BLOCK_M"], block_n=m["BLOCK_N"], block_k=m["BLOCK_K"], num_warps=m["num_warps"])
        ck = compile_launch(launch, v["arch"])
        row["compile_s"] = round(time.perf_counter() - t0, 2)
        row["num_stages"] = ck.metadata.num_stages
        row["shared_bytes"] = ck.metadata.shared
        ptx = ck.asm["ptx"]
        row["mma_ptx"] = len(re.findall(r"\bwgmma\.mma_async\b", ptx)) + len(
            re.findall(r"\bmma\.sync\b", ptx)
        )
        with tempfile.TemporaryDirectory() as tmp:
            row.update(inspect_cubin(ck.asm["cubin"], tmp))
        row["tensor_core"] = "yes" if row["mma_sass"] > 0 else "no"
        row["status"] = "ok"
    except Exception as exc:  # a compile error is a result here, reported in the table
        row["compile_s"] = round(time.perf_counter() - t0, 2)
        msg = " ".join(str(exc).split())[:300]
        row["status"] = f"compile error: {type(exc).__name__}: {msg}"
    row["shared_limit"] = SHARED_LIMIT[v["arch"]]
    return row


def verdict(row: dict) -> str | None:
    """Why ``row`` fails the check, or None."""
    if row["status"] != "ok":
        return row["status"]
    if row["default"] and (row["spill_insts"] > 0 or row["local_bytes"] > 0):
        return (
            f"spills in a default configuration ({row['spill_insts']} STL/LDL, {row['local_bytes']} B local)"
        )
    if row["shared_bytes"] > row["shared_limit"]:
        return f"shared memory {row['shared_bytes']} B > sm_{row['arch']} limit {row['shared_limit']} B"
    if row["dtype"] != "float32" and row["mma_sass"] == 0:
        return "a 16-bit variant without tensor-core instructions"
    return None


def _key(r) -> tuple:
    """A row's variant: a default row by its switches, a tune row by its blocks as well."""
    ident = tuple(str(r[k]) for k in ("triton", "arch", "kernel", "dtype", "bias", "softcap", "mode", "n"))
    if str(r["default"]) == "1":
        return ident + ("default",)
    return ident + tuple(str(r.get(k)) for k in ("block_m", "block_n", "block_k", "num_warps"))


def write_csv(rows, out: Path):
    """Write ``rows`` into ``out``, replacing the rows of the same variants and triton version
    and keeping all others (other versions, dtypes or subsets run separately)."""
    new = {_key(r) for r in rows}
    kept = []
    if out.exists():
        with open(out, newline="") as f:
            kept = [r for r in csv.DictReader(f) if _key(r) not in new]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in kept + rows:
            w.writerow(r)


def _progress(row, done, total, partial: Path):
    print(
        f"[{done}/{total}] sm_{row['arch']} {row['kernel']} {row['dtype']} b={row['bias']} "
        f"c={row['softcap']} {row['mode']} n={row['n']}: {verdict(row) or 'ok'} ({row['compile_s']} s)",
        flush=True,
    )
    new = not partial.exists()
    with open(partial, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


def _worker_init(cache_dir):
    os.environ["TRITON_CACHE_DIR"] = cache_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--subset",
        choices=("full", "ci", "tune", "all"),
        default="all",
        help="full: every default variant; ci: the covering subset; tune: the autotune "
        "candidates; all (default): full + tune",
    )
    ap.add_argument("--arch", type=int, nargs="+", default=[90, 80], choices=sorted(SHARED_LIMIT))
    ap.add_argument(
        "--dtype", nargs="+", default=list(DTYPES), choices=DTYPES, help="only variants of these dtypes"
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument(
        "--cache-dir",
        default=None,
        help="triton cache (default: a fresh temporary one, so every variant really compiles)",
    )
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("aot_check: unset TRITON_INTERPRET (the interpreter replaces the compiler)", file=sys.stderr)
        return 2
    variants = {
        "full": full_set(args.arch),
        "ci": ci_set(args.arch),
        "tune": tune_set() if 90 in args.arch else [],
        "all": full_set(args.arch) + (tune_set() if 90 in args.arch else []),
    }[args.subset]
    variants = [v for v in variants if v["dtype"] in args.dtype]
    with tempfile.TemporaryDirectory(prefix="aot-triton-cache-") as tmp_cache:
        cache = args.cache_dir or tmp_cache
        os.environ["TRITON_CACHE_DIR"] = cache
        t0 = time.perf_counter()
        rows = []
        # Rows are printed and saved (to OUT.partial) as they complete, so a run cut short keeps them.
        partial = args.out.with_name(args.out.name + ".partial")
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs, initializer=_worker_init, initargs=(cache,)) as pool:
                for row in pool.map(run_variant, variants):
                    rows.append(row)
                    _progress(row, len(rows), len(variants), partial)
        else:
            for v in variants:
                rows.append(run_variant(v))
                _progress(rows[-1], len(rows), len(variants), partial)
        wall = time.perf_counter() - t0
    failures = []
    head = f"{'arch':>5} {'kernel':6} {'dtype':9} {'b':1} {'c':1} {'mode':8} {'blocks':14} {'regs':>4} "
    print(head + f"{'spill':>5} {'smem':>7} {'mma':>4} {'atom':>4} {'s':>5}  status")
    for r in rows:
        why = verdict(r)
        blocks = f"{r.get('block_m')}x{r.get('block_n')}x{r.get('block_k')}/{r.get('num_warps')}"
        tag = "" if r["default"] else " (tune)"
        print(
            f"sm_{r['arch']:<3} {r['kernel']:6} {r['dtype']:9} {r['bias']:1} {r['softcap']:1} {r['mode']:8} "
            f"{blocks:14} {r.get('regs', ''):>4} {r.get('spill_insts', ''):>5} "
            f"{r.get('shared_bytes', ''):>7} "
            f"{r.get('mma_sass', ''):>4} {r.get('atomics_sass', ''):>4} {r['compile_s']:>5}  "
            f"{'FAIL: ' + why if why else 'ok'}{tag}"
        )
        if why:
            failures.append(why)
    write_csv(rows, args.out)
    partial.unlink(missing_ok=True)
    import triton

    print(
        f"aot_check: triton {triton.__version__}, {len(rows)} variants in {wall:.0f} s, "
        f"{len(failures)} failed; rows in {args.out}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
