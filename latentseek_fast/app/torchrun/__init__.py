"""Data-parallel evaluation under torchrun: who this rank is, its device and threads, its share
of the problems, its shard file, and rank 0's merge of the shards.

torchrun (``python -m torch.distributed.run``) starts one process per rank and tells each one,
through its environment, who it is: ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and
``LOCAL_WORLD_SIZE``. A plain process (none of them set) is rank 0 of a world of 1.

Files. With ``WORLD_SIZE`` > 1, rank R of W appends its rows to ``<out>.rank<R>-of-<W>`` (e.g.
``results.jsonl.rank0-of-2``), through the results module's writer (locked, each row fsynced).
The world size in the name keeps apart the shards of runs with different world sizes, so a
resume with another world size never appends to a file whose numbering it does not share. When
every rank is done, rank 0 merges ``<out>`` (if it exists) and every shard file of any world size
into ``<out>``, sorted by problem index, then removes the shards. A run of one process writes
``<out>`` directly, as a plain ``eval`` always has.

Resume. The finished problems are the rows of ``<out>`` and of every shard file, whatever world
size wrote them; only the others are sharded over the ranks of this run (round-robin, so every
rank gets easy and hard problems alike). Nothing is lost or run twice, however the earlier run
ended and however many ranks it had.

Failures. A rank that raises ends its process with the error; torchrun then stops the other
ranks and exits non-zero, naming the failed rank and its error (decorate the entry point with
:func:`record`). Rows already appended stay in the shard files and count on ``--resume``.

Multi-node runs need ``<out>`` on a file system that every node sees: rank 0 reads every
shard, and checks that it found every row the other ranks reported (an error says so if not).

The results module (``latentseek_fast.app.results``) is the one reader and writer of results files;
this module uses only its ``read_results``, ``ResultsWriter``, ``merge`` and ``ResultsError``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

__all__ = [
    "PEER_FAILURE_GRACE_S",
    "SYNC_TIMEOUT",
    "DistEnv",
    "ShardedRun",
    "dist_env",
    "find_shards",
    "merge_shards",
    "record",
    "record_error",
    "resolve_device",
    "resolve_threads",
    "shard",
    "shard_path",
    "sharded_results",
]

#: How long a rank may wait at a collective for the others. The ranks meet at the start and at
#: the end; at the end the fast ranks wait for the slowest, and on a CPU one GSM8K shard takes
#: hours, so a short timeout would kill healthy runs. A crashed rank is caught by torchrun (it
#: stops the others at once), not by this timeout; only a hung rank waits it out.
SYNC_TIMEOUT = timedelta(hours=24)

#: When a collective fails under torchrun, most likely because another rank crashed, this rank
#: waits this long before raising: torchrun stops every rank within its --monitor-interval
#: (0.1 s by default) of the first failure, and a rank that does not die with an error of its
#: own leaves the crashed rank as the "Root Cause" of torchrun's summary (it picks the earliest
#: failure, to the second).
PEER_FAILURE_GRACE_S = 30.0

_ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")


def _results():
    from .. import results

    return results


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun launch (a plain process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env(environ: dict | None = None) -> DistEnv:
    """Read ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and ``LOCAL_WORLD_SIZE`` (torchrun sets all four).

    None set: a plain process. ``RANK`` and ``WORLD_SIZE`` must come together; the local pair
    defaults to them (one node). Raises ``ValueError`` naming the variable and its value.
    """
    environ = os.environ if environ is None else environ
    raw = {k: environ.get(k) for k in _ENV_KEYS}
    if all(v is None for v in raw.values()):
        return DistEnv()
    if raw["RANK"] is None or raw["WORLD_SIZE"] is None:
        given = ", ".join(f"{k}={v}" for k, v in raw.items() if v is not None)
        raise ValueError(f"{given}: RANK and WORLD_SIZE must both be set (launch with torchrun)")
    vals = {}
    for k, v in raw.items():
        if v is None:
            continue
        try:
            vals[k] = int(v)
        except ValueError:
            raise ValueError(f"{k}={v!r}: expected an integer") from None
    rank, world = vals["RANK"], vals["WORLD_SIZE"]
    local_rank = vals.get("LOCAL_RANK", rank)
    local_world = vals.get("LOCAL_WORLD_SIZE", world)
    if world < 1:
        raise ValueError(f"WORLD_SIZE={world}: expected >= 1")
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank}: expected 0 <= RANK < WORLD_SIZE={world}")
    if not 1 <= local_world <= world:
        raise ValueError(
            f"LOCAL_WORLD_SIZE={local_world}: expected 1 <= LOCAL_WORLD_SIZE <= WORLD_SIZE={world}"
        )
    if not 0 <= local_rank < local_world:
        raise ValueError(
            f"LOCAL_RANK={local_rank}: expected 0 <= LOCAL_RANK < LOCAL_WORLD_SIZE={local_world}"
        )
    return DistEnv(rank, local_rank, world, local_world)


def resolve_device(
    env: DistEnv,
    requested: str | None = None,
    *,
    cuda_available: bool | None = None,
    device_count: int | None = None,
) -> str:
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is present (or ``requested`` is
    ``"cuda"``), else ``cpu``. An explicit ``cpu``, ``cuda:N`` or other device is kept.

    ``cuda_available`` / ``device_count`` default to torch's answers (parameters for tests).
    """
    if requested is not None and requested != "cuda":
        if requested.startswith("cuda:") and env.local_world_size > 1:
            raise ValueError(
                f"--device {requested}: with {env.local_world_size} processes per node each needs its "
                "own GPU; pass --device cuda (or nothing) to run rank r on cuda:LOCAL_RANK"
            )
        return requested
    if cuda_available is None or device_count is None:
        import torch

        cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
        device_count = torch.cuda.device_count() if device_count is None else device_count
    if requested is None and not cuda_available:
        return "cpu"
    if not cuda_available or device_count < 1:
        raise ValueError(f"--device {requested}: no CUDA device is visible")
    if env.local_rank >= device_count:
        raise ValueError(
            f"LOCAL_RANK={env.local_rank}: only {device_count} CUDA device(s) are visible; "
            f"run at most {device_count} process(es) per node (--nproc-per-node)"
        )
    return f"cuda:{env.local_rank}"


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_threads(
    env: DistEnv, requested: int | None = None, device: str = "cpu", cores: int | None = None
) -> int | None:
    """CPU threads for this rank: ``requested`` if given, else on a CPU device the cores split
    over the processes of this node (``cores // LOCAL_WORLD_SIZE``, at least 1); ``None`` (leave
    torch's default) for a single process or a GPU device.

    torchrun sets ``OMP_NUM_THREADS=1`` for every worker by default, which would leave a CPU
    node mostly idle; the split uses the node instead.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"--threads {requested!r}: expected an integer >= 1")
        return requested
    if env.local_world_size == 1 or not str(device).startswith("cpu"):
        return None
    cores = cpu_cores() if cores is None else cores
    return max(1, cores // env.local_world_size)


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


def _finished_rows(out: str, resume: bool) -> list[dict]:
    """The rows already written for ``out`` (its own and its shards'); without ``resume`` any
    existing file is an error."""
    results = _results()
    files = [p for p in [out, *find_shards(out)] if os.path.lexists(p)]
    if not resume:
        if files:
            raise results.ResultsError(
                f"{files[0]} exists: pass --resume to continue that run, or choose another --out"
            )
        return []
    rows: list[dict] = []
    for p in files:
        rows.extend(results.read_results(p))
    return rows


def merge_shards(out: str | os.PathLike, expected: Iterable[int] = ()) -> list[dict]:
    """Merge ``out`` (if it exists) and all its shard files into ``out``, sorted by index.

    The merged file is written aside and checked to hold every index in ``expected`` before it
    replaces ``out``; only then are the shards removed. A crash at any point leaves every row
    in ``out`` or a shard, and merging again gives the same file.
    """
    results = _results()
    out = os.fspath(out)
    shards = find_shards(out)
    sources = ([out] if os.path.exists(out) else []) + shards
    tmp = f"{out}.merging"
    if os.path.lexists(tmp):  # left by a merge that was killed before it replaced ``out``
        os.unlink(tmp)
    rows = results.merge(sources, tmp)
    missing = sorted(set(expected) - {r["index"] for r in rows})
    if missing:
        os.unlink(tmp)
        raise results.ResultsError(
            f"rows of problems {missing[:10]}{' ...' if len(missing) > 10 else ''} were reported "
            f"written but are in no file rank 0 can read ({', '.join(sources) or 'none found'}); "
            f"on several nodes --out must be on a file system that every node shares"
        )
    os.replace(tmp, out)
    results.fsync_dir(out)
    for p in shards:
        os.unlink(p)
    return rows


@dataclass
class ShardedRun:
    """This rank's part of a sharded evaluation (see :func:`sharded_results`).

    ``todo``: the problem indices this rank must run (append exactly one row for each).
    ``done``: the indices finished before this run started (in any file).
    ``rows``: after the ``with`` block, on rank 0: every row of ``out`` (the merge); else None.
    """

    env: DistEnv
    device: str
    threads: int | None
    path: str
    todo: list[int]
    done: set[int]
    rows: list[dict] | None = None
    _writer: object = field(default=None, repr=False)
    _appended: list[int] = field(default_factory=list, repr=False)

    def append(self, row: dict) -> None:
        """Write ``row`` (its ``index`` must be one of ``todo``) to this rank's file, fsynced."""
        i = row.get("index") if isinstance(row, dict) else None
        if i not in self._todo_set:
            raise ValueError(f"row index {i!r}: rank {self.env.rank} was given {self.todo[:10]}..., not it")
        self._writer.append(row)
        self._appended.append(i)

    def __post_init__(self) -> None:
        self._todo_set = set(self.todo)


def _init_group(env: DistEnv, device: str, timeout: timedelta) -> bool:
    """Join the process group (gloo on CPU, nccl on CUDA) when the world has several ranks.

    Returns whether this call created it (and so must destroy it).
    """
    if not env.distributed:
        return False
    import torch
    import torch.distributed as tdist

    if tdist.is_initialized():
        return False
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise ValueError(
            f"WORLD_SIZE={env.world_size} but MASTER_ADDR/MASTER_PORT are unset: launch with torchrun"
        )
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
        tdist.init_process_group("nccl", timeout=timeout, device_id=torch.device(device))
    else:
        tdist.init_process_group("gloo", timeout=timeout)
    return True


def _collective(env: DistEnv, what: str, fn):
    """Run the collective ``fn``; when it fails (a peer rank died, most likely), give torchrun
    ``PEER_FAILURE_GRACE_S`` to stop this rank before raising, so that the crashed rank's error
    stays the root cause of the run."""
    try:
        return fn()
    except RuntimeError as exc:  # gloo/nccl errors (DistBackendError is a RuntimeError)
        if os.environ.get("TORCHELASTIC_ERROR_FILE"):
            time.sleep(PEER_FAILURE_GRACE_S)
        raise RuntimeError(
            f"rank {env.rank}: the {what} of all ranks failed, most likely because another rank "
            f"failed first (see its error): {exc}"
        ) from exc


def _broadcast(obj, env: DistEnv):
    """``obj`` from rank 0 on every rank."""
    if not env.distributed:
        return obj
    import torch.distributed as tdist

    box = [obj]
    _collective(env, "start", lambda: tdist.broadcast_object_list(box, src=0))
    return box[0]


def _all_gather(obj, env: DistEnv) -> list:
    if not env.distributed:
        return [obj]
    import torch.distributed as tdist

    out = [None] * env.world_size
    _collective(env, "end", lambda: tdist.all_gather_object(out, obj))
    return out


@contextlib.contextmanager
def sharded_results(
    out: str | os.PathLike,
    indices: Sequence[int],
    *,
    resume: bool = False,
    device: str | None = None,
    threads: int | None = None,
    timeout: timedelta = SYNC_TIMEOUT,
    environ: dict | None = None,
) -> Iterator[ShardedRun]:
    """Run this rank's share of ``indices`` into ``out``; on exit, rank 0 merges the shards.

    On entry: reads the torchrun environment, picks the device (:func:`resolve_device`) and
    sets torch's CPU threads (:func:`resolve_threads`), joins the process group when
    ``WORLD_SIZE`` > 1, and finds the finished problems (rank 0 reads, all ranks get the same
    answer). Yields a :class:`ShardedRun`: load the model on ``run.device``, then append one
    row per index of ``run.todo``. On a normal exit the ranks meet; rank 0 merges every file
    into ``out`` (sorted by index) and sets ``run.rows``. On an exception this rank's file is
    closed (its rows stay) and the exception propagates; nothing is merged.

    One process (no torchrun): rows go straight into ``out``; shards left by an earlier
    distributed run are counted on ``resume`` and merged at the end.

    Use (the shape of ``eval``)::

        with sharded_results(out, selected, resume=resume, device=device, threads=threads) as run:
            model, tok = load_model(name, device=run.device) if run.todo else (None, None)
            for i in run.todo:
                run.append(row_for(i))  # the row's "index" must be i
        if run.env.is_main:
            print(format_summary(summarize(run.rows, selected)))
    """
    import torch

    env = dist_env(environ)
    out = os.fspath(out)
    dev = resolve_device(env, device)
    n_threads = resolve_threads(env, threads, dev)
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    owns_group = _init_group(env, dev, timeout)
    results = _results()
    try:
        indices = list(indices)
        plan: tuple[list[int], str | None, list[int]]
        if env.is_main:
            try:
                plan = (sorted({r["index"] for r in _finished_rows(out, resume)}), None, indices)
            except (ValueError, OSError) as exc:  # ResultsError is a ValueError
                plan = ([], str(exc), indices)
        else:
            plan = ([], None, [])
        done_list, error, main_indices = _broadcast(plan, env)
        if error is not None:
            raise results.ResultsError(error)
        if main_indices != indices:
            raise ValueError(
                f"rank {env.rank} was given {len(indices)} problems, rank 0 {len(main_indices)} "
                "(or others): every rank must see the same --data, --start and --limit"
            )
        done = set(done_list)
        todo = shard(indices, env.rank, env.world_size, done)
        path = shard_path(out, env.rank, env.world_size) if env.distributed else out
        writer = results.ResultsWriter(path, resume=resume)
        run = ShardedRun(env, dev, n_threads, path, todo, done, _writer=writer)
        try:
            yield run
        except BaseException:
            writer.close(failed=True)
            raise
        writer.close()
        written = _all_gather(run._appended, env)  # every rank is done writing after this
        if env.is_main:
            if env.distributed or find_shards(out):
                expected = done.union(*written)
                run.rows = merge_shards(out, expected)
            else:
                run.rows = results.read_results(out)
    finally:
        if owns_group:
            import torch.distributed as tdist

            with contextlib.suppress(Exception):
                tdist.destroy_process_group()


def record(fn):
    """Decorate an entry point so that, under torchrun, an uncaught exception is written to the
    rank's error file (``TORCHELASTIC_ERROR_FILE``) and torchrun's failure summary shows it.

    torch's ``torch.distributed.elastic.multiprocessing.errors.record``, imported only when
    torchrun set the error file; a plain run calls ``fn`` untouched.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
            return fn(*args, **kwargs)
        from torch.distributed.elastic.multiprocessing.errors import record as elastic_record

        return elastic_record(fn)(*args, **kwargs)

    return wrapper


def record_error(exc: BaseException) -> None:
    """Under torchrun, write ``exc`` to this rank's error file; a no-op otherwise.

    For errors the entry point catches and turns into an exit status (the CLI prints them as one
    line and exits 2): call it inside the ``except`` block, so the traceback is recorded too.
    """
    if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    ErrorHandler().record_exception(exc)
