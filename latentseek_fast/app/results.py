"""Results files and their rows: the one module that says what a row holds, and that reads,
checks, locks, appends and merges the files.

A results file is JSONL: one JSON object per problem, each line ending in ``\\n``. Every row
carries the problem's ``index`` in its data file (its first key) and the keys of ``ROW_KEYS``;
``eval`` writes ``eval_row``'s row (answers, predictions, rewards and timings besides).
Rows may come in any order (a batched engine finishes problems out of order, torchrun ranks
write shards); an index appears at most once in a file written here. The row schema, the file
format and its one writer are kept in this one module (about 440 lines) so that every rule about
a results file has one home.

What the module guarantees:

- A row, once ``append`` returns, is on disk: it is written with one ``write(2)``, then
  ``fsync``-ed.
- Nothing is silently dropped. Reading stops with :class:`ResultsError` naming the line number
  at any bad line (blank, not UTF-8, not JSON, not a row); the only exception is a torn last
  line, the bytes after the last newline that a killed write leaves. A torn line that is still
  a whole row is kept (its newline is added); one that is the start of a row is dropped and that
  problem is run again. A UTF-8 byte-order mark that starts the file (Windows tools write one)
  is skipped; one anywhere else is a bad line.
- One writer per file. :class:`ResultsWriter` holds an exclusive ``fcntl.flock`` on the file
  itself for its lifetime; a second writer (another process, or another open in this one) gets
  a ``ResultsError`` at once. The file is never replaced, so every writer sees the same inode.
  (``flock`` is advisory and local: it does not protect against other programs or NFS clients.)
- Nothing is rewritten until the file is known to be a results file: every complete line is
  parsed and checked before the only in-place change, truncating a torn tail under the lock.
- Summaries count each problem once (the first row of an index, should an old file hold two).
- A file holds one run. ``eval`` rows carry their problem's ``fingerprint``
  (:func:`problem_fingerprint`) and the ``settings`` that change results;
  :func:`check_fingerprints` and :func:`check_settings` refuse rows of another data file or of
  other settings (a resume, a merge). Rows without them (files written before) pass unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable

from ..audit import fragile
from .extract import extract_answer
from .judge import judge_reply

try:
    import fcntl
except ImportError:  # not POSIX: no flock
    fcntl = None

__all__ = [
    "ROW_KEYS",
    "ResultsError",
    "ResultsWriter",
    "check_fingerprints",
    "check_row",
    "check_settings",
    "eval_row",
    "format_summary",
    "merge",
    "problem_fingerprint",
    "read_results",
    "summarize",
    "unique_rows",
]

#: Keys every results row must carry, with their types; the summary is computed from them.
ROW_KEYS: dict[str, tuple[type, ...]] = {
    "index": (int,),
    "id": (str,),
    "original_correct": (bool,),
    "correct": (bool,),
    "iterations": (int,),
    "original_length": (int,),
    "final_length": (int,),
}
# How every row written here starts (``index`` is always its first key): a torn last line
# must begin with (a prefix of) this to be recognised as an interrupted write of ours.
_ROW_START = b'{"index": '
_BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark


class ResultsError(ValueError):
    """A results file that cannot be used as asked; the message names the file and the line."""


def check_row(row, where: str = "row") -> dict:
    """Return ``row`` if it is a results row, else raise ``ResultsError`` naming ``where``."""
    if not isinstance(row, dict):
        raise ResultsError(f"{where}: a {type(row).__name__}, not a JSON object; not a results row")
    missing = [k for k in ROW_KEYS if k not in row]
    if missing:
        raise ResultsError(
            f"{where}: missing keys {missing}; not a results row (rows carry {list(ROW_KEYS)})"
        )
    for key, types in ROW_KEYS.items():
        v = row[key]
        bad = not isinstance(v, types) or (bool not in types and isinstance(v, bool))
        if bad or (types == (int,) and v < 0):
            want = "a bool" if types == (bool,) else "a string" if types == (str,) else "an integer >= 0"
            raise ResultsError(f"{where}: {key}={v!r}: expected {want}; not a results row")
    return row


def problem_fingerprint(question: str, gold: str | None) -> str:
    """A problem's fingerprint: the first 16 hex digits of the SHA-256 of the JSON text
    ``[question, gold]`` (ASCII escapes, no spaces), the same on every Python and platform.
    Rows carry it so that a resume or a merge can tell a row of another data file."""
    text = json.dumps([question, gold], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def check_fingerprints(rows: Iterable[dict], fingerprints, where: str, data: str = "the data file") -> None:
    """Every row with a ``fingerprint`` must match ``fingerprints[index]`` (the data's problems,
    by index); else ``ResultsError`` naming the first mismatch. Rows without one pass."""
    for r in rows:
        fp, i = r.get("fingerprint"), r["index"]
        if fp is None:
            continue
        if i >= len(fingerprints):
            there = f"{data} has no problem {i} (it has {len(fingerprints)})"
        elif fp != fingerprints[i]:
            there = f"{data} has fingerprint {fingerprints[i]} at index {i} (another question or gold answer)"
        else:
            continue
        raise ResultsError(
            f"{where}: the row for problem {i} (id {r['id']!r}) has fingerprint {fp} but {there}: "
            "it was written from another data file; resume with the data it was written from, "
            "or choose another --out"
        )


def _differences(a: dict, b: dict) -> list[str]:
    return [k for k in sorted(set(a) | set(b)) if a.get(k, "(absent)") != b.get(k, "(absent)")]


def check_settings(
    rows: Iterable[dict], settings: dict | None, where: str, ours: str = "this run"
) -> tuple[dict | None, str]:
    """Every row with ``settings`` must have ``settings`` (those of ``ours``; when None, of the
    first row that has some); else ``ResultsError`` naming each differing field with both
    values. Rows without settings pass. Returns ``(settings, ours)`` as compared against, so
    that several files can be checked against one another in turn."""
    for r in rows:
        theirs = r.get("settings")
        if theirs is None:
            continue
        if settings is None:
            settings, ours = theirs, f"the row for problem {r['index']} of {where}"
            continue
        diff = _differences(theirs, settings)
        if diff:
            named = "; ".join(
                f"{k}: {json.dumps(theirs.get(k))} in the row, {json.dumps(settings.get(k))} in {ours}"
                for k in diff
            )
            raise ResultsError(
                f"{where}: the row for problem {r['index']} was written with other settings ({named}); "
                "use the same settings, choose another --out, or pass --allow-mixed-settings "
                "(report then shows each settings group apart)"
            )
    return settings, ours


def eval_row(index: int, problem, result, *, style: str, reward: str, settings: dict | None = None) -> dict:
    """The results row ``eval`` writes for ``problem`` (row ``index`` of its data file) from its
    ``SeekResult``: answers, every iteration's prediction and correctness (``iter_preds`` and
    ``iter_correct``, aligned with ``rewards``; what ``report`` plots), the ``reward`` it was scored
    with (``psrm`` or ``self``), lengths, timings. ``style`` is the prompt style answers are read in.
    The problem's ``fingerprint`` and the run's ``settings`` (when given) tie the row to its run.
    The near-tie audit: ``audit`` (one entry per scored answer, aligned with ``rewards``;
    ``audit_entry``), ``tie_gap``, and ``fragile``: whether any answer on the seek's path was
    fragile (``audit.fragile``; a flip there could change its reward and the path after
    it, or the final answer itself).
    """
    judged = [judge_reply(text, problem.gold, problem.dataset, style) for text in result.texts]
    audit = [
        audit_entry(a, text, lambda t: extract_answer(t, problem.dataset, style))
        for a, text in zip(result.audit, result.texts)
    ]
    row = {
        "index": index,
        "id": problem.id,
        "fingerprint": problem_fingerprint(problem.question, problem.gold),
        "dataset": problem.dataset,
        "question": problem.question,
        "gold": problem.gold,
        "original_answer": result.original_answer,
        "answer": result.answer,
        "original_pred": judged[0][0],
        "pred": judged[-1][0],
        "original_correct": judged[0][1],
        "correct": judged[-1][1],
        "iter_preds": [pred for pred, _ in judged],
        "iter_correct": [ok for _, ok in judged],
        "reward": reward,
        "rewards": result.rewards,
        "iterations": result.iterations,
        "stopped": result.stopped,
        "original_length": result.original_length,
        "final_length": result.final_length,
        "update_length": result.update_length,
        "backend": result.backend,
        "reused": result.reused,
        "timings": result.timings,
        "seconds": sum(result.timings.values()),
        "tie_gap": result.tie_gap,
        "fragile": any(a["fragile"] for a in audit),
        "audit": audit,
    }
    if settings is not None:
        row["settings"] = settings
    return row


def audit_entry(audit, text: str, answer_of) -> dict:
    """A scored answer's ``TieAudit`` as a results row keeps it: the smallest top-2 gap and its
    token index, the count of near-tie decisions and the text offset of the first, the same for
    its verifier replies, and whether it is ``fragile`` (read with ``answer_of``)."""
    return {
        "min_gap": audit.min_gap,
        "min_at": audit.min_at,
        "near_ties": len(audit.below),
        "first_near_tie": audit.first_char_below(),
        "reply_min_gap": audit.reply_min_gap,
        "reply_near_ties": audit.reply_below,
        "fragile": fragile(audit, text, answer_of),
    }


def _encode(row: dict) -> bytes:
    """One line for ``row``: ``index`` first, ASCII JSON, no NaN/inf, a trailing newline."""
    ordered = {"index": row["index"], **{k: v for k, v in row.items() if k != "index"}}
    return (json.dumps(ordered, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def _parse(data: bytes, path: str) -> tuple[list[dict], int, bool]:
    """Parse a whole file's bytes: ``(rows, end of the complete lines, torn tail is a whole row)``.

    Raises ``ResultsError`` at the first bad line. The tail after the last newline is returned as
    ``rows[-1]`` (with the flag) when it is a whole row, ignored when it is the start of one.
    """
    rows: list[dict] = []
    pos, lineno = (len(_BOM) if data.startswith(_BOM) else 0), 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        lineno += 1
        rows.append(_parse_line(data[pos:nl], path, lineno))
        pos = nl + 1
    tail = data[pos:]
    if not tail:
        return rows, pos, False
    lineno += 1
    try:
        rows.append(_parse_line(tail, path, lineno))
        return rows, pos, True
    except ResultsError:
        if tail[: len(_ROW_START)] == _ROW_START[: len(tail)]:
            return rows, pos, False  # the start of a row: a killed write
        raise ResultsError(
            f"{path}:{lineno}: the last line has no newline and is not the start of a results row "
            f"({tail[:40]!r}); the file was left untouched"
        ) from None


def _parse_line(line: bytes, path: str, lineno: int) -> dict:
    where = f"{path}:{lineno}"
    if not line.strip():
        raise ResultsError(
            f"{where}: blank line; results files hold one JSON row per line; the file was left untouched"
        )
    if line.startswith(_BOM):
        raise ResultsError(
            f"{where}: a UTF-8 byte-order mark starts this line; only the file's first line may have "
            "one (were files with one joined, e.g. by cat?); the file was left untouched"
        )
    try:
        row = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{where}: not JSON ({exc}); the file was left untouched") from None
    try:
        return check_row(row, where)
    except ResultsError as exc:
        raise ResultsError(f"{exc}; the file was left untouched") from None


def _not_a_directory(fd: int, path: str) -> None:
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        raise ResultsError(
            f"{path}: a directory, not a results file (eval writes one JSONL file, e.g. "
            f"{os.path.join(path, 'results.jsonl')})"
        )


def _read_fd(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks, off = [], 0
    while True:
        b = os.pread(fd, max(size - off, 1 << 16), off)
        if not b:
            return b"".join(chunks)
        chunks.append(b)
        off += len(b)


def read_results(path: str | os.PathLike) -> list[dict]:
    """The rows of a results file in file order (read-only, no lock; missing file: no rows).

    A torn last line is ignored unless it is a whole row; any other bad line raises
    ``ResultsError`` with its line number.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return []
    try:
        _not_a_directory(fd, path)
        return _parse(_read_fd(fd), path)[0]
    finally:
        os.close(fd)


