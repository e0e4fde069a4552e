"""Run-cache keys survive new config fields: TRL's GRPOConfig fields at their defaults and the LoRA settings
gathered into one field hash as before, so that cached comparison runs are still found."""

from __future__ import annotations

from pathlib import Path

from trapo_lab.compare.cache import RunCache, RunKey
from trapo_lab.compare.spec import CompareSpec

# run_hash of these runs as computed before TRAPOConfig took TRL's fields (main at 8c9b575b), whose spec saved a
# checkpoint every 40 steps (curve_points=5; the default is now 10, which is a different run)
BEFORE = {"trapo": "d2c0842f8d", "grpo": "98ccc058a8", "luffy": "a70f9a2e31", "sft-then-grpo": "d4b4116227"}


def _cache(spec: CompareSpec) -> RunCache:
    return RunCache(
        spec, Path("runs"), base_dir=Path("base"), base_identity="x", data_dir=Path("data"), train_identity="x"
    )


def test_run_hashes_are_those_of_runs_cached_before_the_trl_fields():
    cache = _cache(CompareSpec(curve_points=5))
    assert {m: cache.run_hash(RunKey(m, 1e-5, 0)) for m in BEFORE} == BEFORE


def test_a_trl_field_or_lora_set_away_from_its_default_is_a_new_run():
    key = RunKey("trapo", 1e-5, 0)
    base = _cache(CompareSpec()).run_hash(key)
    assert _cache(CompareSpec(config_overrides={"top_k": 5})).run_hash(key) != base
    assert _cache(CompareSpec(config_overrides={"lora_r": 4})).run_hash(key) != base
