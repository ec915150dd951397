"""Who this process is in a torchrun launch, and its device and CPU threads.

torchrun (``python -m torch.distributed.run``) starts one process per rank and tells each one,
through its environment, who it is: ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and
``LOCAL_WORLD_SIZE``. A plain process (none of them set) is rank 0 of a world of 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")


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
        import torch  # heavy: only when the caller did not say what CUDA offers

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
