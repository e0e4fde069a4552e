"""evaluate() on a tiny random model: shapes, independent samples, determinism, reporting."""

from __future__ import annotations

import json

import pytest

from trapo.data import Example
from trapo.evaluate import EvalReport, avg_at_k, evaluate, mean_pass_at_k
from trapo.rewards import Verdict
from trapo.rollout import SamplingParams


def problems() -> list[Example]:
    return [
        Example(prompt=[{"role": "user", "content": "What is 1+1?"}], answer="2", data_source="easy"),
        Example(prompt=[{"role": "user", "content": "What is 2+5?"}], answer="7", data_source="easy"),
        Example(prompt=[{"role": "user", "content": "Solve x+3=4."}], answer="1", data_source="hard"),
    ]


def contains_a_vowel(completion: str, ground_truth: str) -> float:
    """A reward a random model earns about half the time: something to count."""
    return float(any(v in completion for v in "aeiou"))


def run(tiny_model, **kwargs) -> EvalReport:
    model, tokenizer = tiny_model
    options = dict(k=4, max_new_tokens=6, progress=False, reward_fn=contains_a_vowel, keep_completions=True)
    options.update(kwargs)
    return evaluate(model, tokenizer, problems(), **options)


def test_shapes_and_groups(tiny_model):
    report = run(tiny_model)
    assert [p.group for p in report.problems] == ["easy", "easy", "hard"]
    assert list(report.groups) == ["easy", "hard"]
    assert report.groups["easy"].n_problems == 2 and report.overall.n_problems == 3
    for p in report.problems:
        assert len(p.correct) == len(p.completions) == len(p.completion_tokens) == 4
        assert all(1 <= n <= 6 for n in p.completion_tokens)
    assert report.pass_ks == (1, 2, 4)
    assert set(report.overall.pass_at_k) == {1, 2, 4}
    assert report.overall.tokens_per_s > 0


def test_metrics_match_the_per_problem_correctness(tiny_model):
    report = run(tiny_model, k=6, pass_ks=(1, 3, 6))
    # the reward, recomputed from the stored completions, gives the stored correctness
    for p in report.problems:
        assert p.correct == [contains_a_vowel(c, p.answer) >= 0.5 for c in p.completions]
    matrix = report.correctness()
    assert report.overall.avg_at_k == pytest.approx(avg_at_k(matrix))
    assert report.overall.pass_at_k[3] == pytest.approx(mean_pass_at_k(matrix, 3))
    assert report.groups["hard"].avg_at_k == pytest.approx(sum(report.problems[2].correct) / 6)
    assert 0 < report.overall.avg_at_k < 1  # a random model: some samples have vowels, some don't
    curve = report.pass_at_k_curve()
    assert list(curve) == [1, 2, 3, 4, 5, 6] and curve[1] == pytest.approx(report.overall.avg_at_k)
    assert all(a <= b + 1e-12 for a, b in zip(list(curve.values()), list(curve.values())[1:], strict=False))


def test_samples_of_a_problem_differ(tiny_model):
    """The k samples are independent draws, not one seed repeated k times."""
    report = run(tiny_model, k=8, max_new_tokens=8)
    for p in report.problems:
        assert len(set(p.completions)) >= 6, p.completions


def test_same_seed_same_completions_other_seed_different(tiny_model):
    a, b, c = run(tiny_model, seed=1), run(tiny_model, seed=1), run(tiny_model, seed=2)
    texts = lambda r: [p.completions for p in r.problems]  # noqa: E731
    assert texts(a) == texts(b)
    assert texts(a) != texts(c)


def test_greedy_samples_are_identical(tiny_model):
    report = run(tiny_model, sampling=SamplingParams(temperature=0.0))
    for p in report.problems:
        assert len(set(p.completions)) == 1


def test_unverifiable_ground_truths_are_reported_not_scored(tiny_model):
    model, tokenizer = tiny_model
    examples = [*problems(), Example(prompt=[{"role": "user", "content": "?"}], answer="", data_source="easy")]
    report = evaluate(model, tokenizer, examples, k=2, max_new_tokens=4, progress=False)  # default math_reward
    assert report.groups["easy"].n_unverifiable == 1 and report.groups["easy"].n_scored == 2
    assert report.problems[3].unverifiable and report.problems[3].statuses == ["unverifiable_ground_truth"] * 2
    assert len(report.correctness("easy")) == 2  # left out of the accuracies
    assert report.overall.avg_at_k == 0.0  # a random model never boxes the right answer


def test_verdict_returning_reward_and_groups_by_callable(tiny_model):
    def always_timeout(completion, ground_truth):
        return Verdict("timeout")

    report = run(tiny_model, reward_fn=always_timeout, group_by=lambda ex: ex.answer)
    assert list(report.groups) == ["2", "7", "1"]
    assert report.overall.n_timeouts == 12 and report.overall.avg_at_k == 0.0


def test_report_serialises(tiny_model):
    report = run(tiny_model)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["overall"]["n_problems"] == 3 and "avg@4" in data["overall"] and "pass@2" in data["groups"]["easy"]
    assert data["settings"]["k"] == 4 and data["settings"]["reward"] == "contains_a_vowel"
    assert len(data["problems"]) == 3 and len(data["problems"][0]["correct"]) == 4
    assert data["group_mean"]["avg@4"] == pytest.approx(
        (report.groups["easy"].avg_at_k + report.groups["hard"].avg_at_k) / 2
    )
    table = report.table()
    lines = table.splitlines()
    assert lines[0].startswith("| group | problems | avg@4 | pass@1 | pass@2 | pass@4 |")
    assert len(lines) == 2 + 2 + 2  # header, rule, two groups, all problems, mean of groups
    assert f"| easy | 2 | {100 * report.groups['easy'].avg_at_k:.1f} |" in table


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be >= 1"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"batch_size": 0}, "batch_size"),
        ({"k": 2, "pass_ks": (4,)}, "pass@k k must be in 1..2"),
    ],
)
def test_bad_arguments(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run(tiny_model, **kwargs)


def test_progress_per_decode_step_gives_the_same_report(tiny_model):
    quiet = run(tiny_model, seed=5, batch_size=4)
    shown = run(tiny_model, seed=5, batch_size=4, progress=True)
    assert [p.completions for p in shown.problems] == [p.completions for p in quiet.problems]


def test_auto_batch_size(tiny_model):
    from trapo.evaluate import MAX_AUTO_BATCH_SIZE, auto_batch_size

    model, _ = tiny_model
    assert auto_batch_size(model, 600) == MAX_AUTO_BATCH_SIZE  # a tiny model's cache is small
    assert auto_batch_size(model, 10**9) == 8  # never below 8 rows
    assert auto_batch_size(None, 600) == 64
    assert run(tiny_model).settings["batch_size"] == MAX_AUTO_BATCH_SIZE
