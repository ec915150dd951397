"""Triton kernels for the latent policy gradient (imported only when the triton backend is used).

This package file imports no triton, so the backend selection can ask :func:`interpreting`
without importing the compiler.
"""

from __future__ import annotations

import os


def interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1`` (triton's numpy interpreter, the kernels' CPU path)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
