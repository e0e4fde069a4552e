"""The place-value design's problems and solution styles (``--task place-value``, kept for the record):
worked examples, invariants, rewards. The shortcut design (default) is tested in test_shortcut_task.py."""

from __future__ import annotations

import random
import re

import pytest

from trapo.rewards import math_reward
from trapo_lab.tasks import (
    EXPERT_VARIANTS,
    TIERS,
    ChainProblem,
    build_splits,
    expert_solution,
    native_solution,
    parse_chain,
    sample_chain,
    sample_skill,
    skill_solution,
)
from trapo_lab.tasks.arithmetic import expert_step

WORKED = ChainProblem(4, (("*", 5), ("*", 9), ("-", 28), ("+", 26), ("-", 23)))


@pytest.fixture(scope="module")
def small_splits():
    return build_splits(
        n_train=300, n_val_per_tier=20, n_test_per_tier=20, n_skill_val=20, n_skill_test=20, task="place-value"
    )


def test_worked_example_expression_and_values():
    assert WORKED.expression == "4*5*9-28+26-23"
    assert WORKED.values == [4, 20, 180, 152, 178, 155]
    assert WORKED.answer == 155 and WORKED.tier == 5
    assert parse_chain("4*5*9-28+26-23") == WORKED


def test_native_solution_worked_example():
    assert native_solution(WORKED) == "4*5=20\n\n20*9=180\n\n180-28=152\n\n152+26=178\n\n178-23=155\n\n\\boxed{155}"


def test_expert_solutions_worked_example():
    # 4*5 and 20*9 have nothing to decompose; -28, +26, -23 are split into tens and units.
    assert expert_solution(WORKED, "tens") == (
        "4*5=20\n\n20*9=180\n\n180-28=160-8=152\n\n152+26=172+6=178\n\n178-23=158-3=155\n\n\\boxed{155}"
    )
    assert expert_solution(WORKED, "units") == (
        "4*5=20\n\n20*9=180\n\n180-28=172-20=152\n\n152+26=158+20=178\n\n178-23=175-20=155\n\n\\boxed{155}"
    )


def test_expert_multiplication_uses_partial_products():
    assert expert_step(13, "*", 7, "tens") == "13*7=70+21=91"
    assert expert_step(13, "*", 7, "units") == "13*7=21+70=91"
    assert expert_step(30, "*", 3, "tens") == "30*3=90"  # a multiple of ten: nothing to split
    assert expert_step(45, "+", 20, "units") == "45+20=65"
    assert expert_step(45, "-", 7, "tens") == "45-7=38"


def test_bad_variant_and_tier_raise():
    with pytest.raises(ValueError, match="variant"):
        expert_solution(WORKED, "hundreds")
    for bad in (0, 8, -1, "3", 2.0, True):
        with pytest.raises(ValueError, match="tier"):
            sample_chain(random.Random(0), bad)


def test_bad_expression_raises():
    for bad in ("", "x+1", "3+", "3/4"):
        with pytest.raises(ValueError, match="expression"):
            parse_chain(bad)


@pytest.mark.parametrize("tier", TIERS)
def test_sampled_chains_stay_in_range_and_are_deterministic(tier):
    a = [sample_chain(random.Random(7), tier) for _ in range(1)]
    rng1, rng2 = random.Random(11), random.Random(11)
    batch1 = [sample_chain(rng1, tier) for _ in range(200)]
    batch2 = [sample_chain(rng2, tier) for _ in range(200)]
    assert batch1 == batch2 and a[0].tier == tier
    for problem in batch1:
        assert 1 <= problem.start <= 20 and problem.tier == tier
        assert all(0 <= v <= 199 for v in problem.values)
        for op, x in problem.steps:
            assert (2 <= x <= 9) if op == "*" else (1 <= x <= 30)


_EQUATION = re.compile(r"^\d+(?:[-+*]\d+)(?:=\d+(?:[-+]\d+)?)*$")


