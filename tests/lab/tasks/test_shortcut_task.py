"""The shortcut design (the default task, issue 15): short-answer base, step-by-step expert, OOD column.

Splits never overlap, OOD tiers are never in training or pre-training, the expert's form parses and
verifies, and the old design stays reachable by its flag.
"""

from __future__ import annotations

import itertools
import random

import pytest

from trapo.rewards import math_reward
from trapo_lab.tasks import (
    OOD_TIERS,
    SHORTCUT_RANGES,
    TIERS,
    PretrainMix,
    SplitConfig,
    arithmetic_examples,
    build_splits,
    parse_chain,
    pool_of,
    pretraining_stream,
    sample_chain,
    short_solution,
    solution_style,
    split_files,
    step_solution,
)
from trapo_lab.tasks.arithmetic import ChainProblem, apply_op, writes_steps

SMALL = {"n_train": 300, "n_val_per_tier": 20, "n_test_per_tier": 30, "n_skill_val": 10, "n_skill_test": 10}
WORKED = ChainProblem(37, (("+", 5), ("-", 8), ("*", 2)))


@pytest.fixture(scope="module")
def splits():
    return build_splits(**SMALL)


def test_worked_example_forms():
    assert WORKED.values == [37, 42, 34, 68]
    assert step_solution(WORKED) == "37+5=42\n\n42-8=34\n\n34*2=68\n\n\\boxed{68}"
    assert short_solution(WORKED) == "\\boxed{68}"
    one = ChainProblem(37, (("+", 5),))
    assert short_solution(one) == step_solution(one) == "37+5=42\n\n\\boxed{42}"  # single ops: a written step


def test_solution_style_of_the_shortcut_task():
    assert solution_style(step_solution(WORKED)) == "expert"
    assert solution_style(short_solution(WORKED)) == "native"
    assert solution_style("37+5=42\n\n\\boxed{34}") == "expert"  # the form, not the arithmetic
    for other in ("", "37+5=\n\n\\boxed{68}", "the answer\n\n\\boxed{68}", "37+5=42=40+2\n\n\\boxed{1}"):
        assert solution_style(other) == "other"
    with pytest.raises(ValueError, match="task"):
        solution_style("x", "other-task")


@pytest.mark.parametrize("tier", (*TIERS, *OOD_TIERS))
def test_sampled_chains_stay_in_the_shortcut_ranges(tier):
    rng = random.Random(tier)
    for _ in range(300):
        problem = sample_chain(rng, tier, SHORTCUT_RANGES)
        assert 1 <= problem.start <= 99 and problem.tier == tier
        assert all(0 <= v <= 99 for v in problem.values)
        for op, x in problem.steps:
            assert (2 <= x <= 5) if op == "*" else (1 <= x <= 9)


def test_default_splits_sizes_sources_and_ood_files(splits):
    assert (
        set(splits)
        == set(split_files())
        == {"train", "val", "test", "val_skills", "test_skills", "val_ood", "test_ood"}
    )
    assert {ex.data_source for ex in splits["val"]} == {f"arith-t{t}" for t in TIERS}
    assert {ex.data_source for ex in splits["test_ood"]} == {"ood-t6", "ood-t7"}
    assert len(splits["val_ood"]) == 2 * 20 and len(splits["test_ood"]) == 2 * 30
    assert {ex.meta["tier"] for ex in splits["train"]} <= set(TIERS)
    for ex in splits["val_ood"] + splits["test_ood"]:
        assert ex.meta["tier"] in OOD_TIERS and parse_chain(ex.prompt_text).tier == ex.meta["tier"]


def test_splits_never_overlap_and_respect_their_pools(splits):
    seen: dict[str, str] = {}
    for name, examples in splits.items():
        pool = name.split("_")[0]
        for ex in examples:
            assert pool_of(ex.data_source, ex.prompt_text) == pool
            assert ex.prompt_text not in seen, f"{ex.prompt_text} in {seen.get(ex.prompt_text)} and {name}"
            seen[ex.prompt_text] = name


def test_every_expert_solution_parses_verifies_and_is_in_the_expert_form(splits):
    for name in ("train", "val", "test", "val_ood", "test_ood"):
        for ex in splits[name]:
            problem = parse_chain(ex.prompt_text)
            (expert,) = ex.expert_solutions  # the rewrite form (default): 37+5=42-8*2
            paragraphs = expert.split("\n\n")
            assert len(paragraphs) == problem.tier + 1 and paragraphs[-1] == f"\\boxed{{{problem.answer}}}"
            for i, paragraph in enumerate(paragraphs[:-1]):
                left, right = paragraph.split("=")
                step, rest = parse_chain(left), parse_chain(right)
                assert step.start == problem.values[i] and step.tier == 1 and step.answer == problem.values[i + 1]
                assert rest.start == step.answer and rest.steps == problem.steps[i + 1 :]
            assert math_reward(expert, ex.answer) == 1.0
            assert math_reward(ex.meta["native_solution"], ex.answer) == 1.0
            assert solution_style(expert) == "expert"
            assert solution_style(ex.meta["native_solution"]) == ("expert" if problem.tier == 1 else "native")


