"""The one benchmark harness: timing, peak memory, environment stamp and CSV rows.

- Timing: warm-up runs, then ``repeats`` timed runs; median, min, max and the inter-quartile
  range. On CUDA, CUDA events around each run (synchronised once per run).
- Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. On
  CPU torch allocates through malloc/mmap, which ``tracemalloc`` cannot see, so the process's
  resident-set high-water mark is used: writing ``5`` to ``/proc/self/clear_refs`` resets
  ``VmHWM`` to the current RSS, and ``VmHWM - VmRSS(before)`` after the run is the extra memory
  the run really touched (pages only reserved and never written do not count). glibc keeps freed
  blocks below its (self-raising) mmap threshold resident and reuses them without a new page, so a
  second run would look free; so ``peak_memory`` on CPU first fixes that threshold at 128 KiB
  (``pin_malloc``: every larger block is then its own mapping, returned to the system on free)
  and hands the heaps' free pages back (``malloc_trim(0)``) before resetting ``VmHWM``.
- Every CSV row carries the machine, the torch/triton/transformers versions, the git commit and
  the run's start time (``run``: the rows of one invocation share it).
- Ceilings: ``measure_peaks`` times one large matrix product and one large copy on the device
  (measured ceilings, not datasheet ones: bench/README.md, "Roofline columns") and
  ``roofline`` turns a row's FLOPs and bytes into TFLOP/s, GB/s and percentages of those
  ceilings.
"""

from __future__ import annotations

import csv
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
_RUN = time.strftime("%Y-%m-%dT%H:%M:%S")


def _git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(mod: str) -> str:
    try:
        return __import__(mod).__version__
    except Exception:
        return "absent"


def env_info() -> dict:
    """The stamp every row carries."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return {
        "machine": gpu or f"{_cpu_name()} x{os.cpu_count()}",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "commit": _git_commit(),
        "run": _RUN,
    }


def _sync(device) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_fn(fn, *, warmup: int = 1, repeats: int = 5, device=None) -> dict:
    """Seconds per call of ``fn()``: median, min, max, iqr and the raw runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    runs = []
    cuda = device is not None and torch.device(device).type == "cuda"
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            runs.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
    q = statistics.quantiles(runs, n=4) if len(runs) >= 2 else [runs[0]] * 3
    return {
        "median_s": statistics.median(runs),
        "min_s": min(runs),
        "max_s": max(runs),
        "iqr_s": q[2] - q[0],
        "runs": len(runs),
    }


def _status() -> dict:
    text = open("/proc/self/status").read()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


_pinned = False


def pin_malloc(threshold: int = 128 * 1024) -> bool:
    """Fix glibc's mmap and trim thresholds (no-op, returning False, where there is no glibc).

    ``mallopt(M_MMAP_THRESHOLD)`` also turns off glibc's dynamic raising of that threshold,
    which otherwise lets a freed 30 MB block stay in the heap and hide from ``VmHWM``.
    """
    global _pinned
    if _pinned:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, threshold) == 1 and libc.mallopt(m_trim_threshold, threshold) == 1
    except (OSError, AttributeError):
        return False
    _pinned = ok
    return ok


def _trim() -> None:
    """Return free heap pages to the system (glibc ``malloc_trim(0)``), so reusing them counts."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory(fn, *, device=None) -> int:
    """Extra bytes at the peak of one ``fn()`` call, above what was allocated before it."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    pin_malloc()
    _trim()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status()["VmRSS"]
    fn()
    return max(0, _status()["VmHWM"] - before)


def results_path(name: str, results_dir: str | Path | None = None) -> Path:
    """Where ``write_rows(name)`` writes: ``name`` itself when it is a path (has a ``/`` or ends
    in ``.csv``), else ``<results_dir or bench/results>/<name>.csv``."""
    if "/" in name or name.endswith(".csv"):
        path = Path(name)
        return path if path.suffix == ".csv" else path.with_suffix(".csv")
    return Path(results_dir or RESULTS) / f"{name}.csv"