def unique_rows(rows: Iterable[dict]) -> dict[int, dict]:
    """``index -> row``, the first row of each index (files written here hold one per index)."""
    out: dict[int, dict] = {}
    for r in rows:
        out.setdefault(r["index"], r)
    return out


def _lock(fd: int, path: str) -> None:
    if fcntl is None:
        raise ResultsError(f"{path}: locking results files needs fcntl.flock (a POSIX system)")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ResultsError(
            f"{path} is locked by another writer (another eval on the same file is running); "
            "wait for it to finish, or choose another file"
        ) from None


def fsync_dir(path: str) -> None:
    """fsync the directory holding ``path``, so that a created, renamed or removed entry is durable."""
    try:
        dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass  # some file systems cannot fsync a directory
    finally:
        os.close(dfd)


class ResultsWriter:
    """The one writer of a results file: exclusive lock, checked contents, fsynced appends.

    ``resume=False`` creates ``path`` and fails when it exists (atomically, ``O_EXCL``: two runs
    started together cannot both create it). ``resume=True`` opens ``path`` (creating it when
    missing), locks it, checks every line, drops a torn tail, and exposes the rows already
    there as ``rows`` (file order) and ``done`` (their indices). Use as a context manager;
    when a new file was created and the ``with`` block fails before any row was appended, the
    empty file is removed again, so the next run need not pass ``resume``.
    """

    def __init__(self, path: str | os.PathLike, *, resume: bool = False):
        self.path = os.fspath(path)
        self.rows: list[dict] = []
        self.done: set[int] = set()
        self.appended = 0
        self._created = False
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
        if not resume:
            flags |= os.O_EXCL
        try:
            self._fd = os.open(self.path, flags, 0o644)
        except FileExistsError:
            if os.path.isdir(self.path):
                raise ResultsError(f"{self.path}: a directory, not a results file") from None
            raise ResultsError(
                f"{self.path} exists: resume it (eval --resume) to continue it, or choose another file"
            ) from None
        except IsADirectoryError:
            raise ResultsError(f"{self.path}: a directory, not a results file") from None
        except OSError as exc:
            raise ResultsError(f"{self.path}: cannot open ({exc.strerror})") from None
        try:
            _lock(self._fd, self.path)
            self._created = os.fstat(self._fd).st_size == 0 and not resume
            data = _read_fd(self._fd)
            rows, complete_end, tail_is_row = _parse(data, self.path)
            if tail_is_row:  # a whole row whose newline was not written: keep it
                self._write(b"\n")
            elif complete_end < len(data):  # the start of a row from a killed write
                os.ftruncate(self._fd, complete_end)
                os.fsync(self._fd)
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise
        if self._created:
            fsync_dir(self.path)
        self.rows = rows
        self.done = {r["index"] for r in rows}

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)

    def append(self, row: dict) -> None:
        """Check ``row``, write it as one line and fsync; an index already in the file is an error."""
        if self._fd < 0:
            raise ResultsError(f"{self.path}: the writer is closed")
        check_row(row, f"row for {self.path}")
        if row["index"] in self.done:
            raise ResultsError(f"{self.path}: problem index {row['index']} already has a row")
        self._write(_encode(row))
        self.rows.append(row)
        self.done.add(row["index"])
        self.appended += 1

    def close(self, *, failed: bool = False) -> None:
        """Release the lock. ``failed`` with nothing appended to a file created here removes it."""
        if self._fd < 0:
            return
        try:
            if failed and self._created and self.appended == 0:
                os.unlink(self.path)  # still under the lock: nobody else wrote to it
        finally:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)