def test_ood_tiers_never_in_training_or_pre_training(splits):
    with pytest.raises(ValueError, match="out-of-distribution"):
        arithmetic_examples("train", {6: 2})
    stream = list(itertools.islice(pretraining_stream(0, PretrainMix(step_share=0.3)), 20_000))
    assert sum(writes_steps(s) for _, s, src in stream if src.startswith("arith") and src != "arith-t1") > 1000
    held_out = {
        ex.prompt_text
        for name in ("val", "test", "val_ood", "test_ood", "val_skills", "test_skills")
        for ex in splits[name]
    }
    assert not held_out & {prompt for prompt, _, _ in stream}
    assert all(pool_of(source, prompt) == "train" for prompt, _, source in stream)
    assert {parse_chain(p).tier for p, _, src in stream if src.startswith("arith")} == set(TIERS)
    assert not any(src.startswith("ood") for _, _, src in stream)


def test_pretraining_stream_forms_follow_the_mix():
    def forms(mix):
        stream = itertools.islice(pretraining_stream(1, mix), 20_000)
        multi = [(p, s) for p, s, src in stream if src.startswith("arith") and src != "arith-t1"]
        singles = [(p, s) for p, s, src in itertools.islice(pretraining_stream(1, mix), 5_000) if src == "arith-t1"]
        return multi, singles

    multi, singles = forms(PretrainMix(step_share=0))
    assert all(s == short_solution(parse_chain(p)) and solution_style(s) == "native" for p, s in multi)
    assert singles and all(s == step_solution(parse_chain(p)) for p, s in singles)
    multi, _ = forms(PretrainMix(step_share=0.2, step_form="steps", step_layout="paragraphs"))
    share = sum(solution_style(s) == "expert" for _, s in multi) / len(multi)
    assert 0.17 < share < 0.23
    multi, _ = forms(PretrainMix())  # the default: 20% written out in the rewrite form, on one line
    written = [(p, s) for p, s in multi if writes_steps(s)]
    assert 0.17 < len(written) / len(multi) < 0.23
    assert all(s == step_solution(parse_chain(p), "rewrite", "line") for p, s in written)
    with pytest.raises(ValueError, match="step_share"):
        PretrainMix(step_share=1.5)
    with pytest.raises(ValueError, match="expert_share"):
        PretrainMix(expert_share=0.1)  # a place-value knob
    with pytest.raises(ValueError, match="step_share"):
        PretrainMix.for_task("place-value", step_share=0.1)


def test_tier1_pools_match_the_documented_sizes():
    r = SHORTCUT_RANGES
    problems = {
        f"{s}{op}{x}"
        for s in range(r.start[0], r.start[1] + 1)
        for op, xs in (("+", range(1, 10)), ("-", range(1, 10)), ("*", range(2, 6)))
        for x in xs
        if 0 <= apply_op(s, op, x) <= 99
    }
    pools = [pool_of("arith-t1", p) for p in problems]
    assert len(problems) == 1826
    counts = (pools.count("test"), pools.count("val"), pools.count("train"))
    assert counts[0] >= 500 and counts[1] >= 200 and counts[2] >= 1000, counts


def test_old_design_is_reachable_by_its_flag():
    old = build_splits(**SMALL, task="place-value")
    assert "val_ood" not in old
    assert any("=" in s.split("\n\n")[0] and s.count("=") > 1 for ex in old["train"] for s in ex.expert_solutions)
    assert SplitConfig(task="place-value").hash() == "c3a175a4f0cec7ae"  # splits written before issue 15
    with pytest.raises(ValueError, match="task"):
        SplitConfig(task="nonsense")


def test_step_forms_and_layouts():
    from trapo_lab.tasks.arithmetic import step_lines, writes_steps

    assert step_lines(WORKED, "rewrite") == ["37+5=42-8*2", "42-8=34*2", "34*2=68"]
    assert step_solution(WORKED, "rewrite") == "37+5=42-8*2\n\n42-8=34*2\n\n34*2=68\n\n\\boxed{68}"
    line = step_solution(WORKED, "steps", "line")
    assert line == "37+5=42;42-8=34;34*2=68\n\n\\boxed{68}"
    assert solution_style(step_solution(WORKED, "rewrite")) == "expert"
    assert solution_style(line) == "other" and writes_steps(line)  # steps, not in the expert's layout
    assert not writes_steps(short_solution(WORKED)) and writes_steps(step_solution(WORKED))
    for form in ("steps", "rewrite"):  # every rewritten step is a correct chain, ending at the answer
        for left, right in (s.split("=") for s in step_lines(WORKED, form)):
            assert (parse_chain(left).tier == 1 and parse_chain(right).answer == WORKED.answer) or form == "steps"
    with pytest.raises(ValueError, match="form"):
        step_lines(WORKED, "prose")
    with pytest.raises(ValueError, match="layout"):
        step_solution(WORKED, "steps", "columns")


def test_rewrite_expert_style_and_line_layout_in_pre_training():
    from trapo_lab.tasks.arithmetic import writes_steps

    rewrite = build_splits(**SMALL, expert_style="rewrite")
    for ex in rewrite["train"]:
        assert ex.expert_solutions == (step_solution(parse_chain(ex.prompt_text), "rewrite"),)
        assert math_reward(ex.expert_solutions[0], ex.answer) == 1.0
    mix = PretrainMix(step_share=0.5, step_form="rewrite", step_layout="line")
    stream = list(itertools.islice(pretraining_stream(2, mix), 3000))
    written = [(p, s) for p, s, src in stream if src.startswith("arith") and src != "arith-t1" and writes_steps(s)]
    assert written and all(s == step_solution(parse_chain(p), "rewrite", "line") for p, s in written)
    assert all(solution_style(s) == "other" for _, s in written)
    with pytest.raises(ValueError, match="step_layout"):
        PretrainMix(step_layout="columns")
