"""Errors under torchrun: what a failed rank writes so that torchrun's summary names it.

torch's elastic error handling is imported only when torchrun set ``TORCHELASTIC_ERROR_FILE``.
"""

from __future__ import annotations

import functools
import os


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
        # heavy: imported only under torchrun (the error file is set)
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
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler  # heavy, as in record

    ErrorHandler().record_exception(exc)
