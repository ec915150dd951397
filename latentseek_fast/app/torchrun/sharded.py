"""``sharded_results``: this rank's share of an evaluation, its file, and rank 0's merge."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from ..results import ResultsError, ResultsWriter, read_results
from .collectives import SYNC_TIMEOUT, all_gather, broadcast, init_group
from .env import DistEnv, dist_env, resolve_device, resolve_threads
from .shards import find_shards, finished_rows, merge_shards, shard, shard_path


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
    fingerprints: Sequence[str] | None = None,
    settings: dict | None = None,
    allow_mixed_settings: bool = False,
) -> Iterator[ShardedRun]:
    """Run this rank's share of ``indices`` into ``out``; on exit, rank 0 merges the shards.

    On entry: reads the torchrun environment, picks the device (:func:`resolve_device`) and
    sets torch's CPU threads (:func:`resolve_threads`), joins the process group when
    ``WORLD_SIZE`` > 1, and finds the finished problems (rank 0 reads, all ranks get the same
    answer). Yields a :class:`ShardedRun`: load the model on ``run.device``, then append one
    row per index of ``run.todo``. On a normal exit the ranks meet; rank 0 merges every file
    into ``out`` (sorted by index) and sets ``run.rows``. ``fingerprints`` (the data's problems'
    fingerprints, by index) and ``settings`` (this run's) check the rows already written, on
    resume before anything is written and again at the merge (``shards.check_files``;
    ``allow_mixed_settings`` skips the settings check). On an exception this rank's file is
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
    import torch  # heavy: imported when a run starts, not when the CLI parses its flags

    env = dist_env(environ)
    out = os.fspath(out)
    dev = resolve_device(env, device)
    n_threads = resolve_threads(env, threads, dev)
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    owns_group = init_group(env, dev, timeout)
    try:
        indices = list(indices)
        plan: tuple[list[int], str | None, list[int]]
        if env.is_main:
            try:
                finished = finished_rows(out, resume, fingerprints, settings, allow_mixed_settings)
                plan = (sorted({r["index"] for r in finished}), None, indices)
            except (ValueError, OSError) as exc:  # ResultsError is a ValueError
                plan = ([], str(exc), indices)
        else:
            plan = ([], None, [])
        done_list, error, main_indices = broadcast(plan, env)
        if error is not None:
            raise ResultsError(error)
        if main_indices != indices:
            raise ValueError(
                f"rank {env.rank} was given {len(indices)} problems, rank 0 {len(main_indices)} "
                "(or others): every rank must see the same --data, --start and --limit"
            )
        done = set(done_list)
        todo = shard(indices, env.rank, env.world_size, done)
        path = shard_path(out, env.rank, env.world_size) if env.distributed else out
        writer = ResultsWriter(path, resume=resume)
        run = ShardedRun(env, dev, n_threads, path, todo, done, _writer=writer)
        try:
            yield run
        except BaseException:
            writer.close(failed=True)
            raise
        writer.close()
        written = all_gather(run._appended, env)  # every rank is done writing after this
        if env.is_main:
            if env.distributed or find_shards(out):
                expected = done.union(*written)
                run.rows = merge_shards(
                    out,
                    expected,
                    fingerprints=fingerprints,
                    settings=settings,
                    allow_mixed_settings=allow_mixed_settings,
                )
            else:
                run.rows = read_results(out)
    finally:
        if owns_group:
            import torch.distributed as tdist  # heavy, as above

            with contextlib.suppress(Exception):
                tdist.destroy_process_group()
