"""`trapo train` end to end through the CLI: config layering, rewards from module:function, LoRA, TensorBoard."""

from __future__ import annotations

import json

import pytest
from cli_args import train_argv
from transformers import AutoModelForCausalLM

from trapo.cli import main


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_flags_override_the_yaml_config(tmp_path, setup):
    model_dir, data = setup
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: grpo\nmax_steps: 3\nlearning_rate: 0.5\nprompts_per_step: 2\nmax_completion_length: 24\n")
    out = tmp_path / "run"
    rc = main(train_argv(model_dir, data, out, "--config", str(cfg), max_steps=2, learning_rate=0.001))
    assert rc == 0
    saved = json.loads((out / "run_config.json").read_text())
    assert saved["method"] == "grpo" and saved["max_steps"] == 2 and saved["learning_rate"] == 0.001
    assert saved["max_completion_length"] == 24
    assert [m["step"] for m in _metrics(out)] == [1, 2]
    assert (out / "final" / "model.safetensors").is_file()


def test_unknown_method_and_key_are_clear_errors(tmp_path, setup, capsys):
    model_dir, data = setup
    rc = main(train_argv(model_dir, data, tmp_path / "r", method="ppo"))
    assert rc == 2 and "unknown method 'ppo'; valid methods: trapo" in capsys.readouterr().err
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("lr: 1\n")
    rc = main(["train", "--config", str(cfg), "--model", str(model_dir), "--data", str(data)])
    assert rc == 2 and "unknown config key(s) ['lr']" in capsys.readouterr().err


def test_reward_from_a_file_and_resume_flag(tmp_path, setup):
    model_dir, data = setup
    reward = tmp_path / "my_reward.py"
    reward.write_text("def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    return 1.0\n")
    out = tmp_path / "run"
    args = train_argv(
        model_dir, data, out, prompts_per_step=2, max_completion_length=24, reward=f"{reward}:compute_score"
    )
    assert main([*args, "--max_steps", "1"]) == 0
    assert _metrics(out)[-1]["reward/mean"] == 1.0  # the verl-style reward was used
    assert main([*args, "--max_steps", "2", "--resume"]) == 0
    assert [m["step"] for m in _metrics(out)] == [1, 2]


def test_lora_run_exports_a_merged_model_and_tensorboard_events(tmp_path, setup):
    pytest.importorskip("peft")
    pytest.importorskip("tensorboard")
    model_dir, data = setup
    out = tmp_path / "run"
    flags = {"max_steps": 1, "prompts_per_step": 2, "max_completion_length": 24, "lora_r": 4}
    argv = train_argv(model_dir, data, out, lora_target_modules=("q_proj", "v_proj"), report_to="tensorboard", **flags)
    rc = main(argv)
    assert rc == 0
    assert (out / "checkpoint-1" / "adapter_model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out / "final")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert list(out.rglob("events.out.tfevents.*")), "no TensorBoard event file was written"
