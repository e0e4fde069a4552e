"""Pre-training and the cached base-model build, on a tiny config and a handful of steps."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_factory import tiny_qwen2
from transformers import AutoModelForCausalLM, AutoTokenizer

from trapo.data import Example
from trapo_lab.models import build_tokenizer
from trapo_lab.pretrain import (
    BASE_INFO,
    BaseModelConfig,
    build_base_model,
    collate,
    expert_token_probabilities,
    lr_at,
    pretrain,
    probability_stats,
    read_base_info,
    save_base_model,
)
from trapo_lab.tasks import PretrainMix, build_splits

TINY = {
    "hidden_size": 16,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_size": 32,
    "steps": 3,
    "warmup_steps": 1,
    "batch_size": 8,
    "bucket_batches": 2,
    "eval_per_tier": 2,
    "n_expert_probe": 5,
}


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _tiny_model(tok, seed=0):
    return tiny_qwen2(tok, seed, hidden_size=16, num_layers=1)


def test_lr_schedule_by_hand():
    config = BaseModelConfig(lr=2e-3, warmup_steps=100, min_lr_ratio=0.1)
    assert lr_at(config, 0, 0.0) == pytest.approx(2e-5)
    assert lr_at(config, 99, 0.0) == pytest.approx(2e-3)
    assert lr_at(config, 100, 0.0) == pytest.approx(2e-3)
    assert lr_at(config, 500, 0.5) == pytest.approx(2e-4 + 1.8e-3 * 0.5)
    assert lr_at(config, 900, 1.0) == pytest.approx(2e-4)
    assert lr_at(config, 900, 7.0) == pytest.approx(2e-4)  # clamped


def test_collate_masks_prompt_and_padding():
    ids, labels = collate([([1, 2], [3, 4, 5]), ([6], [7])], pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 0, 0, 0]]
    assert labels.tolist() == [[-100, -100, 3, 4, 5], [-100, 7, -100, -100, -100]]


def test_config_validation_names_the_field():
    for field, bad in (("steps", 0), ("batch_size", -1), ("lr", 0.0), ("eval_per_tier", -1)):
        with pytest.raises(ValueError, match=field):
            BaseModelConfig(**{field: bad})
    assert BaseModelConfig().hash() == BaseModelConfig().hash() != BaseModelConfig(seed=1).hash()


def test_pretraining_is_deterministic_and_lowers_the_loss(tok):
    config = BaseModelConfig(**{**TINY, "steps": 12, "warmup_steps": 2, "lr": 1e-2})
    a, b = _tiny_model(tok), _tiny_model(tok)
    run_a = pretrain(a, tok, config, progress_bar=False)
    pretrain(b, tok, config, progress_bar=False)
    assert run_a["steps"] == 12 and math.isfinite(run_a["final_loss"])
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert run_a["final_loss"] < math.log(len(tok))  # better than uniform after 12 steps


def test_bf16_pretraining_is_its_own_recipe_and_keeps_fp32_weights(tok):
    assert "bf16" not in BaseModelConfig().to_dict()  # the fp32 recipe keeps its published hash
    assert BaseModelConfig(bf16=True).hash() != BaseModelConfig().hash()
    config = BaseModelConfig(**{**TINY, "steps": 12, "warmup_steps": 2, "lr": 1e-2})
    fp32, bf16 = _tiny_model(tok), _tiny_model(tok)
    pretrain(fp32, tok, config, progress_bar=False)
    run = pretrain(
        bf16,
        tok,
        BaseModelConfig(**{**TINY, "steps": 12, "warmup_steps": 2, "lr": 1e-2, "bf16": True}),
        progress_bar=False,
    )
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    assert run["final_loss"] < math.log(len(tok))
    assert any(not torch.equal(a, b) for a, b in zip(fp32.parameters(), bf16.parameters(), strict=True))


def test_build_is_bounded_by_steps_never_by_seconds(tok):
    # issue 15: a time bound gave each machine another base model; the config has no such field
    assert "max_seconds" not in BaseModelConfig().to_dict()
    with pytest.raises(TypeError):
        BaseModelConfig(max_seconds=10)
    run = pretrain(_tiny_model(tok), tok, BaseModelConfig(**{**TINY, "steps": 5}), progress_bar=False)
    assert run["steps"] == 5


def test_task_recipes():
    default = BaseModelConfig()
    assert default.mix.task == "shortcut" and BaseModelConfig.for_task("shortcut") == default
    old = BaseModelConfig.for_task("place-value")
    assert old.mix.task == "place-value" and old.mix == PretrainMix.for_task("place-value")
    assert (old.steps, old.lr, old.hidden_size) == (1200, 2e-3, 128)
    assert (default.steps, default.mix.step_share, default.mix.step_form, default.mix.step_layout) == (
        3000,
        0.2,
        "rewrite",
        "line",
    )
    assert (default.hidden_size, default.intermediate_size, default.lr) == (256, 1024, 1e-3)  # attempt I
    tweaked = BaseModelConfig.for_task("shortcut", steps=7, mix={"step_share": 0.02})
    assert tweaked.steps == 7 and tweaked.mix.step_share == 0.02 and tweaked.hash() != default.hash()


def test_expert_token_probabilities_match_a_manual_softmax(tok):
    model = _tiny_model(tok).eval()
    ex = Example(prompt=[{"role": "user", "content": "3+4"}], answer="7", expert_solutions=("3+4=7\n\n\\boxed{7}",))
    probs = expert_token_probabilities(model, tok, [ex])
    prompt = tok.apply_chat_template(ex.prompt, add_generation_prompt=True, tokenize=False)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    response = tok(ex.expert_solutions[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + response])).logits[0]
    manual = [logits[len(prompt_ids) - 1 + i].softmax(-1)[t] for i, t in enumerate(response)]
    assert probs.shape == (len(response),)
    assert torch.allclose(probs, torch.stack(manual), atol=1e-6)
    two = Example(ex.prompt, "7", (ex.expert_solutions[0], "3+4=7\n\n\\boxed{7}"))
    assert expert_token_probabilities(model, tok, [two]).numel() == 2 * len(response)
    assert expert_token_probabilities(model, tok, [two], all_solutions=False).numel() == len(response)


def test_probability_stats_by_hand():
    stats = probability_stats(torch.tensor([0.05, 0.5, 0.005, 0.9]))
    assert stats["share_below_0.1"] == 0.5 and stats["share_below_0.01"] == 0.25
    assert stats["tokens"] == 4 and stats["mean"] == pytest.approx(0.3638, abs=1e-4)


def test_saved_model_reloads_with_identical_logits_and_tokenizer(tok, tmp_path):
    model = _tiny_model(tok)
    pretrain(model, tok, BaseModelConfig(**TINY), progress_bar=False)
    out = save_base_model(model, tok, {"config_hash": "x"}, tmp_path / "base")
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    loaded_tok = AutoTokenizer.from_pretrained(out)
    ex = build_splits(n_train=5, n_val_per_tier=1, n_test_per_tier=1, n_skill_val=1, n_skill_test=1)["test"][4]
    text = ex.expert_solutions[0]
    ids = loaded_tok.apply_chat_template(ex.prompt, add_generation_prompt=True, tokenize=False) + text
    assert loaded_tok(ids, add_special_tokens=False)["input_ids"] == tok(ids, add_special_tokens=False)["input_ids"]
    batch = torch.tensor([tok(ids, add_special_tokens=False)["input_ids"]])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=batch).logits, loaded(input_ids=batch).logits)
    assert loaded.generation_config.eos_token_id == tok.eos_token_id
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_build_base_model_caches_and_guards_its_directory(tmp_path):
    out = tmp_path / "base"
    path = build_base_model(out, progress=False, **TINY)
    info = read_base_info(path)
    assert info["config_hash"] == BaseModelConfig(**TINY).hash() and info["pretraining"]["steps"] == 3
    assert set(info["sampled_pass@1"]) == {*(f"arith-t{t}" for t in range(1, 6)), "ood-t6", "ood-t7", "reverse", "sort"}
    assert 0 <= info["expert_token_probability"]["share_below_0.1"] <= 1
    assert AutoModelForCausalLM.from_pretrained(path).config.model_type == "qwen2"
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert build_base_model(out, progress=False, **TINY) == out  # same config: reused
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="another config"):
        build_base_model(out, progress=False, **{**TINY, "seed": 1})
    (out / BASE_INFO).unlink()  # a partial directory
    with pytest.raises(ValueError, match=f"{out}.*not a complete"):
        build_base_model(out, progress=False, **TINY)
    build_base_model(out, progress=False, force=True, **{**TINY, "seed": 1})
    assert json.loads((out / BASE_INFO).read_text())["config"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]


def test_build_is_deterministic_when_step_bounded(tmp_path):
    a = build_base_model(tmp_path / "a", progress=False, **{**TINY, "eval_per_tier": 0, "n_expert_probe": 0})
    b = build_base_model(tmp_path / "b", progress=False, **{**TINY, "eval_per_tier": 0, "n_expert_probe": 0})
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_build_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="threads"):
        build_base_model(tmp_path / "x", threads=0, progress=False, **TINY)
    with pytest.raises(ValueError, match=r"unknown base-model setting.*'stpes'"):
        build_base_model(tmp_path / "x", stpes=3)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        build_base_model(tmp_path / "file", progress=False, **TINY)
    with pytest.raises(ValueError, match="skill_share"):
        PretrainMix(skill_share=1.0)