def _check_chain_paragraphs(solution: str, problem: ChainProblem) -> None:
    """Every paragraph but the last is an equation chain whose parts are all equal (evaluated left to
    right), starting from the running value; the last is the boxed answer."""
    paragraphs = solution.split("\n\n")
    assert paragraphs[-1] == f"\\boxed{{{problem.answer}}}"
    assert len(paragraphs) == problem.tier + 1
    for paragraph, before, after in zip(paragraphs[:-1], problem.values[:-1], problem.values[1:], strict=True):
        assert _EQUATION.match(paragraph), paragraph
        parts = paragraph.split("=")
        assert parts[0].startswith(str(before))
        for part in parts:
            assert parse_chain(part).answer == after, paragraph


def test_every_solution_is_arithmetically_correct_and_earns_reward_1(small_splits):
    checked = 0
    for split in ("train", "val", "test"):
        for ex in small_splits[split]:
            problem = parse_chain(ex.prompt_text)
            assert ex.answer == str(problem.answer)
            for solution in (*ex.expert_solutions, ex.meta["native_solution"]):
                _check_chain_paragraphs(solution, problem)
                assert math_reward(solution, ex.answer) == 1.0, solution
                checked += 1
    assert checked > 600


def test_skill_solutions_earn_reward_1(small_splits):
    for ex in small_splits["val_skills"] + small_splits["test_skills"]:
        assert ex.expert_solutions == (f"\\boxed{{{ex.answer}}}",)
        assert math_reward(ex.expert_solutions[0], ex.answer) == 1.0
        assert math_reward("\\boxed{1}", ex.answer) == 0.0


def test_expert_style_uses_only_characters_pre_training_shows():
    rng = random.Random(0)
    native_chars, expert_chars = set(), set()
    for tier in TIERS:
        for _ in range(100):
            problem = sample_chain(rng, tier)
            native_chars |= set(native_solution(problem))
            for variant in EXPERT_VARIANTS:
                expert_chars |= set(expert_solution(problem, variant))
    assert expert_chars <= native_chars
    assert native_chars == set("0123456789+-*=\n\\boxed{}")


def test_reverse_and_sort_skills():
    rng = random.Random(3)
    for _ in range(300):
        rev = sample_skill(rng, "reverse")
        assert 5 <= len(rev.digits) <= 8 and rev.digits[0] != "0" and rev.digits[-1] != "0"
        assert rev.answer == rev.digits[::-1] and rev.expression == "R:" + rev.digits
        srt = sample_skill(rng, "sort")
        assert "0" not in srt.digits and srt.answer == "".join(sorted(srt.digits))
    assert skill_solution(type(rev)("reverse", "129724")) == "\\boxed{427921}"
    with pytest.raises(ValueError, match="skill"):
        sample_skill(rng, "count")


def test_two_expert_solutions_where_a_step_decomposes(small_splits):
    for ex in small_splits["train"]:
        problem = parse_chain(ex.prompt_text)
        decomposable = any(
            expert_step(v, op, x, "tens") != f"{v}{op}{x}={r}"
            for v, (op, x), r in zip(problem.values, problem.steps, problem.values[1:], strict=False)
        )
        assert len(ex.expert_solutions) == (2 if decomposable else 1)


def test_solution_style_detector(small_splits):
    from trapo_lab.tasks import solution_style

    def style(text):
        return solution_style(text, "place-value")

    assert style(expert_solution(WORKED, "tens")) == "expert"
    assert style(expert_solution(WORKED, "units")) == "expert"
    assert style(native_solution(WORKED)) == "native"
    assert style("13*7=70+21=91\n\n91-3=88\n\n\\boxed{88}") == "expert"
    assert style("4*5=20\n\n\\boxed{20}") == "native"
    for other in ("\\boxed{20}", "", "4*5=20\n\nthe answer", "4*5=\n\n\\boxed{20}", "R:123"):
        assert style(other) == "other"
    for ex in small_splits["train"]:
        assert style(ex.meta["native_solution"]) == "native"
        styles = {style(s) for s in ex.expert_solutions}
        assert styles == ({"expert"} if len(ex.expert_solutions) == 2 else {"native"})
