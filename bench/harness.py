"""The one benchmark harness: timing, peak memory, environment stamp and CSV rows.

- Timing: warm-up runs, then ``repeats`` timed runs; median, min, max and the inter-quartile
  range. On CUDA, CUDA events around each run (synchronised once per run).
- Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. On
  CPU torch allocates through malloc/mmap, which ``tracemalloc`` cannot see, so the process's
  resident-set high-water mark is used: writing ``5`` to ``/proc/self/clear_refs`` resets
  ``VmHWM`` to the current RSS, and ``VmHWM - VmRSS(before)`` after the run is the extra memory
  the run really touched (pages only reserved and never written do not count).
- Every CSV row carries the machine, the torch/triton/transformers versions and the git commit.
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


def peak_memory(fn, *, device=None) -> int:
    """Extra bytes at the peak of one ``fn()`` call, above what was allocated before it."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status()["VmRSS"]
    fn()
    return max(0, _status()["VmHWM"] - before)


def write_rows(name: str, rows: list[dict]) -> Path:
    """Append ``rows`` (each stamped with ``env_info()``) to ``bench/results/<name>.csv``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.csv"
    stamp = env_info()
    rows = [{**r, **stamp} for r in rows]
    fields = list(rows[0].keys())
    new = not path.exists()
    if not new:
        with open(path, newline="") as f:
            old_fields = next(csv.reader(f), None)
        if old_fields != fields:  # a changed schema starts a fresh file rather than a ragged one
            path.rename(path.with_suffix(f".{int(time.time())}.old.csv"))
            new = True
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerows(rows)
    return path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A small markdown table of ``columns`` (floats to 4 significant digits)."""

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |\n" for r in rows)
