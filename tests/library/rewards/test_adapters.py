"""Reward adapters: each signature kind, forcing a kind, loading by spec, and failures counted."""

from __future__ import annotations

import math
import sys
import textwrap
from dataclasses import replace

import pytest

from trapo.data import Example
from trapo.rewards import (
    FailedScore,
    Reward,
    RewardSet,
    as_reward_function,
    default_reward,
    detect_kind,
    load_reward,
    math_reward,
    score_rewards,
)


def make_examples() -> list[Example]:
    return [
        Example(
            prompt=[{"role": "user", "content": "1+1?"}],
            answer="2",
            data_source="toy",
            expert_solutions=("1+1=2",),
            meta={"index": 0},
        ),
        Example(prompt=[{"role": "user", "content": "2+2?"}], answer="4", data_source="other", meta={"index": 1}),
    ]


COMPLETIONS = ["\\boxed{2}", "\\boxed{5}"]


def per_sample(completion, ground_truth):
    return float(ground_truth in completion)


def trl_reward(prompts, completions, ground_truth, **kwargs):
    # TRL passes every dataset column as a list; record what arrived
    trl_reward.seen = {"prompts": prompts, "kwargs": kwargs}
    return [float(g in c) for c, g in zip(completions, ground_truth, strict=True)]


def trl_no_kwargs(completions, solution):
    return [float(s in c) for c, s in zip(completions, solution, strict=True)]


def verl_score(data_source, solution_str, ground_truth, extra_info=None):
    return {"score": float(ground_truth in solution_str), "source": data_source, "index": extra_info["index"]}


def batch_reward(completions, examples):
    return [float(e.answer in c) for c, e in zip(completions, examples, strict=True)]


@pytest.mark.parametrize(
    ("fn", "kind"),
    [
        (per_sample, "per_sample"),
        (math_reward, "per_sample"),
        (lambda c, gt: 1.0, "per_sample"),
        (trl_reward, "trl"),
        (trl_no_kwargs, "trl"),
        (verl_score, "verl"),
        (batch_reward, "batch"),
    ],
)
def test_detect_kind(fn, kind):
    assert detect_kind(fn) == kind


def test_undetectable_signature_is_a_clear_error():
    with pytest.raises(ValueError, match=r"kind="):
        detect_kind(lambda x: 0.0)
    with pytest.raises(ValueError, match=r"unknown reward kind"):
        as_reward_function(per_sample, kind="nope")


@pytest.mark.parametrize("fn", [per_sample, trl_reward, trl_no_kwargs, verl_score, batch_reward, math_reward])
def test_every_kind_scores_the_same(fn):
    reward = as_reward_function(fn)
    assert reward(COMPLETIONS, make_examples()) == [1.0, 0.0]
    assert as_reward_function(reward) is not None  # wrapping a wrapped reward is fine
    assert as_reward_function(reward)(COMPLETIONS, make_examples()) == [1.0, 0.0]


def test_trl_gets_dataset_columns_as_lists():
    as_reward_function(trl_reward)(COMPLETIONS, make_examples())
    seen = trl_reward.seen
    assert seen["prompts"] == ["1+1?", "2+2?"]
    assert seen["kwargs"]["answer"] == ["2", "4"] and seen["kwargs"]["solution"] == ["2", "4"]
    assert seen["kwargs"]["data_source"] == ["toy", "other"]
    assert seen["kwargs"]["expert_solutions"] == [["1+1=2"], []]
    assert seen["kwargs"]["extra_info"][0] == {"index": 0, "expert_solutions": ["1+1=2"]}


def test_trl_conversational_format():
    def conv(prompts, completions, **kwargs):
        assert prompts[0] == [{"role": "user", "content": "1+1?"}]
        return [float("2" in c[0]["content"]) for c in completions]

    assert as_reward_function(conv, conversational=True)(COMPLETIONS, make_examples()) == [1.0, 0.0]


def test_forcing_a_kind():
    # two positional parameters named like a batch reward, but really per-sample
    def ambiguous(completions, examples):
        return float(examples in completions)

    assert as_reward_function(ambiguous, kind="per_sample")(COMPLETIONS, make_examples()) == [1.0, 0.0]


def test_default_reward_is_math_reward():
    reward = default_reward()
    assert reward(["x \\boxed{0.5}", "\\boxed{4}"], [make_examples()[0], make_examples()[1]]) == [0.0, 1.0]
    assert reward(["\\boxed{\\frac{4}{2}}"], make_examples()[:1]) == [1.0]


def test_score_rewards_falls_back_per_item_and_counts_failures():
    def flaky(completion, ground_truth):
        if "5" in completion:
            raise RuntimeError("boom")
        return 1.0

    result = score_rewards(as_reward_function(flaky), COMPLETIONS, make_examples())
    scores, failed = result.scores, result.n_failed
    assert scores == [1.0, 0.0] and failed == 1


def test_score_rewards_zeroes_non_finite_and_none():
    def odd(prompts, completions, **kwargs):
        return [None, math.inf]

    result = score_rewards(as_reward_function(odd), COMPLETIONS, make_examples())
    scores, failed = result.scores, result.n_failed
    assert scores == [0.0, 0.0] and failed == 2
    result = score_rewards(as_reward_function(lambda c, gt: math.nan), COMPLETIONS, make_examples())
    scores, failed = result.scores, result.n_failed
    assert scores == [0.0, 0.0] and failed == 2


