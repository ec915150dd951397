"""The one reward factory: what a caller names (``"psrm"``, ``"self"``, None, an object) -> a Reward.

``seek()``, the command line and ``compat`` all build their reward here, so every option
(``style`` for PSRM, ``format_rule`` for self-reward) reaches the reward the same way.
"""

from __future__ import annotations

from ..config import REWARD_NAMES
from .base import Reward, as_reward
from .psrm import PSRM
from .self_reward import SelfReward

__all__ = ["REWARD_NAMES", "make_reward"]


def make_reward(
    reward=None,
    model=None,
    tokenizer=None,
    *,
    gold: str | None = None,
    dataset: str = "gsm8k",
    style: str = "boxed",
    format_rule: bool = False,
    verifier_tokens: int | None = None,
) -> Reward:
    """The ``Reward`` for ``reward``.

    - None: ``"psrm"`` when a ground truth ``gold`` is known, else ``"self"``.
    - ``"psrm"``: ``PSRM(gold, dataset, style)`` (needs ``gold``).
    - ``"self"``: ``SelfReward(model, tokenizer, format_rule=format_rule)``, its verifier replies
      capped at ``verifier_tokens`` new tokens (None: ``SelfReward``'s default, the paper's 4096).
    - anything else ``as_reward`` accepts (a Reward, an object with ``get_reward``, a callable
      ``(question, answer) -> number``) is wrapped, so its values are validated on every call.

    ``format_rule`` (answers without ``\\boxed{}`` lose 2 of 6) and ``verifier_tokens`` apply to
    self-reward only.
    """
    if reward is None:
        reward = "psrm" if gold is not None else "self"
    if isinstance(reward, str):
        if reward == "psrm":
            if gold is None:
                raise ValueError("reward='psrm' needs a ground-truth answer (a Problem with gold, or --gold)")
            return PSRM(gold, dataset=dataset, style=style)
        if reward == "self":
            cap = {} if verifier_tokens is None else {"max_new_tokens": verifier_tokens}
            return SelfReward(model, tokenizer, format_rule=format_rule, **cap)
        raise ValueError(f"reward={reward!r}: allowed names are {REWARD_NAMES}, or pass a callable")
    return as_reward(reward)
