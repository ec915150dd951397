"""STAND-IN for ``latentseek_fast.results`` - DELETE once the real module is merged.

``dist.py`` and ``report.py`` use only this part of the results module's interface:
``ResultsError`` (a ``ValueError``), ``read_results(path) -> list[dict]`` (missing file: []),
``ResultsWriter(path, resume=bool)`` (a context manager with ``append(row)``, ``close(failed=)``,
``rows`` and ``done``; ``resume=False`` refuses an existing file), ``merge(paths, out) -> rows``
(``out`` must not exist; sorted by index; equal duplicates kept once), ``unique_rows(rows)`` and
``summarize(rows)``. This minimal version (no locks, no row checks) lets the tests run before
the merge; :func:`install` puts it in place only when the real module cannot be imported.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types


class ResultsError(ValueError):
    pass


def read_results(path) -> list[dict]:
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # a torn last line
            rows.append(json.loads(line))
    return rows


class ResultsWriter:
    def __init__(self, path, *, resume: bool = False):
        self.path = os.fspath(path)
        if not resume and os.path.exists(self.path):
            raise ResultsError(f"{self.path} exists")
        self.rows = read_results(self.path)
        if os.path.exists(self.path):  # drop a torn tail
            with open(self.path, "rb+") as f:
                f.truncate(f.read().rfind(b"\n") + 1)
        self.done = {r["index"] for r in self.rows}
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, row: dict) -> None:
        if row["index"] in self.done:
            raise ResultsError(f"{self.path}: index {row['index']} already has a row")
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.rows.append(row)
        self.done.add(row["index"])

    def close(self, *, failed: bool = False) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(failed=exc[0] is not None)


def unique_rows(rows) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for r in rows:
        out.setdefault(r["index"], r)
    return out


def merge(paths, out) -> list[dict]:
    if os.path.exists(out):
        raise ResultsError(f"{out} exists")
    merged: dict[int, dict] = {}
    for p in paths:
        for r in read_results(p):
            if merged.setdefault(r["index"], r) != r:
                raise ResultsError(f"index {r['index']}: different rows")
    rows = [merged[i] for i in sorted(merged)]
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def summarize(rows, indices=None) -> dict:
    rs = list(unique_rows(rows).values())
    if indices is not None:
        rs = [r for r in rs if r["index"] in set(indices)]
    if not rs:
        return {"problems": 0}
    mean = lambda k: sum(r[k] for r in rs) / len(rs)
    return {
        "problems": len(rs),
        "original_accuracy": mean("original_correct"),
        "optimized_accuracy": mean("correct"),
        "mean_iterations": mean("iterations"),
        "mean_original_length": mean("original_length"),
        "mean_optimized_length": mean("final_length"),
    }


def install() -> None:
    """Register this module as ``latentseek_fast.results`` unless the real one exists."""
    try:
        importlib.import_module("latentseek_fast.results")
    except ImportError:
        import latentseek_fast

        mod = types.ModuleType("latentseek_fast.results")
        mod.__dict__.update({k: v for k, v in globals().items() if not k.startswith("__")})
        sys.modules["latentseek_fast.results"] = mod
        latentseek_fast.results = mod
