"""`trapo base` through the real argparse entry point (a 2-step build of the real architecture)."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from trapo.cli import main
from trapo_lab.pretrain import BASE_INFO, read_base_info

FAST = ["--steps", "2", "--eval-per-tier", "0", "--expert-probe", "6", "--threads", "1"]


def test_base_builds_reuses_and_guards(tmp_path, capsys):
    out = tmp_path / "base"
    assert main(["base", "--output", str(out), *FAST]) == 0
    info = read_base_info(out)
    assert info["pretraining"]["steps"] == 2 and "max_seconds" not in info["config"]
    assert info["config"]["mix"]["task"] == "shortcut"
    assert AutoModelForCausalLM.from_pretrained(out).num_parameters() == info["parameters"]
    assert AutoTokenizer.from_pretrained(out).eos_token == "<|endoftext|>"
    printed = capsys.readouterr().out
    assert "expert tokens with base probability < 0.1" in printed and "2 steps" in printed
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert main(["base", "--output", str(out), *FAST]) == 0  # same options: reused
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert main(["base", "--output", str(out), *FAST, "--seed", "3"]) == 2
    assert "another config" in capsys.readouterr().err
    (out / BASE_INFO).unlink()
    assert main(["base", "--output", str(out), *FAST]) == 2
    assert "not a complete" in capsys.readouterr().err


def test_base_help_explains_outputs(capsys):
    with pytest.raises(SystemExit):
        main(["base", "--help"])
    text = capsys.readouterr().out
    assert "trapo_base.json" in text and "--task" in text and "--force" in text
    assert "--max-seconds" not in text  # step-bounded only (issue 15)


def test_base_task_flag_reaches_the_old_recipe(tmp_path):
    out = tmp_path / "old"
    assert main(["base", "-o", str(out), "--task", "place-value", *FAST]) == 0
    info = read_base_info(out)
    assert info["config"]["mix"]["task"] == "place-value" and info["config"]["hidden_size"] == 128
    assert main(["base", "-o", str(tmp_path / "bad"), "--step-share", "0.1", "--task", "place-value", *FAST]) == 2
