"""The TRL-shaped API: a script written for TRL's GRPOTrainer runs under trapo with only the import changed,
several rewards with weights (each logged), and every keyword TRL passes to a reward."""

from __future__ import annotations

import json
import math
import sys
import types

import pytest

from trapo.data import Example, examples_from_rows
from trapo.rewards import Completion, RewardSet, as_reward_function, reward_set

# Written for TRL (trl 1.x): the expert solutions ride in an extra column, which TRL passes to the rewards
# and trapo also trains on. MODEL and OUT are filled in by the test.
TRL_SCRIPT = """
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

dataset = Dataset.from_list([
    {"prompt": f"{a}+{b}", "solution": str(a + b),
     "expert_solutions": [f"{a}+{b}={a + b}\\n\\nso {a + b}\\n\\n\\\\boxed{{{a + b}}}"]}
    for a, b in [(3, 4), (5, 8), (7, 12), (9, 16)]
])
seen = {}


def correct(completions, solution, completion_ids, trainer_state, **kwargs):
    seen.update(columns=sorted(kwargs), ids=completion_ids[0], step=trainer_state.global_step)
    return [1.0 if s in c else 0.0 for c, s in zip(completions, solution)]


def brevity(completions, **kwargs):
    return [-len(c) / 100 for c in completions]


args = GRPOConfig(output_dir=OUT, max_steps=1, learning_rate=1e-5, num_generations=8, max_completion_length=16,
                  per_device_train_batch_size=8, gradient_accumulation_steps=2, beta=0.0, epsilon=0.2,
                  loss_type="dr_grpo", scale_rewards="group", reward_weights=[1.0, 0.5], logging_steps=1,
                  report_to="none", bf16=False, seed=0)
trainer = GRPOTrainer(model=MODEL, reward_funcs=[correct, brevity], args=args, train_dataset=dataset)
trainer.train()
trainer.save_model(OUT + "/saved")
"""
TRAPO_IMPORT = "from trapo import TRAPOConfig as GRPOConfig, TRAPOTrainer as GRPOTrainer"


class _ShimDataset(list):
    """``datasets.Dataset.from_list`` where the ``datasets`` package is not installed (the ``hf`` extra):
    trapo reads a Dataset through ``to_list()``, which this gives too."""

    @classmethod
    def from_list(cls, rows):
        return cls(rows)

    def to_list(self):
        return list(self)


def _run(script: str, model_dir, out) -> dict:
    namespace = {"MODEL": str(model_dir), "OUT": str(out), "__name__": "__trl_script__"}
    exec(compile(script, "trl_script.py", "exec"), namespace)
    return namespace


def test_a_trl_grpo_script_runs_with_only_the_import_changed(tmp_path, model_dir, monkeypatch):
    script = TRL_SCRIPT.replace("from trl import GRPOConfig, GRPOTrainer", TRAPO_IMPORT)
    assert script.count(TRAPO_IMPORT) == 1 and len(script.splitlines()) == len(TRL_SCRIPT.splitlines())
    try:
        import datasets  # noqa: F401
    except ImportError:
        monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(Dataset=_ShimDataset))
    out = tmp_path / "run"
    ns = _run(script, model_dir, out)
    seen, trainer = ns["seen"], ns["trainer"]
    assert seen["step"] == 0 and all(isinstance(i, int) for i in seen["ids"]) and seen["ids"]
    assert "expert_solutions" in seen["columns"] and "prompts" in seen["columns"]
    config = json.loads((out / "run_config.json").read_text())
    assert config["loss_type"] == "dr_grpo" and config["loss_normalization"] == "constant"
    assert trainer.config.prompts_per_step == 2 and trainer.config.mini_batch_size == 8  # 8 x 2 / 8 generations
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"rewards/correct", "rewards/brevity"} <= set(metrics)
    assert metrics["reward/mean"] == pytest.approx(metrics["rewards/correct"] + 0.5 * metrics["rewards/brevity"])
    assert metrics["guidance/level_3"] > 0  # TRAPO's guidance used the expert_solutions column
    assert (out / "saved" / "model.safetensors").is_file()


def test_the_same_script_runs_under_trl_itself(tmp_path, model_dir):
    """Where TRL installs beside our transformers (the test extra), the script is checked against TRL too."""
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    ns = _run(TRL_SCRIPT, model_dir, tmp_path / "trl-run")
    assert ns["seen"]["step"] == 0 and "expert_solutions" in ns["seen"]["columns"]


