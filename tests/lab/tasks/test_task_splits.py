"""Splits of the place-value design (``--task place-value``): determinism, disjointness (also from
pre-training), files, errors. The shortcut design (default) is tested in test_shortcut_task.py."""

from __future__ import annotations

import itertools
import json

import pyarrow.parquet as pq
import pytest

from trapo.data import Example
from trapo_lab.tasks import (
    PretrainMix,
    build_splits,
    make_splits,
    pool_of,
    pretraining_stream,
    tier_counts,
)

SMALL = {
    "n_train": 200,
    "n_val_per_tier": 10,
    "n_test_per_tier": 10,
    "n_skill_val": 10,
    "n_skill_test": 10,
    "task": "place-value",
}
PV = "place-value"


@pytest.fixture(scope="module")
def default_splits():
    return build_splits(task=PV)


def _prompts(examples):
    return [ex.prompt_text for ex in examples]


def test_tier_counts_by_hand():
    assert tier_counts(4000) == {1: 200, 2: 600, 3: 1000, 4: 1200, 5: 1000}
    assert tier_counts(7, [1, 1, 1, 1, 1]) == {1: 2, 2: 2, 3: 1, 4: 1, 5: 1}
    assert tier_counts(10, [0, 0, 1, 0, 1]) == {1: 0, 2: 0, 3: 5, 4: 0, 5: 5}


def test_default_sizes_and_names(default_splits):
    sizes = {name: len(examples) for name, examples in default_splits.items()}
    assert sizes == {"train": 4000, "val": 1000, "test": 2500, "val_skills": 400, "test_skills": 1000}
    test_sources = {ex.data_source for ex in default_splits["test"]}
    assert test_sources == {f"arith-t{t}" for t in range(1, 6)}
    assert {ex.data_source for ex in default_splits["test_skills"]} == {"reverse", "sort"}
    for name, examples in default_splits.items():
        pool = name.split("_")[0]
        for ex in examples:
            assert ex.meta["split"] == pool
            assert ex.meta["tier"] == (0 if ex.data_source in ("reverse", "sort") else int(ex.data_source[-1]))


def test_splits_are_disjoint_unique_and_in_their_pools(default_splits):
    seen: dict[str, str] = {}
    for name, examples in default_splits.items():
        prompts = _prompts(examples)
        assert len(prompts) == len(set(prompts)), f"duplicates in {name}"
        pool = name.split("_")[0]
        for ex in examples:
            assert pool_of(ex.data_source, ex.prompt_text, PV) == pool
            assert ex.prompt_text not in seen, f"{ex.prompt_text} in {seen.get(ex.prompt_text)} and {name}"
            seen[ex.prompt_text] = name


def test_other_seed_other_problems_same_pools():
    a, b = build_splits(seed=0, **SMALL), build_splits(seed=1, **SMALL)
    assert _prompts(a["test"]) != _prompts(b["test"])
    held_out_a = set(_prompts(a["val"] + a["test"]))
    assert not held_out_a & set(_prompts(b["train"]))  # pools do not depend on the seed


def test_build_splits_is_deterministic():
    a, b = build_splits(seed=3, **SMALL), build_splits(seed=3, **SMALL)
    assert a == b


def test_pretraining_stream_never_shows_validation_or_test_problems(default_splits):
    held_out = set(_prompts(default_splits["val"] + default_splits["test"]))
    held_out |= set(_prompts(default_splits["val_skills"] + default_splits["test_skills"]))
    stream = list(itertools.islice(pretraining_stream(0, PretrainMix.for_task(PV, expert_share=0.5)), 20_000))
    assert not held_out & {prompt for prompt, _, _ in stream}
    assert all(pool_of(source, prompt, PV) == "train" for prompt, _, source in stream)
    # the mix is respected: tiers 1-2 dominate, skills ~12%, expert style present
    sources = [source for _, _, source in stream]
    assert 0.10 < (sources.count("reverse") + sources.count("sort")) / len(sources) < 0.14
    assert sources.count("arith-t2") > sources.count("arith-t3") * 3 > sources.count("arith-t5") * 3
    two_move = [s for _, s, src in stream if src.startswith("arith") and s.count("=") > int(src[-1])]
    n_arith = sum(src.startswith("arith") for src in sources)
    assert 0.15 < len(two_move) / n_arith < 0.5  # half in expert style, of which most have a two-move step


def test_pretraining_stream_is_deterministic():
    a = list(itertools.islice(pretraining_stream(5), 500))
    b = list(itertools.islice(pretraining_stream(5), 500))
    c = list(itertools.islice(pretraining_stream(6), 500))
    assert a == b and a != c


