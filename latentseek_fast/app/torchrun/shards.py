"""Sharding the problems over the ranks, the rank files, and rank 0's merge of them.

This module names the shard files (``<out>.rank<R>-of-<W>``), finds them, says which problems
are finished and which are this rank's, and merges the shards into ``<out>``; the results module
(``app/results.py``) reads, writes and merges the files themselves.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

from ..results import ResultsError, check_fingerprints, check_settings, fsync_dir, merge, read_results


def shard(indices: Sequence[int], rank: int, world_size: int, done: Iterable[int] = ()) -> list[int]:
    """Rank ``rank``'s share of the problems ``indices`` that are not ``done``.

    Round-robin over the remaining indices in their given order: every remaining index goes to
    exactly one rank, the shares differ in size by at most one, and the result depends only on
    (``indices``, ``done``, ``rank``, ``world_size``), so a resume with any world size shards
    exactly what is left.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank}, world_size={world_size}: expected 0 <= rank < world_size")
    seen: set[int] = set()
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise ValueError(f"problem index {i!r}: expected an integer >= 0")
        if i in seen:
            raise ValueError(f"problem index {i} is listed twice")
        seen.add(i)
    done = set(done)
    remaining = [i for i in indices if i not in done]
    return remaining[rank::world_size]


def shard_path(out: str | os.PathLike, rank: int, world_size: int) -> str:
    """Rank ``rank`` of ``world_size``'s shard file: ``<out>.rank<rank>-of-<world_size>``."""
    return f"{os.fspath(out)}.rank{rank}-of-{world_size}"


def find_shards(out: str | os.PathLike) -> list[str]:
    """The shard files of ``out`` on disk, of any world size, ordered by (world size, rank)."""
    out = os.fspath(out)
    folder = os.path.dirname(out) or "."
    pattern = re.compile(re.escape(os.path.basename(out)) + r"\.rank(\d+)-of-(\d+)")
    found = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    for name in names:
        m = pattern.fullmatch(name)
        if m:
            found.append(((int(m[2]), int(m[1])), os.path.join(os.path.dirname(out), name)))
    return [p for _, p in sorted(found)]


def check_files(
    files: Sequence[str],
    fingerprints: Sequence[str] | None = None,
    settings: dict | None = None,
    allow_mixed_settings: bool = False,
) -> list[dict]:
    """The rows of ``files``, each checked to belong to this run: a row's ``fingerprint`` must
    match ``fingerprints[index]`` (when given), and all rows' ``settings`` must equal
    ``settings`` (when None, one another) unless ``allow_mixed_settings``. Rows without a
    fingerprint or settings (files written before rows had them) pass. Reads only."""
    rows: list[dict] = []
    ours = "this run"
    for p in files:
        part = read_results(p)
        if fingerprints is not None:
            check_fingerprints(part, fingerprints, p)
        if not allow_mixed_settings:
            settings, ours = check_settings(part, settings, p, ours)
        rows.extend(part)
    return rows


def finished_rows(
    out: str,
    resume: bool,
    fingerprints: Sequence[str] | None = None,
    settings: dict | None = None,
    allow_mixed_settings: bool = False,
) -> list[dict]:
    """The rows already written for ``out`` (its own and its shards', checked by
    :func:`check_files`); without ``resume`` any existing file is an error."""
    files = [p for p in [out, *find_shards(out)] if os.path.lexists(p)]
    if not resume:
        if files:
            raise ResultsError(
                f"{files[0]} exists: pass --resume to continue that run, or choose another --out"
            )
        return []
    return check_files(files, fingerprints, settings, allow_mixed_settings)


def merge_shards(
    out: str | os.PathLike,
    expected: Iterable[int] = (),
    *,
    fingerprints: Sequence[str] | None = None,
    settings: dict | None = None,
    allow_mixed_settings: bool = False,
) -> list[dict]:
    """Merge ``out`` (if it exists) and all its shard files into ``out``, sorted by index.

    Every file is first checked by :func:`check_files` (fingerprints against ``fingerprints``,
    the problems' by index, when given; settings equal to ``settings``, or to one another,
    unless ``allow_mixed_settings``): a mismatch is a ``ResultsError`` and nothing is written.
    The merged file is written aside and checked to hold every index in ``expected`` before it
    replaces ``out``; only then are the shards removed. A crash at any point leaves every row
    in ``out`` or a shard, and merging again gives the same file.
    """
    out = os.fspath(out)
    shards = find_shards(out)
    sources = ([out] if os.path.exists(out) else []) + shards
    check_files(sources, fingerprints, settings, allow_mixed_settings)
    tmp = f"{out}.merging"
    if os.path.lexists(tmp):  # left by a merge that was killed before it replaced ``out``
        os.unlink(tmp)
    rows = merge(sources, tmp)
    missing = sorted(set(expected) - {r["index"] for r in rows})
    if missing:
        os.unlink(tmp)
        raise ResultsError(
            f"rows of problems {missing[:10]}{' ...' if len(missing) > 10 else ''} were reported "
            f"written but are in no file rank 0 can read ({', '.join(sources) or 'none found'}); "
            f"on several nodes --out must be on a file system that every node shares"
        )
    os.replace(tmp, out)
    fsync_dir(out)
    for p in shards:
        os.unlink(p)
    return rows