def test_every_trl_reward_keyword_is_passed():
    got = {}

    def reward(prompts, completions, completion_ids, trainer_state, solution, level, **kwargs):
        got.update(
            prompts=prompts,
            completions=completions,
            ids=completion_ids,
            state=trainer_state,
            solution=solution,
            level=level,
            rest=sorted(kwargs),
        )
        return [1.0] * len(completions)

    rows = examples_from_rows([{"prompt": "1+1", "solution": "2", "level": 3}]).examples
    state = object()
    assert as_reward_function(reward)([Completion("2", [5, 6], state)], rows) == [1.0]
    assert got["prompts"] == ["1+1"] and got["completions"] == ["2"] and got["ids"] == [[5, 6]]
    assert got["state"] is state and got["solution"] == ["2"] and got["level"] == [3]
    assert {"expert_solutions", "data_source", "extra_info"} <= set(got["rest"])

    # conversational data: chat messages in and out, as TRL passes them
    msgs = [{"role": "user", "content": "1+1"}]
    rows = examples_from_rows([{"prompt": msgs, "solution": "2", "level": 1}]).examples
    as_reward_function(reward, conversational=True)([Completion("2", [5])], rows)
    assert got["prompts"] == [msgs] and got["completions"] == [[{"role": "assistant", "content": "2"}]]


def test_reward_set_weights_nan_and_per_function_stats():
    def a(completions, **kw):
        return [1.0, None]

    def b(completions, **kw):
        return [2.0, 4.0]

    rewards = reward_set([a, b], [1.0, 0.5])
    ex = Example([{"role": "user", "content": "q"}], "x")
    assert rewards(["c1", "c2"], [ex, ex]) == [2.0, 2.0]  # None leaves a function out of that item's sum
    assert rewards.pop_stats() == {"a": (1.0, 1.0, 1.0), "b": (6.0, 20.0, 2.0)}  # sum, squares, count
    assert rewards.pop_stats() == {"a": (0.0, 0.0, 0.0), "b": (0.0, 0.0, 0.0)}
    only_none = RewardSet([as_reward_function(lambda completions, **kw: [None])])
    assert math.isnan(only_none(["c"], [ex])[0])
    with pytest.raises(ValueError, match="reward_weights has 1 weights for 2 reward functions"):
        reward_set([a, b], [1.0])
    with pytest.raises(ValueError, match=r"reward models \(a model id in reward_funcs\) are not supported"):
        reward_set(["Qwen/Qwen2.5-RM"])


def test_the_former_positional_order_is_refused_with_trls_order(tmp_path, tokenizer, make_model, make_rows):
    from trapo import TRAPOConfig, TRAPOTrainer

    cfg = TRAPOConfig(method="grpo", max_steps=1, output_dir=str(tmp_path / "a"))
    with pytest.raises(TypeError, match=r"args must be a TRAPOConfig, got list.*reward_funcs, args, train_dataset"):
        TRAPOTrainer(make_model(tokenizer), tokenizer, make_rows(), cfg)


def test_eval_dataset_is_refused_not_ignored(tmp_path, tokenizer, make_model, make_rows):
    from trapo import TRAPOConfig, TRAPOTrainer

    cfg = TRAPOConfig(method="grpo", max_steps=1, output_dir=str(tmp_path / "a"))
    with pytest.raises(ValueError, match=r"eval_dataset is not supported.*trapo eval"):
        TRAPOTrainer(
            make_model(tokenizer),
            args=cfg,
            train_dataset=make_rows(),
            eval_dataset=make_rows(),
            processing_class=tokenizer,
        )


def test_beta_keeps_a_frozen_reference_placed_by_accelerate(tmp_path, tokenizer, make_model, make_rows):
    from trapo import TRAPOConfig, TRAPOTrainer

    model = make_model(tokenizer)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TRAPOConfig(
        method="grpo",
        beta=0.1,
        max_steps=1,
        prompts_per_step=2,
        max_completion_length=12,
        learning_rate=1e-2,
        output_dir=str(tmp_path / "kl"),
    )
    trainer = TRAPOTrainer(model=model, args=cfg, train_dataset=make_rows(), processing_class=tokenizer)
    result = trainer.train()
    assert math.isfinite(result.last_metrics["loss/kl"])
    ref = trainer.ref_model.state_dict()
    assert all(bool((ref[k] == initial[k]).all()) for k in initial)  # the reference did not move
    assert any(not bool((trainer.unwrapped.state_dict()[k] == initial[k]).all()) for k in initial)  # the policy did


def test_sharded_parameters_are_refused_not_trained_wrongly():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from trapo.trainer.trainer import check_not_sharded

    with pytest.raises(NotImplementedError, match=r"accelerate's FSDP plugin .* is not supported.*--fsdp full_shard"):
        check_not_sharded(SimpleNamespace(distributed_type=DistributedType.FSDP, state=None))
    zero3 = SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=3))
    with pytest.raises(NotImplementedError, match=r"DeepSpeed ZeRO-3 is not supported.*--fsdp full_shard"):
        check_not_sharded(SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, state=zero3))
    zero2 = SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=2))
    check_not_sharded(SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, state=zero2))
    check_not_sharded(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU, state=None))