def summarize(rows: Iterable[dict], indices: Iterable[int] | None = None) -> dict:
    """The paper's summary over ``rows`` (each problem index counted once; only ``indices``, if given)."""
    by_index = unique_rows(rows)
    if indices is not None:
        keep = set(indices)
        by_index = {i: r for i, r in by_index.items() if i in keep}
    rs = list(by_index.values())
    n = len(rs)
    if n == 0:
        return {"problems": 0}

    def mean(k: str) -> float:
        return sum(r[k] for r in rs) / n

    out = {
        "problems": n,
        "original_accuracy": mean("original_correct"),
        "optimized_accuracy": mean("correct"),
        "mean_iterations": mean("iterations"),
        "mean_original_length": mean("original_length"),
        "mean_optimized_length": mean("final_length"),
    }
    audited = [r for r in rs if isinstance(r.get("fragile"), bool)]
    if audited:
        out.update(accuracy_interval(rs))
        out["audited"] = len(audited)
    return out


def accuracy_interval(rows: list[dict]) -> dict:
    """The accuracy with fragile answers counted as unknown: ``fragile`` (how many), and the
    optimised accuracy's interval ``accuracy_low`` (every fragile answer wrong) to
    ``accuracy_high`` (every one right). A row without an audit (written before it existed)
    counts as not fragile."""
    n = len(rows)
    weak = [r.get("fragile") is True for r in rows]
    sure = sum(1 for r, w in zip(rows, weak) if r["correct"] and not w)
    return {"fragile": sum(weak), "accuracy_low": sure / n, "accuracy_high": (sure + sum(weak)) / n}


