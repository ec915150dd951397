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


def check_int(name: str, value, *, low: int = 1, allow_none: bool = False, note: str = ""):
    """``value`` if it is an int (not a bool) >= ``low`` (or None when allowed), else a ValueError
    naming ``name``, the value and what is allowed (``note`` says why, when that helps)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        want = ("None or " if allow_none else "") + f"an integer >= {low}"
        raise ValueError(f"{name}={value!r}: expected {want}" + (f" ({note})" if note else ""))
    return value


def check_choice(name: str, value, allowed):
    """``value`` if it is one of ``allowed``, else a ValueError naming ``name``, the value and the
    allowed values."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: allowed values are {allowed}")
    return value


# Numeric ranges accepted by the ops, SeekConfig and the seek loop, chosen so fp32 cannot
# overflow. Per latent element |d log pi / dh| <= 2 max|W| / T (sum_v |pi_v - [v == tok]| <= 2),
# so a gradient reward * direction is at most 2 |r| max|W| / T, and Adam squares it: fp32
# overflows above sqrt(FLT_MAX) ~ 1.8e19. With |r| <= REWARD_MAX and T >= TEMPERATURE_MIN the
# bound is 2e10 max|W|, finite for any head with max|W| < 9e8 (LM heads have max|W| below ~10),
# and the scaled logits l / T stay finite for |l| < 3.4e34. Rewards in use are O(1) (PSRM: -1/0,
# self-reward: -2..0) and sampling temperatures O(0.1..2), so the limits leave wide margins.
REWARD_MAX = 1e6
TEMPERATURE_MIN = 1e-4
# Largest Adam learning rate SeekConfig accepts. Adam moves every latent element by about lr per
# step (exactly lr at the first step; at most about lr (1 - beta1) / sqrt(1 - beta2) ~ 3.2 lr),
# so K steps move it by up to ~3.2 lr K. The latents are post-final-norm hidden states with
# elements of order 1 (embedded SmolLM2: RMS 1.9, largest 43 over a 64-token answer), and the
# paper's lr is 0.03-0.05: at lr = 100 one step already moves each element ~50x the latents' RMS,
# so larger values only replace the latents with noise (or are typos: 1e38, 3e2 for 3e-2). Within
# the bound fp32 and bf16 latents and logits (|logit| <= |z|_max * sum|W_v|, sum|W_v| ~ 1e2) stay
# finite for any realistic K; fp16 latents (max 65504) can still overflow after ~200 steps at the
# bound, which the seek's per-step guard reports, naming lr.
LR_MAX = 100.0


def check_reward_range(name: str, value: float) -> float:
    """``value`` if ``|value| <= REWARD_MAX``, else a ValueError naming ``name`` and the range."""
    if not abs(value) <= REWARD_MAX:
        raise ValueError(
            f"{name}={value!r}: expected |{name}| <= {REWARD_MAX:g} (larger rewards can overflow the "
            "fp32 gradient reward * direction and Adam's squared moment)"
        )
    return value


def check_temperature(name: str, value: float) -> float:
    """``value`` if ``value >= TEMPERATURE_MIN``, else a ValueError naming ``name`` and the range."""
    if not value >= TEMPERATURE_MIN:
        raise ValueError(
            f"{name}={value!r}: expected a finite number >= {TEMPERATURE_MIN:g} (the logits and the "
            "gradient are scaled by 1/temperature; below that they can overflow fp32)"
        )
    return value
