"""A real, tiny comparison set-up: the embedded task's splits (a handful of rows) and a random tiny base model."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2ForCausalLM

from trapo_lab.compare import CompareSpec
from trapo_lab.models.config import tiny_config
from trapo_lab.models.tokenizer import build_tokenizer
from trapo_lab.tasks import make_splits

torch.set_num_threads(1)


def tiny_spec(**overrides) -> CompareSpec:
    """Two steps per run, evaluation sets of a few problems, short generations."""
    values = dict(
        methods=("trapo", "grpo"),
        seeds=(0, 1),
        lr_grid={"trapo": (1e-4, 3e-4), "grpo": (1e-4,)},
        max_steps=2,
        prompts_per_step=2,
        max_completion_length=24,
        n_val_per_tier=2,
        n_val_skill=1,
        n_test_per_tier=2,
        n_test_skill=1,
        n_test_ood=1,
        n_passk_per_tier=1,
        passk_max=2,
        curve_points=2,
        max_new_tokens=12,
        lr_extensions=0,
    )
    values.update(overrides)
    return CompareSpec(**values)


@pytest.fixture(scope="session", name="tiny_spec")
def tiny_spec_fixture():
    return tiny_spec


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "data"
    make_splits(out, n_train=12, n_val_per_tier=2, n_test_per_tier=3, n_skill_val=2, n_skill_test=2)
    return out


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "base"
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = tiny_config(
        len(tokenizer),
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    Qwen2ForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