def write_rows(name: str, rows: list[dict], results_dir: str | Path | None = None) -> Path:
    """Append ``rows`` (each stamped with ``env_info()``) to ``bench/results/<name>.csv``.

    ``name`` may also be a path to a CSV file (see ``results_path``). The columns are the union
    of the rows' keys in first-seen order (rows that lack one leave it empty).
    """
    path = results_path(name, results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = env_info()
    rows = [{**r, **stamp} for r in rows]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    new = not path.exists()
    if not new:
        with open(path, newline="") as f:
            old_fields = next(csv.reader(f), None)
        if old_fields != fields:  # a changed schema starts a fresh file rather than a ragged one
            path.rename(path.with_suffix(f".{int(time.time())}.old.csv"))
            new = True
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        if new:
            w.writeheader()
        w.writerows(rows)
    return path


def measure_peaks(
    device="cpu",
    dtype=torch.float32,
    *,
    gemm_n: int | None = None,
    copy_mib: int | None = None,
    repeats: int | None = None,
) -> dict:
    """Measured ceilings of this device: a matrix product's TFLOP/s and a copy's GB/s.

    - GEMM: ``gemm_n``-cubed product of random ``dtype`` matrices (2 n^3 FLOPs), median of
      ``repeats`` after a warm-up (random data: a GPU's product of zeros draws less power and
      runs faster; bench/README.md).
    - Copy: ``dst.copy_(src)`` of ``copy_mib`` MiB, counting bytes read plus bytes written.
    Defaults: 8192 / 2048 MiB / 10 on CUDA, 1536 / 256 MiB / 3 on CPU (a few seconds on 2 cores).
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    n = gemm_n or (8192 if cuda else 1536)
    mib = copy_mib or (2048 if cuda else 256)
    reps = repeats or (10 if cuda else 3)
    g = torch.Generator(device=dev).manual_seed(0)
    warm = 2 if cuda else 1

    def gemm_seconds() -> float:
        a = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
        b = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
        return time_fn(lambda: torch.mm(a, b), warmup=warm, repeats=reps, device=dev)["median_s"]

    def copy_seconds() -> float:
        src = torch.randn(mib * 2**18, device=dev, dtype=torch.float32, generator=g)
        dst = torch.empty_like(src)
        return time_fn(lambda: dst.copy_(src), warmup=warm, repeats=reps, device=dev)["median_s"]

    gemm_s = gemm_seconds()
    copy_s = copy_seconds()
    nbytes = 2 * mib * 2**20  # read + written
    return {
        "peak_gemm_tflops": 2 * n**3 / gemm_s / 1e12,
        "peak_copy_gbps": nbytes / copy_s / 1e9,
        "peak_gemm_dtype": str(dtype).removeprefix("torch."),
        "peak_gemm_n": n,
        "peak_copy_mib": mib,
    }


def roofline(
    seconds: float, flops: float, nbytes: float, peaks: dict | None, *, achieved_flops: float | None = None
) -> dict:
    """TFLOP/s and GB/s of a run and their share of the measured ceilings.

    ``flops`` is the useful work; ``achieved_flops`` (default ``flops``) what the provider
    really computes (recomputed products included). Percentages use the achieved rate.
    """
    achieved = flops if achieved_flops is None else achieved_flops
    out = {
        "useful_tflops": flops / seconds / 1e12,
        "achieved_tflops": achieved / seconds / 1e12,
        "gbps": nbytes / seconds / 1e9,
    }
    if peaks:
        out["pct_peak_flops"] = 100.0 * out["achieved_tflops"] / peaks["peak_gemm_tflops"]
        out["pct_peak_bw"] = 100.0 * out["gbps"] / peaks["peak_copy_gbps"]
    return out


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A small markdown table of ``columns`` (floats to 4 significant digits)."""

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |\n" for r in rows)


def check_at_least(parser, args, minimums: dict[str, int]) -> None:
    """A parser error naming the option and its value for the first ``args.<name>`` below
    ``minimums[name]`` (``max_steps`` is ``--max-steps``)."""
    for name, lo in minimums.items():
        v = getattr(args, name)
        if v < lo:
            parser.error(f"--{name.replace('_', '-')} {v}: expected an integer >= {lo}")


def bench_device(parser, device: str, threads: int | None) -> torch.device:
    """The ``torch.device`` for a bench's ``--device``/``--threads`` (a parser error without CUDA)."""
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    if threads:
        torch.set_num_threads(threads)
    return torch.device(device)


# The step bench's tabulated columns (printed by bench_step.py, summarised by plot.py).
STEP_COLUMNS = [
    "provider",
    "model",
    "N",
    "V",
    "d",
    "dtype",
    "median_s",
    "iqr_s",
    "peak_mem_mb",
    "speedup",
    "mem_ratio",
    "useful_tflops",
    "achieved_tflops",
    "gbps",
    "pct_peak_flops",
    "pct_peak_bw",
    "agree",
    "status",
]

# The GPU seek bench's tabulated columns (printed by bench_seek_gpu.py, summarised by plot.py).
SEEK_GPU_COLUMNS = [
    "backend",
    "T",
    "L",
    "iterations",
    "generate_s",
    "latent_s_per_iter",
    "latent_speedup",
    "decode_s_per_iter",
    "iteration_s",
    "latent_share",
    "wall_s",
    "same_answer_as_reference",
]
