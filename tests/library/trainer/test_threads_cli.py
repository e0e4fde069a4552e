"""`trapo train --threads`: torch's CPU threads are set before any work, and --threads is not a config field."""

from __future__ import annotations

import json

import torch
from cli_args import train_argv

from trapo.cli import build_parser, main
from trapo.config import TRAPOConfig
from trapo.data import write_examples


def test_train_threads_flag(tmp_path, tokenizer, model, rows, monkeypatch):
    model_dir, data, out = tmp_path / "model", tmp_path / "train.jsonl", tmp_path / "run"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_examples(rows, data)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        flags = {"method": "grpo", "max_steps": 1, "prompts_per_step": 2, "max_completion_length": 8}
        rc = main(train_argv(model_dir, data, out, **flags))
        assert rc == 0 and torch.get_num_threads() == 1  # the default
        rc = main(train_argv(model_dir, data, tmp_path / "run2", "--threads", "2", **flags))
        assert rc == 0 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert "threads" not in json.loads((out / "run_config.json").read_text())
    assert "threads" not in TRAPOConfig.__dataclass_fields__
    args = build_parser().parse_args(["train", "--model", "m", "--data", "d", "--threads", "3"])
    assert args.threads == 3
