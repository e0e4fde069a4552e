"""TRL's own GRPO scripts under trapo with the import changed: ``trl/scripts/grpo.py`` and the reward examples of
TRL's GRPO documentation (one script per kind), on local data, with TRL's reward helpers where TRL ships them.
The data has no expert solutions, so the scripts name ``method="grpo"``; TRAPO on such data keeps its clear error."""

from __future__ import annotations

import importlib.util
import json
import runpy
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("datasets")

TRAPO_IMPORT = "from trapo import TRAPOConfig as GRPOConfig, TRAPOTrainer as GRPOTrainer"
ROWS = [
    {"prompt": [{"role": "user", "content": f"What is {a}+{b}?"}], "solution": str(a + b), "task": task}
    for a, b, task in [(1, 2, "math"), (3, 4, "code"), (5, 6, "math"), (7, 8, "code")]
]

# The scripts as TRL's GRPO docs write them (TRL 1.16, docs/source/grpo_trainer.md), import changed; the model
# and data set are local and the run is one short step.
HEADER = f"""
import asyncio
import re
from datasets import Dataset
{TRAPO_IMPORT}
dataset = Dataset.from_list(ROWS)
"""
FOOTER = """
training_args = GRPOConfig(output_dir=OUT, method="grpo", max_steps=1, num_generations=4,
                           per_device_train_batch_size=4, max_completion_length=8, report_to="none",
                           log_completions=True)
trainer = GRPOTrainer(model=MODEL, reward_funcs=reward_funcs, args=training_args, train_dataset=dataset)
trainer.train()
"""
EXAMPLES = {
    "longer_completions_by_token_ids": """
def reward_func(completion_ids, **kwargs):
    return [float(len(ids)) for ids in completion_ids]
reward_funcs = reward_func
""",
    "specific_format_conversational": """
def format_reward_func(completions, **kwargs):
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, content) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]
reward_funcs = [format_reward_func]
""",
    "reference_column": """
def reward_func(completions, solution, **kwargs):
    texts = [c[0]["content"] for c in completions]
    matches = [re.search(r"\\\\boxed\\{(.*?)\\}", t) for t in texts]
    contents = [m.group(1) if m else "" for m in matches]
    return [1.0 if c == gt else 0.0 for c, gt in zip(contents, solution)]
reward_funcs = reward_func
""",
    "multi_task_with_none": """
def math_reward_func(prompts, completions, task, **kwargs):
    return [float(len(c[0]["content"]) % 2) if t == "math" else None for c, t in zip(completions, task)]
def coding_reward_func(prompts, completions, task, **kwargs):
    return [0.5 if t == "code" else None for t in task]
reward_funcs = [math_reward_func, coding_reward_func]
""",
    "async": """
async def async_reward_func(prompts, completions, **kwargs):
    await asyncio.sleep(0.01)
    return [1.0 if len(c[0]["content"]) > 4 else 0.0 for c in completions]
reward_funcs = [async_reward_func]
""",
    "trainer_state_and_logging": """
def shaped(completions, trainer_state, log_metric=None, log_extra=None, **kwargs):
    progress = trainer_state.global_step / trainer_state.max_steps
    if log_metric is not None:
        log_metric("shaped/progress", progress)
    if log_extra is not None:
        log_extra("length", [len(c[0]["content"]) for c in completions])
    return [progress for _ in completions]
reward_funcs = shaped
""",
    "trl_reward_helpers": """
from trl.rewards import accuracy_reward, get_repetition_penalty_reward, get_soft_overlong_punishment
from trl.rewards import think_format_reward
reward_funcs = [accuracy_reward, think_format_reward, get_soft_overlong_punishment(8, 4),
                get_repetition_penalty_reward(ngram_size=2)]
""",
}


