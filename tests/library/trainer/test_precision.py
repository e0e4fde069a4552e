"""The precision policy (issue 24 #1): float32 master weights whatever the saved dtype, final/ in the input's
dtype, never a NaN written."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from trapo.cli import main
from trapo.trainer import precision

FLAGS = ["--prompts_per_step", "2", "--max_completion_length", "12", "--max_steps", "1", "--save_steps", "1"]


def _save(model, tokenizer, path, dtype):
    model.to(dtype).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _train(model_dir, data, out, *extra) -> None:
    argv = ["train", "--model", str(model_dir), "--data", str(data), "--output", str(out), *FLAGS, *extra]
    assert main(argv) == 0


def _update(run, start: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    after = load_file(run / "checkpoint-1" / "model.safetensors")
    return {k: after[k].double() - start[k].double() for k in start if k in after}


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_a_half_precision_model_gets_the_update_of_its_float32_copy(
    make_model, tokenizer, setup, tmp_path, half, capsys
):
    _, data = setup
    model = make_model(tokenizer).to(half)  # the saved weights, as a hub model ships them
    half_dir = _save(model, tokenizer, tmp_path / "half", half)
    fp32_dir = _save(model, tokenizer, tmp_path / "fp32", torch.float32)  # the same values in float32
    start = {k: v.float() for k, v in load_file(fp32_dir / "model.safetensors").items()}
    _train(half_dir, data, tmp_path / "run_half", "--learning_rate", "1e-3")
    _train(fp32_dir, data, tmp_path / "run_fp32", "--learning_rate", "1e-3")
    got, want = _update(tmp_path / "run_half", start), _update(tmp_path / "run_fp32", start)
    scale = max(float(d.abs().max()) for d in want.values())
    diff = max(float((got[k] - want[k]).abs().max()) for k in want)
    assert scale > 0 and diff / scale <= 1e-2, (diff, scale)
    moved = sum(int((d != 0).sum()) for d in got.values()) / sum(d.numel() for d in got.values())
    assert moved > 0.9  # not a handful of weights: the whole update arrived
    final = load_file(tmp_path / "run_half" / "final" / "model.safetensors")
    assert {t.dtype for t in final.values()} == {half}  # final/ in the input's dtype
    assert all(torch.isfinite(t).all() for t in final.values())
    saved = json.loads((tmp_path / "run_half" / "final" / "config.json").read_text())
    assert saved["dtype"] == str(half).removeprefix("torch.")


def test_save_dtype_overrides_and_a_float16_overflow_is_saved_as_float32(make_model, tokenizer, tmp_path, capsys):
    model = make_model(tokenizer)
    assert precision.to_master_weights(model.to(torch.float16)) == torch.float16
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = 1e6  # beyond float16's range
    written = precision.save_pretrained_as(model, tmp_path / "out", torch.float16)
    assert written == torch.float32
    assert "do not fit in float16" in capsys.readouterr().out
    weights = load_file(tmp_path / "out" / "model.safetensors")
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in weights.values())
    assert precision.resolve_save_dtype("auto", torch.bfloat16) == torch.bfloat16
    assert precision.resolve_save_dtype("float32", torch.bfloat16) == torch.float32