def test_score_rewards_wrong_length_batch_fails_every_item():
    """One score for N completions is a broken reward: rescoring item by item would score each 1.0."""

    def short(completions, examples):
        return [1.0]  # one score, however many completions

    result = score_rewards(short, COMPLETIONS, make_examples())
    assert result.scores == [0.0, 0.0] and result.n_failed == 2
    assert result.failures == {"error": 2} and "returned 1 scores for 2 completions" in result.first_error


def test_score_rewards_counts_failures_by_kind():
    table = {"a": "high", "b": math.nan, "c": FailedScore("unverifiable", "bad ground truth"), "d": 1.0}

    def mixed(completions, examples):
        return [table[c] for c in completions]

    result = score_rewards(mixed, ["a", "b", "c", "d"], make_examples() * 2)
    assert result.scores == [0.0, 0.0, 0.0, 1.0]
    assert result.failures == {"non_number": 1, "nan": 1, "unverifiable": 1}


def test_default_reward_flags_an_unverifiable_ground_truth():
    bad = [replace(make_examples()[0], answer="\\frac{")]
    result = score_rewards(default_reward(), ["\\boxed{1}"], bad)
    assert result.scores == [0.0] and result.failures == {"unverifiable": 1}


def test_a_reward_in_a_worker_process_is_stopped_when_it_hangs_from_any_thread():
    import threading
    import time

    def hang(completion, ground_truth):
        if "5" in completion:
            time.sleep(30)
        return 1.0

    reward = RewardSet([Reward(hang, process=True, timeout=0.5)])
    out = {}

    def go():
        t0 = time.perf_counter()
        out["result"], out["s"] = score_rewards(reward, COMPLETIONS, make_examples()), time.perf_counter() - t0

    thread = threading.Thread(target=go)
    thread.start()
    thread.join()
    assert out["s"] < 3 and out["result"].failures == {"timeout": 2}
    assert reward(COMPLETIONS[:1], make_examples()[:1]) == [1.0]  # a new worker replaces the killed one


def test_score_rewards_all_good():
    result = score_rewards(default_reward(), COMPLETIONS, make_examples())
    assert (result.scores, result.n_failed) == ([1.0, 0.0], 0)


def test_load_reward_from_file_and_module(tmp_path, monkeypatch):
    path = tmp_path / "my_rewards.py"
    path.write_text(
        textwrap.dedent("""
        def compute_score(data_source, solution_str, ground_truth, extra_info=None):
            return 1.0 if ground_truth in solution_str else 0.0

        NOT_CALLABLE = 3
    """)
    )
    reward = load_reward(f"{path}:compute_score")
    assert reward(COMPLETIONS, make_examples()) == [1.0, 0.0]
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_rewards", None)
    assert load_reward("my_rewards:compute_score")(COMPLETIONS, make_examples()) == [1.0, 0.0]
    assert load_reward("trapo.rewards:math_reward")(COMPLETIONS, make_examples()) == [1.0, 0.0]
    assert load_reward("math")(COMPLETIONS, make_examples()) == [1.0, 0.0]

    with pytest.raises(ValueError, match=r"has no attribute 'missing'.*compute_score"):
        load_reward(f"{path}:missing")
    with pytest.raises(ValueError, match=r"'NOT_CALLABLE' is a int"):
        load_reward(f"{path}:NOT_CALLABLE")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.py"):
        load_reward(f"{tmp_path}/nowhere.py:f")
    with pytest.raises(ValueError, match=r"cannot import module 'no_such_module_xyz'"):
        load_reward("no_such_module_xyz:f")
    with pytest.raises(ValueError, match=r"expected 'module:function'"):
        load_reward("just_a_name")

    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('bad import')\n")
    with pytest.raises(ValueError, match=r"importing reward file .*broken\.py.*bad import"):
        load_reward(f"{broken}:f")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("import sys\nsys.exit(0)\n", r"it called sys.exit\(0\) while being imported"),
        ("raise SystemExit('no GPU')\n", r"it called sys.exit\('no GPU'\)"),
        ("def f(:\n", r"SyntaxError: .*line 1"),
        ("import no_such_dependency_xyz\n", r"ModuleNotFoundError: No module named 'no_such_dependency_xyz'"),
        ("raise KeyError('config')\n", r"KeyError: 'config'"),
    ],
    ids=["sys_exit_0", "system_exit_text", "syntax_error", "missing_dependency", "raises"],
)
def test_a_reward_module_that_fails_on_import_is_one_clear_error(tmp_path, monkeypatch, body, message):
    """As a file and as a module name: one ValueError naming the module (issue 24 #5), never SystemExit."""
    (tmp_path / "bad_reward_mod.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=rf"importing reward file .*bad_reward_mod\.py' failed: {message}"):
        load_reward(f"{tmp_path / 'bad_reward_mod.py'}:f")
    with pytest.raises(ValueError, match=rf"cannot import module 'bad_reward_mod': {message}"):
        load_reward("bad_reward_mod:f")