def format_summary(s: dict) -> str:
    """``summarize``'s dict as a one-row markdown table."""
    if s["problems"] == 0:
        return "no problems evaluated"
    table = (
        "| problems | original acc | optimised acc | mean iterations | mean original len "
        "| mean optimised len |\n"
        "|---|---|---|---|---|---|\n"
        f"| {s['problems']} | {100 * s['original_accuracy']:.1f} | {100 * s['optimized_accuracy']:.1f} | "
        f"{s['mean_iterations']:.2f} | {s['mean_original_length']:.1f} | {s['mean_optimized_length']:.1f} |"
    )
    return table + ("\n" + fragile_line(s) if "fragile" in s else "")


def fragile_line(s: dict) -> str:
    """One line on the near-tie audit of a summary: how many final answers are fragile, and the
    optimised accuracy as an interval with those counted as unknown."""
    lo, hi = 100 * s["accuracy_low"], 100 * s["accuracy_high"]
    return (
        f"near-ties: {s['fragile']} of {s['problems']} final answers fragile (a near-tie decision "
        f"before the answer); optimised accuracy {lo:.1f}-{hi:.1f} % counting them as unknown"
    )


def merge(shards: Iterable[str | os.PathLike], out: str | os.PathLike) -> list[dict]:
    """Merge the results files ``shards`` (e.g. one per torchrun rank) into a new file ``out``.

    Each shard is locked while it is read, so a shard still being written is an error, not a
    silent partial merge. The same index in two shards is kept once when the rows are equal and
    is an error otherwise. ``out`` gets the rows sorted by index; it must not exist (it is
    written aside, fsynced, then linked into place atomically, so it is never half-written).
    Returns the merged rows.
    """
    out = os.fspath(out)
    merged: dict[int, tuple[dict, str]] = {}
    for shard in shards:
        shard = os.fspath(shard)
        try:
            fd = os.open(shard, os.O_RDONLY)
        except OSError as exc:
            raise ResultsError(f"{shard}: cannot open shard ({exc.strerror})") from None
        try:
            _lock(fd, shard)
            rows = _parse(_read_fd(fd), shard)[0]
        finally:
            os.close(fd)
        for r in rows:
            seen = merged.get(r["index"])
            if seen is None:
                merged[r["index"]] = (r, shard)
            elif seen[0] != r:
                raise ResultsError(
                    f"problem index {r['index']} has different rows in {seen[1]} and {shard}; "
                    "nothing was written"
                )
    if os.path.lexists(out):
        raise ResultsError(f"{out} exists: merge writes a new file; choose another or remove it")
    rows = [merged[i][0] for i in sorted(merged)]
    tmp = f"{out}.merge{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        data = b"".join(_encode(r) for r in rows)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, out)  # atomic, and fails rather than replace a file created meanwhile
    except FileExistsError:
        raise ResultsError(f"{out} exists: merge writes a new file; choose another or remove it") from None
    finally:
        os.unlink(tmp)
    fsync_dir(out)
    return rows
