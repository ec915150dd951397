"""Rewards for the seek loop: the validated ``Reward`` interface, PSRM and self-reward."""

from .base import Reward, RewardError, as_reward
from .psrm import PSRM
from .self_reward import SelfReward

__all__ = ["PSRM", "Reward", "RewardError", "SelfReward", "as_reward"]
