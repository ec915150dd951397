"""``latentseek-fast``: ``run`` one problem, or ``eval`` a data set with resumable JSONL output.

``main`` dispatches a command and turns user errors into one line and an exit status. The
modules: ``parser`` (the flags), ``checks`` (what is checked before the model loads),
``load`` (config, threads, model and reward from the flags), ``run`` and ``eval`` (the
commands), ``progress`` (their live output).
"""

from __future__ import annotations

import logging
import sys

from ..report import write_report
from ..torchrun import record, record_error
from .checks import CLIError, Interrupted
from .eval import cmd_eval
from .parser import build_parser
from .run import cmd_run

__all__ = ["build_parser", "main"]


def cmd_report(args) -> int:
    """The paper's table per data set, and test-time-scaling and reward PNGs (``app/report.py``)."""
    write_report([args.results] + ([args.compare] if args.compare else []), out=args.out)
    return 0


@record
def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.command is None:  # bare `latentseek-fast [-v]` runs the default demo
        args = build_parser().parse_args([*argv, "run"])
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return {"run": cmd_run, "eval": cmd_eval, "report": cmd_report}[args.command](args)
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        record_error(exc)  # under torchrun: the failure summary names this rank's error
        return 2


if __name__ == "__main__":
    sys.exit(main())
