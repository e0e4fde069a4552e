"""Rewards: rule-based math answer checking, reward records and the adapters for the signatures users have.

A reward is a :class:`Reward` record (function, kind, weight, name, timeout); :class:`RewardSet` runs
several (each bounded; async ones concurrently) and :func:`score_rewards` counts what failed.
"""

from trapo.rewards.adapters import (
    TRL_KEYWORDS,
    Completion,
    FailedScore,
    RewardLog,
    detect_kind,
)
from trapo.rewards.math_answers import Verdict, check_answer, extract_answer, extract_boxed, math_reward
from trapo.rewards.records import Reward, as_reward, as_reward_function, default_reward, load_reward
from trapo.rewards.scoring import FAILURE_KINDS, RewardScores, RewardSet, reward_identity, reward_set, score_rewards
from trapo.rewards.timeout import CallTimeout, call_with_timeout

__all__ = [
    "FAILURE_KINDS",
    "TRL_KEYWORDS",
    "CallTimeout",
    "Completion",
    "FailedScore",
    "Reward",
    "RewardLog",
    "RewardScores",
    "RewardSet",
    "Verdict",
    "as_reward",
    "as_reward_function",
    "call_with_timeout",
    "check_answer",
    "default_reward",
    "detect_kind",
    "extract_answer",
    "extract_boxed",
    "load_reward",
    "math_reward",
    "reward_identity",
    "reward_set",
    "score_rewards",
]
