"""The process group and the two collectives of a sharded run: rank 0's plan out, the written
indices back. A failed collective waits for torchrun to stop this rank first (see
``PEER_FAILURE_GRACE_S``). torch is imported only when a world of several ranks needs it.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

from .env import DistEnv

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


def init_group(env: DistEnv, device: str, timeout: timedelta) -> bool:
    """Join the process group (gloo on CPU, nccl on CUDA) when the world has several ranks.

    Returns whether this call created it (and so must destroy it).
    """
    if not env.distributed:
        return False
    import torch  # heavy: only a world of several ranks needs it
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


def collective(env: DistEnv, what: str, fn):
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


def broadcast(obj, env: DistEnv):
    """``obj`` from rank 0 on every rank."""
    if not env.distributed:
        return obj
    import torch.distributed as tdist  # heavy: only a world of several ranks gets here

    box = [obj]
    collective(env, "start", lambda: tdist.broadcast_object_list(box, src=0))
    return box[0]


def all_gather(obj, env: DistEnv) -> list:
    """``obj`` of every rank, in rank order, on every rank."""
    if not env.distributed:
        return [obj]
    import torch.distributed as tdist  # heavy, as in broadcast

    out = [None] * env.world_size
    collective(env, "end", lambda: tdist.all_gather_object(out, obj))
    return out
