"""A small sharded 'evaluation' for tests/app/test_torchrun.py, run as a plain process or under torchrun.

Each problem's row is a pure function of its index, so the merged file of any run (any world
size, any crash and resume) must equal that of one process. ``--fail-rank R --fail-after K``
makes rank R fail after appending K rows: ``--fail-mode raise`` raises an error, ``kill``
SIGKILLs the process (as the OOM killer would).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from latentseek_fast.app import torchrun  # noqa: E402


def row_of(i: int) -> dict:
    """The row 'evaluating' problem ``i`` gives, whoever runs it."""
    return {
        "index": i,
        "id": f"p{i}",
        "original_correct": i % 3 == 0,
        "correct": i % 2 == 0,
        "iterations": i % 4,
        "original_length": 10 + i,
        "final_length": 20 + 2 * i,
        "rewards": [-1.0] * (i % 4) + [0.0],
    }


@torchrun.record
def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--problems", type=int, required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--fail-rank", type=int, default=None)
    p.add_argument("--fail-after", type=int, default=0)
    p.add_argument("--fail-mode", choices=("raise", "kill"), default="raise")
    args = p.parse_args(argv)
    with torchrun.sharded_results(args.out, list(range(args.problems)), resume=args.resume) as run:
        print(
            f"rank {run.env.rank}/{run.env.world_size} device {run.device} threads {run.threads} "
            f"todo {run.todo}",
            flush=True,
        )
        for k, i in enumerate(run.todo):
            if run.env.rank == args.fail_rank and k == args.fail_after:
                if args.fail_mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(f"injected failure on rank {run.env.rank} at problem {i}")
            run.append(row_of(i))
    if run.env.is_main:
        print(f"merged {len(run.rows)} rows", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