def _run(code: str, model_dir: Path, out: Path) -> dict:
    namespace = {"MODEL": str(model_dir), "OUT": str(out), "ROWS": ROWS, "__name__": "__trl_example__"}
    exec(compile(code, "trl_example.py", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_trls_documented_reward_examples_run_with_the_import_changed(name, model_dir, tmp_path):
    out = tmp_path / "run"
    _run(HEADER + EXAMPLES[name] + FOOTER, model_dir, out)
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["reward/failed"] == 0.0, metrics  # every completion scored
    assert any(k.startswith("rewards/") for k in metrics)
    if name == "trainer_state_and_logging":
        assert metrics["shaped/progress"] == 0.0  # step 0 of 1, logged by the reward through log_metric
        samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        assert all(isinstance(s["length"], int) for s in samples)  # log_extra's column, per completion
    if name == "multi_task_with_none":
        assert {"rewards/math_reward_func", "rewards/coding_reward_func"} <= set(metrics)


def test_a_method_that_needs_experts_keeps_its_clear_error_on_such_data(model_dir, tmp_path):
    footer = FOOTER.replace('method="grpo", ', "").replace("num_generations=4", "num_generations=8")
    code = HEADER + EXAMPLES["longer_completions_by_token_ids"] + footer.replace("batch_size=4", "batch_size=8")
    with pytest.raises(ValueError, match=r"method 'trapo' trains on expert solutions.*\(grpo\)"):
        _run(code, model_dir, tmp_path / "run")


def _grpo_script(tmp_path: Path) -> Path:
    """TRL's own trl/scripts/grpo.py with its two imports of GRPOTrainer / GRPOConfig pointed at trapo."""
    source = Path(importlib.util.find_spec("trl.scripts.grpo").origin).read_text()
    trainer_import = "    from trl import GRPOTrainer, get_dataset, get_peft_config, get_quantization_config\n"
    config_import = "    from trl import DatasetMixtureConfig, GRPOConfig, ModelConfig, TrlParser\n"
    assert trainer_import in source and config_import in source
    source = source.replace(
        trainer_import,
        "    from trl import get_dataset, get_peft_config, get_quantization_config\n"
        "    from trapo import TRAPOTrainer as GRPOTrainer\n",
    ).replace(
        config_import,
        "    from trl import DatasetMixtureConfig, ModelConfig, TrlParser\n"
        "    from trapo import TRAPOConfig as GRPOConfig\n",
    )
    path = tmp_path / "grpo_trapo.py"
    path.write_text(source)
    return path


def test_trls_grpo_script_runs_with_the_import_changed(model_dir, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "out"
    argv = [
        "grpo_trapo.py",
        *("--model_name_or_path", str(model_dir), "--dataset_name", str(data), "--output_dir", str(out)),
        *("--method", "grpo", "--max_steps", "1", "--num_generations", "4", "--per_device_train_batch_size", "4"),
        *("--max_completion_length", "8", "--report_to", "none"),
        *("--reward_funcs", "accuracy_reward", "think_format_reward", "get_soft_overlong_punishment"),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(_grpo_script(tmp_path)), run_name="__main__")
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    names = {"accuracy_reward", "think_format_reward", "soft_overlong_punishment_reward"}
    assert {f"rewards/{n}" for n in names} <= set(metrics)
    assert (out / "model.safetensors").is_file() and (out / "checkpoint-1").is_dir()  # saved beside the run
    config = json.loads((out / "run_config.json").read_text())
    assert config["method"] == "grpo" and config["per_device_train_batch_size"] == 4


def test_expert_solutions_through_the_api(model_dir, tmp_path, capsys):
    from trapo import TRAPOConfig, TRAPOTrainer

    rows = [
        {"prompt": f"{a}+{b}", "target": f"{a}+{b}={a + b}\n\n{a + b}", "extra_info": {"answer_list": ["x"]}}
        for a, b in [(1, 2), (3, 4)]
    ]
    args = TRAPOConfig(output_dir=str(tmp_path / "run"), max_steps=1, max_completion_length=8)
    with pytest.raises(ValueError, match=r"may hold the expert solutions: target, extra_info\.answer_list"):
        TRAPOTrainer(
            model=str(model_dir),
            reward_funcs=lambda completions, **kw: [0.0] * len(completions),
            args=args,
            train_dataset=rows,
        )
    args = TRAPOConfig(output_dir=str(tmp_path / "run"), max_steps=1, max_completion_length=8, expert_key="target")
    trainer = TRAPOTrainer(
        model=str(model_dir),
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=rows,
    )
    assert trainer.items[0].expert_ids and "expert solutions from 'target'" in trainer.data_report.summary()
    trainer.train()
    assert "expert solutions from 'target'" in capsys.readouterr().out


def test_a_reward_that_always_fails_stops_the_run_and_says_why_from_the_first_step(model_dir, tmp_path, capsys):
    from trapo import TRAPOConfig, TRAPOTrainer
    from trapo.trainer.safety import TrainingStopped

    async def broken(completions, **kwargs):
        raise RuntimeError("the judge is down")

    args = TRAPOConfig(
        output_dir=str(tmp_path / "run"),
        method="grpo",
        max_steps=3,
        max_completion_length=8,
        num_generations=4,
        per_device_train_batch_size=4,
    )
    trainer = TRAPOTrainer(model=str(model_dir), reward_funcs=broken, args=args, train_dataset=ROWS)
    with pytest.raises(TrainingStopped, match="the reward failed on 100% of the rollouts"):
        trainer.train()
    err = capsys.readouterr()
    assert "step 1: 100% of rewards failed (error 100%): RuntimeError: the judge is down" in err.out + err.err
