"""Rewards for the seek loop: the validated ``Reward`` interface, the ``ReplyReward`` protocol
(rewards read from the model's own replies, which ``seek_many`` can batch), PSRM, self-reward
and the one factory (``make_reward``) that builds any of them from a name or an object."""

from .base import Reward, RewardError, as_reward, bind_question
from .factory import REWARD_NAMES, make_reward
from .psrm import PSRM
from .reply import ReplyReward
from .self_reward import SelfReward

__all__ = [
    "PSRM",
    "REWARD_NAMES",
    "Reward",
    "ReplyReward",
    "RewardError",
    "SelfReward",
    "as_reward",
    "bind_question",
    "make_reward",
]
