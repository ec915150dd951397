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

The results module (``latentseek_fast.app.results``) is the one reader and writer of results
files; this package uses only its ``read_results``, ``ResultsWriter``, ``merge``, ``fsync_dir``,
``check_fingerprints``, ``check_settings`` and ``ResultsError``.

Modules: ``env`` (rank, device, threads), ``shards`` (who runs what, the shard files, the merge),
``collectives`` (the process group, broadcast and gather), ``sharded`` (``sharded_results``, the
one entry point ``eval`` uses), ``errors`` (``record``: torchrun's failure summary).
"""

from .collectives import PEER_FAILURE_GRACE_S, SYNC_TIMEOUT
from .env import DistEnv, cpu_cores, dist_env, resolve_device, resolve_threads
from .errors import record, record_error
from .sharded import ShardedRun, sharded_results
from .shards import find_shards, merge_shards, shard, shard_path

__all__ = [
    "PEER_FAILURE_GRACE_S",
    "SYNC_TIMEOUT",
    "DistEnv",
    "ShardedRun",
    "cpu_cores",
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
