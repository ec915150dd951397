"""The reward interface: ``reward(question, answer) -> float``, checked on every call.

Anything the seek loop is given as a reward goes through ``as_reward``: a ``Reward`` subclass,
any object with a research-code style ``get_reward(question, solution)`` method, or a plain
callable ``(question, answer) -> number``. Every value is validated: None, NaN, infinities,
bools and non-numbers raise ``RewardError`` naming the value and the reward object; numbers
(ints, numpy scalars, 0-d torch tensors included) come back as Python floats.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["Reward", "RewardError", "as_reward", "bind_question", "check_reward_value"]


class RewardError(ValueError):
    """A reward object returned something that is not a finite real number."""


def _describe(source) -> str:
    if isinstance(source, Reward):
        return repr(source)
    name = getattr(source, "__qualname__", None) or getattr(source, "__name__", None)
    return name if name else type(source).__name__


def check_reward_value(value, source=None) -> float:
    """``value`` as a Python float, or a RewardError naming it and ``source``."""
    where = f" from reward {_describe(source)}" if source is not None else ""

    def bad(why: str):
        return RewardError(
            f"reward value {value!r} ({type(value).__name__}){where}: {why}; expected a finite real number"
        )

    if value is None or isinstance(value, (bool, str, bytes)):
        raise bad("not a number")
    if type(value).__name__ == "bool_":  # numpy.bool_
        raise bad("a boolean is not a reward")
    if not isinstance(value, numbers.Real):
        # numpy 0-d arrays and torch 0-d tensors: real scalars through __float__
        ndim = getattr(value, "ndim", None)
        dtype = str(getattr(value, "dtype", ""))
        if ndim != 0 or not hasattr(value, "__float__"):
            raise bad("not a real scalar")
        if "bool" in dtype or "complex" in dtype:
            raise bad(f"dtype {dtype} is not a real number type")
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError) as e:
        raise bad(f"float() failed ({e})") from None
    if not math.isfinite(out):
        raise bad("not finite")
    return out


class Reward:
    """Base class of rewards. Subclasses implement ``compute(question, answer)``; calling the
    object (or ``get_reward``, the research code's name) returns the validated float.

    ``deterministic``: True declares that the same (question, answer) always gets the same
    reward, so the seek loop may reuse an earlier score of an identical answer instead of
    calling the reward again. False (the default) always calls it."""

    deterministic: bool = False

    def compute(self, question: str, answer: str):
        raise NotImplementedError(f"{type(self).__name__} must implement compute(question, answer)")

    def __call__(self, question: str, answer: str) -> float:
        return check_reward_value(self.compute(question, answer), self)

    def get_reward(self, question: str, solution: str) -> float:
        return self(question, solution)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _GetRewardAdapter(Reward):
    """Wraps an object with ``get_reward(question, solution)`` (the research code's reward models)."""

    def __init__(self, obj):
        self.obj = obj
        self.deterministic = getattr(obj, "deterministic", False) is True

    def compute(self, question, answer):
        return self.obj.get_reward(question, answer)

    def __call__(self, question, answer):
        return check_reward_value(self.compute(question, answer), self.obj)

    def __repr__(self):
        return f"as_reward({_describe(self.obj)})"


class _CallableAdapter(Reward):
    def __init__(self, fn):
        self.fn = fn
        self.deterministic = getattr(fn, "deterministic", False) is True

    def compute(self, question, answer):
        return self.fn(question, answer)

    def __call__(self, question, answer):
        return check_reward_value(self.compute(question, answer), self.fn)

    def __repr__(self):
        return f"as_reward({_describe(self.fn)})"


def as_reward(obj) -> Reward:
    """A ``Reward`` from a Reward, an object with ``get_reward``, or a callable ``(q, a) -> number``.

    A wrapped object or callable is deterministic only when it has ``deterministic = True``."""
    if isinstance(obj, Reward):
        return obj
    if callable(getattr(obj, "get_reward", None)):
        return _GetRewardAdapter(obj)
    if callable(obj):
        return _CallableAdapter(obj)
    raise TypeError(
        f"reward {obj!r} ({type(obj).__name__}): expected a Reward, an object with "
        "get_reward(question, solution), or a callable (question, answer) -> number"
    )


def bind_question(reward, question: str):
    """``answer -> float``: ``reward`` (anything ``as_reward`` takes) with ``question`` fixed."""
    fn = as_reward(reward)
    return lambda answer: fn(question, answer)
