"""Rewards: rule-based math answer checking and adapters for the reward functions users already have."""

from trapo.rewards.adapters import (
    FAILURE_KINDS,
    Completion,
    FailedScore,
    RewardFunction,
    RewardScores,
    RewardSet,
    as_reward_function,
    bounded_reward,
    default_reward,
    detect_kind,
    in_worker_process,
    load_reward,
    reward_set,
    score_rewards,
)
from trapo.rewards.math_answers import Verdict, check_answer, extract_answer, extract_boxed, math_reward
from trapo.rewards.timeout import CallTimeout, call_with_timeout

__all__ = [
    "FAILURE_KINDS",
    "CallTimeout",
    "Completion",
    "FailedScore",
    "RewardFunction",
    "RewardScores",
    "RewardSet",
    "Verdict",
    "as_reward_function",
    "bounded_reward",
    "call_with_timeout",
    "check_answer",
    "default_reward",
    "detect_kind",
    "extract_answer",
    "extract_boxed",
    "in_worker_process",
    "load_reward",
    "math_reward",
    "reward_set",
    "score_rewards",
]
