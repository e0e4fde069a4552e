"""Rewards as records: every kind TRL accepts (any subset of its keywords, async, None), what they log,
each bounded, and nothing hidden on the user's function."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from trapo.data import examples_from_rows
from trapo.rewards import Completion, Reward, RewardSet, detect_kind, reward_set, score_rewards

ROWS = examples_from_rows(
    [
        {"prompt": "1+1", "answer": "2", "solution": "2", "task": "math"},
        {"prompt": "2+2", "answer": "4", "solution": "4"},
    ]
)
COMPLETIONS = [Completion("2", [7, 8, 9]), Completion("5", [7])]


def by_ids(completion_ids, **kwargs):
    return [float(len(ids)) for ids in completion_ids]


def only_ids(completion_ids):
    return [float(len(ids)) for ids in completion_ids]


def only_state(completions, trainer_state):
    return [0.0 for _ in completions]


def columns_only(solution, **kwargs):
    return [1.0 for _ in solution]


@pytest.mark.parametrize("fn", [by_ids, only_ids, only_state, columns_only])
def test_any_subset_of_trls_keywords_is_a_trl_reward(fn):
    assert detect_kind(fn) == "trl"
    assert len(Reward(fn)(COMPLETIONS, ROWS)) == 2


def test_completion_ids_reach_a_reward_that_takes_only_them():
    assert Reward(only_ids)(COMPLETIONS, ROWS) == [3.0, 1.0]


def test_trls_own_reward_helpers_run():
    rewards = pytest.importorskip("trl.rewards")
    overlong = rewards.get_soft_overlong_punishment(max_completion_len=3, soft_punish_cache=2)
    assert Reward(overlong)(COMPLETIONS, ROWS) == [pytest.approx(-1.0), 0.0]
    repetition = rewards.get_repetition_penalty_reward(ngram_size=2, max_penalty=-1.0)
    assert len(Reward(repetition)([Completion("a", [1, 1, 1, 1]), Completion("b", [1, 2])], ROWS)) == 2
    think = Reward(rewards.think_format_reward, conversational=True)
    assert think([Completion("<think>\nx\n</think>2"), Completion("2")], ROWS) == [1.0, 0.0]


def test_none_entries_leave_a_function_out_and_all_none_fails():
    def only_math(completions, task, **kwargs):
        return [1.0 if t == "math" else None for t in task]

    def length(completions, **kwargs):
        return [0.5 for _ in completions]

    both = reward_set([only_math, length])
    assert both(COMPLETIONS, ROWS) == [1.5, 0.5]
    result = score_rewards(reward_set([only_math]), COMPLETIONS, ROWS)
    assert result.scores == [1.0, 0.0] and result.failures == {"nan": 1}


def test_async_rewards_run_concurrently_and_score_like_the_others():
    async def slow_a(prompts, completions, **kwargs):
        await asyncio.sleep(0.4)
        return [1.0 for _ in completions]

    async def slow_b(completions, solution, **kwargs):
        await asyncio.sleep(0.4)
        return [float(s in c) for c, s in zip(completions, solution, strict=True)]

    rewards = reward_set([slow_a, slow_b], [1.0, 2.0])
    t0 = time.perf_counter()
    assert rewards(COMPLETIONS, ROWS) == [3.0, 1.0]
    assert time.perf_counter() - t0 < 0.75  # together, not one after the other (0.8 s)
    assert rewards.pop_stats()["slow_b"].total == 1.0


def test_an_async_reward_is_bounded_and_its_failure_counted():
    async def hangs(completions, **kwargs):
        await asyncio.sleep(30)
        return [1.0 for _ in completions]

    t0 = time.perf_counter()
    result = score_rewards(reward_set([hangs], timeout=0.3), COMPLETIONS, ROWS)
    assert time.perf_counter() - t0 < 3
    assert result.failures == {"timeout": 2} and "timed out after 0.3 s" in result.first_error


def test_async_per_sample_and_awaited_outside_a_set():
    async def per_item(completion, ground_truth):
        return float(ground_truth in completion)

    assert Reward(per_item)(COMPLETIONS, ROWS) == [1.0, 0.0]


def test_what_a_reward_logs_is_collected():
    def logs(completions, log_metric, log_extra, **kwargs):
        log_metric("custom/len", sum(len(c) for c in completions))
        log_extra("verdict", ["ok" for _ in completions])
        return [0.0 for _ in completions]

    rewards = reward_set([logs])
    result = score_rewards(rewards, COMPLETIONS, ROWS)
    assert result.extra == {"verdict": ["ok", "ok"]}
    score_rewards(rewards, COMPLETIONS, ROWS)
    assert rewards.pop_metrics() == {"custom/len": (4.0, 2.0)}  # two calls: averaged over the step
    assert rewards.pop_metrics() == {}


def test_a_reward_in_a_worker_process_logs_too():
    def logs(completions, log_metric, **kwargs):
        log_metric("worker/calls", 1.0)
        return [1.0 for _ in completions]

    rewards = RewardSet([Reward(logs, process=True, timeout=20)])
    try:
        assert rewards(COMPLETIONS, ROWS) == [1.0, 1.0]
        assert rewards.pop_metrics() == {"worker/calls": (1.0, 1.0)}
    finally:
        rewards.close()


def test_a_record_leaves_the_users_function_as_it_was():
    def plain(completion, ground_truth):
        return 1.0

    before = set(vars(plain))
    reward = reward_set([plain], [0.5], timeout=2).rewards[0]
    assert set(vars(plain)) == before and reward.function is plain
    assert (reward.kind, reward.weight, reward.name, reward.timeout) == ("per_sample", 0.5, "plain", None)
    with pytest.raises(ValueError, match="unknown reward kind"):
        Reward(plain, kind="nope")


def test_std_per_function_is_recorded():
    def two(completions, **kwargs):
        return [1.0, 3.0]

    rewards = reward_set([two])
    rewards(COMPLETIONS, ROWS)
    total, squares, count = rewards.pop_stats()["two"]
    assert (total, count) == (4.0, 2.0) and math.sqrt(squares / count - (total / count) ** 2) == 1.0
