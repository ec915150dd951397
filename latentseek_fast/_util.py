"""Small shared helpers: one-time notices and argument checks."""

from __future__ import annotations

import logging
import math
import numbers

logger = logging.getLogger("latentseek_fast")
_said: set[str] = set()


def say_once(key: str, message: str, level: int = logging.INFO) -> None:
    """Log ``message`` the first time ``key`` is seen in this process (e.g. why a fast path is off)."""
    if key in _said:
        return
    _said.add(key)
    logger.log(level, message)


def check_finite_float(name: str, value, *, allow_none: bool = False) -> float | None:
    """Return ``value`` as a Python float, or raise a ValueError naming it and what is allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        # 0-d tensors and numpy scalars are Real-like through __float__.
        if not hasattr(value, "__float__") or getattr(value, "ndim", 0) not in (0,):
            raise ValueError(f"{name}={value!r} ({type(value).__name__}): expected a finite real number")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name}={value!r}: expected a finite real number")
    return out