def test_bad_inputs_name_the_argument():
    for name in ("n_train", "n_val_per_tier", "n_test_per_tier"):
        for bad in (0, -3):
            with pytest.raises(ValueError, match=name):
                build_splits(**{**SMALL, name: bad})
    with pytest.raises(ValueError, match="train_tier_weights"):
        build_splits(**SMALL, train_tier_weights=(1, 1, 1))
    with pytest.raises(ValueError, match="skill"):
        build_splits(**SMALL, skills=("count",))
    with pytest.raises(ValueError, match="expert_share"):
        PretrainMix(expert_share=1.5)
    with pytest.raises(ValueError, match="tier"):
        from trapo_lab.tasks import arithmetic_examples

        arithmetic_examples("test", {6: 3}, task=PV)  # no OOD tiers in the place-value design


def test_tier1_pool_exhaustion_is_a_clear_error():
    with pytest.raises(ValueError, match=r"arith-t1.*test pool"):
        build_splits(**{**SMALL, "n_test_per_tier": 600})


def test_make_splits_writes_parquet_jsonl_and_manifest(tmp_path):
    out = tmp_path / "data"
    paths = make_splits(out, seed=2, **SMALL)
    splits = build_splits(seed=2, **SMALL)
    assert set(paths) == {"train", "val", "test", "val_skills", "test_skills"}
    for name, path in paths.items():
        rows = pq.read_table(path).to_pylist()
        with open(out / f"{name}.jsonl", encoding="utf-8") as f:
            jsonl_rows = [json.loads(line) for line in f]
        expected = [ex.to_verl_row(index=i, split=name.split("_")[0]) for i, ex in enumerate(splits[name])]
        assert jsonl_rows == expected
        assert rows == expected
        back = Example(
            prompt=rows[0]["prompt"],
            answer=rows[0]["reward_model"]["ground_truth"],
            expert_solutions=tuple(rows[0]["extra_info"]["expert_solutions"]),
            data_source=rows[0]["data_source"],
        )
        assert back.expert_solutions == splits[name][0].expert_solutions
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["test"] == {f"arith-t{t}": 10 for t in range(1, 6)}
    assert manifest["counts"]["test_skills"] == {"reverse": 10, "sort": 10}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind


def test_make_splits_reuses_same_config_and_refuses_other_content(tmp_path):
    out = tmp_path / "data"
    make_splits(out, **SMALL)
    stamp = (out / "train.parquet").stat().st_mtime_ns
    make_splits(out, **SMALL)  # same config: reused, not rewritten
    assert (out / "train.parquet").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=str(out)):
        make_splits(out, **{**SMALL, "n_train": 201})
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="other"):
        make_splits(other, **SMALL)
    assert (other / "notes.txt").read_text() == "mine"
    make_splits(other, force=True, **SMALL)
    assert not (other / "notes.txt").exists() and (other / "train.parquet").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        make_splits(tmp_path / "file", **SMALL)


def test_tier1_pools_match_the_documented_sizes():
    from trapo_lab.tasks.arithmetic import apply_op

    problems = {
        f"{s}{op}{x}"
        for s in range(1, 21)
        for op, xs in (("+", range(1, 31)), ("-", range(1, 31)), ("*", range(2, 10)))
        for x in xs
        if 0 <= apply_op(s, op, x) <= 199
    }
    pools = [pool_of("arith-t1", p, PV) for p in problems]
    assert len(problems) == 970
    assert (pools.count("test"), pools.count("val"), pools.count("train")) == (542, 224, 204)


def test_native_expert_style_is_the_on_policy_control_on_the_same_problems():
    place_value = build_splits(**SMALL)  # task place-value
    native = build_splits(**SMALL, expert_style="native")
    for name in place_value:  # same problems, answers and native solutions in every split
        assert [(ex.prompt_text, ex.answer, ex.meta) for ex in native[name]] == [
            (ex.prompt_text, ex.answer, ex.meta) for ex in place_value[name]
        ]
    chains = [ex for ex in native["train"] if ex.data_source.startswith("arith")]
    assert chains and all(ex.expert_solutions == (ex.meta["native_solution"],) for ex in chains)
    # the default style differs from native wherever there is something to decompose
    pairs = zip(place_value["train"], native["train"], strict=True)
    differ = [a for a, b in pairs if a.expert_solutions != b.expert_solutions]
    assert len(differ) > len(chains) // 2
    with pytest.raises(ValueError, match="expert_style"):
        build_splits(**SMALL, expert_style="verbose")


def test_default_expert_style_keeps_the_config_hash_of_existing_splits():
    from trapo_lab.tasks import SplitConfig

    # the hash a default directory written before --expert-style existed carries (artifacts/data/manifest.json)
    assert SplitConfig(task=PV).hash() == "c3a175a4f0cec7ae"
    assert SplitConfig(task=PV, expert_style="native").hash() != SplitConfig(task=PV).hash()
    assert SplitConfig().hash() != SplitConfig(task=PV).hash()  # the shortcut design (default)
