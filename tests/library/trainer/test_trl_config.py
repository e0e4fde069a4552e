"""TRL's GRPOConfig fields in TRAPOConfig: each accepted with TRL's meaning or refused with what to use,
checked against the installed TRL; defaults that differ from TRL's are listed (docs/TRL.md, start-up notice)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from trapo.config import TRAPOConfig, check_keys
from trapo.config_trl import DIFFERENT_DEFAULTS, defaults_notice
from trapo.trl_refused import REFUSED

DOCS = Path(__file__).resolve().parents[3] / "docs" / "TRL.md"
OURS = {f.name: f for f in dataclasses.fields(TRAPOConfig)}


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _trl_fields() -> dict[str, object]:
    trl = pytest.importorskip("trl")
    return {f.name: _default(f) for f in dataclasses.fields(trl.GRPOConfig)}


def _other_than(value):
    """A value that is not ``value`` (for a refused field: anything but TRL's default)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 3
    if isinstance(value, list):
        return ["x"]
    return "something-else"


def test_every_grpo_config_field_is_accepted_or_refused():
    trl = _trl_fields()
    assert len(trl) > 150  # TRL 1.16 has 191
    accepted, refused = set(trl) & set(OURS), set(trl) & set(REFUSED)
    assert not accepted & refused
    assert set(trl) == accepted | refused, sorted(set(trl) - accepted - refused)
    assert set(REFUSED) <= set(trl), sorted(set(REFUSED) - set(trl))  # the table holds no stale names


def test_a_refused_field_at_trls_default_is_a_no_op_and_otherwise_names_what_to_use():
    trl = _trl_fields()
    for name, (default, advice) in REFUSED.items():
        assert default == trl[name], f"{name}: REFUSED says TRL's default is {default!r}, TRL has {trl[name]!r}"
        TRAPOConfig(**{name: default})  # TRL's own behaviour at its default is ours
        with pytest.raises(ValueError, match=re.escape(f"{name}=")) as err:
            TRAPOConfig(**{name: _other_than(default)})
        assert advice in str(err.value) and "not supported" in str(err.value)
    with pytest.raises(ValueError, match=r"use_vllm=True .*RolloutEngine"):
        check_keys({"use_vllm": True}, "config.yaml")


def test_accepted_fields_keep_trls_default_or_are_listed_as_different():
    trl = _trl_fields()
    docs = DOCS.read_text()
    for name in set(trl) & set(OURS):
        ours = _default(OURS[name])
        if name in DIFFERENT_DEFAULTS:
            assert DIFFERENT_DEFAULTS[name][0] in (trl[name], "trainer_output"), name
            assert f"`{name}`" in docs, f"docs/TRL.md does not mention {name}"
        elif name == "report_to":
            assert TRAPOConfig().report_to == [] and ours == trl[name] == "none"
        else:
            assert ours == trl[name], f"{name}: ours {ours!r}, TRL {trl[name]!r}, not in DIFFERENT_DEFAULTS"


def test_the_defaults_notice_names_what_differs_and_only_while_left_at_our_default():
    notice = defaults_notice(TRAPOConfig())
    assert "seed=0 (TRL 42)" in notice and "lr_scheduler_type='constant' (TRL 'linear')" in notice
    assert "max_steps=100 (TRL -1)" in notice
    changed = defaults_notice(TRAPOConfig(seed=42, max_steps=5, lr_scheduler_type="linear"))
    assert "seed=" not in changed and "max_steps" not in changed and "lr_scheduler_type" not in changed


def test_max_steps_minus_one_trains_num_train_epochs():
    assert TRAPOConfig().max_steps == 100  # neither set: our 100 steps
    assert TRAPOConfig(max_steps=7, num_train_epochs=2).max_steps == 7  # TRL: max_steps wins
    cfg = TRAPOConfig(num_train_epochs=2, prompts_per_step=4)
    assert cfg.max_steps == -1 and cfg.for_dataset(10).max_steps == 5  # ceil(2 x 10 / 4)
    grpo = TRAPOConfig(method="grpo", max_steps=-1, num_train_epochs=1, per_device_train_batch_size=8)
    assert grpo.for_processes(1).for_dataset(3).max_steps == 3  # 8 completions = 1 prompt per step
    with pytest.raises(ValueError, match="num_train_epochs must be > 0"):
        TRAPOConfig(num_train_epochs=0)


def test_step_counts_take_trls_ratio_form():
    cfg = TRAPOConfig(max_steps=50, warmup_steps=0.1, logging_steps=0.2, save_steps=0.5)
    assert (cfg.warmup_steps, cfg.logging_steps, cfg.save_steps) == (5, 10, 25)
    later = TRAPOConfig(num_train_epochs=1, prompts_per_step=2, warmup_steps=0.5).for_dataset(8)
    assert later.max_steps == 4 and later.warmup_steps == 2


def test_report_to_takes_trls_forms():
    assert TRAPOConfig(report_to="none").report_to == []
    assert TRAPOConfig(report_to=None).report_to == []
    assert TRAPOConfig(report_to=["tensorboard"]).report_to == ["tensorboard"]
    assert TRAPOConfig(report_to="tensorboard").report_to == ["tensorboard"]
    with pytest.raises(ValueError, match="unknown tracker"):
        TRAPOConfig(report_to=["nope"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eval_strategy": "steps"}, "trapo eval"),
        ({"push_to_hub": True}, "save_model"),
        ({"logging_strategy": "epoch"}, "logging_steps"),
        ({"save_strategy": "epoch"}, "save_steps"),
        ({"optim": "sgd"}, "AdamW"),
        ({"shuffle_dataset": False}, "seeded permutations"),
        ({"repetition_penalty": 1.2}, "temperature, top_p and top_k"),
    ],
)
def test_common_trl_settings_not_taken_say_what_to_use(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TRAPOConfig(**kwargs)


def test_commonly_set_trl_fields_are_taken():
    cfg = TRAPOConfig(
        num_train_epochs=1.0,
        max_steps=-1,
        gradient_checkpointing=True,
        mask_truncated_completions=True,
        top_k=5,
        logging_first_step=True,
        logging_strategy="steps",
        save_strategy="no",
        lr_scheduler_kwargs='{"num_cycles": 0.5}',
        model_init_kwargs={"dtype": "float32"},
        adam_epsilon=1e-6,
        disable_tqdm=True,
        run_name="x",
    )
    assert cfg.lr_scheduler_kwargs == {"num_cycles": 0.5} and cfg.top_k == 5 and cfg.gradient_checkpointing
