"""Rewards: rule-based math answer checking and adapters for the reward functions users already have."""

from trapo.rewards.adapters import (
    Completion,
    RewardFunction,
    RewardSet,
    as_reward_function,
    default_reward,
    detect_kind,
    load_reward,
    reward_set,
    safe_rewards,
)
from trapo.rewards.math_answers import Verdict, check_answer, extract_answer, extract_boxed, math_reward
from trapo.rewards.timeout import CallTimeout, call_with_timeout

__all__ = [
    "CallTimeout",
    "Completion",
    "RewardFunction",
    "RewardSet",
    "Verdict",
    "as_reward_function",
    "call_with_timeout",
    "check_answer",
    "default_reward",
    "detect_kind",
    "extract_answer",
    "extract_boxed",
    "load_reward",
    "math_reward",
    "reward_set",
    "safe_rewards",
]
