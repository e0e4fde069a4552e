"""Checkpoints in Hugging Face layout plus the training state, written atomically.

``output_dir/checkpoint-STEP/`` holds the model (``save_pretrained``, safetensors; a LoRA run saves its
adapter), the tokenizer, ``training_state.pt`` (optimizer, scheduler) and ``trainer_state.json`` (step,
counters, config). A ``--fsdp`` run keeps its optimizer state sharded in ``optimizer/`` instead
(:mod:`trapo.trainer.sharding`). Data order and rollout randomness are functions of ``(seed, step, process)``, so
resuming from a checkpoint continues exactly.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from trapo.atomic import atomic_directory

STATE_FILE = "trainer_state.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (those with a trainer state) under ``output_dir``, oldest first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [p for p in out.iterdir() if _CKPT.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_CKPT.match(p.name).group(1)))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(
    output_dir: str | Path, step: int, model, tokenizer, optimizer, scheduler, state: dict[str, Any], keep: int = 0
) -> Path:
    """Write ``checkpoint-STEP`` through a temporary directory renamed at the end (a crash mid-write
    leaves no directory that looks complete), then prune to the newest ``keep`` (0 keeps all)."""
    final = Path(output_dir) / f"checkpoint-{step}"
    with atomic_directory(final) as tmp:
        training = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        write_checkpoint(tmp, step, model, tokenizer, training, state)
    prune(output_dir, keep)
    return final


def write_checkpoint(
    directory: Path,
    step: int,
    model,
    tokenizer,
    training: dict[str, Any],
    state: dict[str, Any],
    weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """Fill a checkpoint directory: the model (``save_pretrained``; from ``weights`` when given, the whole
    state dict of a sharded model), the tokenizer, ``training`` (optimizer / scheduler state) in
    ``training_state.pt`` and the trainer state."""
    model.save_pretrained(directory, **({} if weights is None else {"state_dict": weights}))
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    torch.save(training, directory / "training_state.pt")
    (directory / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2, default=str))


def prune(output_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (0 keeps all)."""
    if keep > 0:
        for old in checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def read_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The whole state dict of a checkpoint's ``model*.safetensors``."""
    from safetensors.torch import load_file

    files = sorted(checkpoint.glob("model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{checkpoint}: no model*.safetensors to resume from")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    return state


def check_weights(model, checkpoint: Path, missing: list[str], unexpected: list[str]) -> None:
    """Refuse weights that do not fit ``model`` (a tied ``lm_head`` is not saved and may be missing)."""
    tied = {k for k in missing if "lm_head" in k} if getattr(model.config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"{checkpoint}: weights do not match the model (missing {sorted(set(missing) - tied)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )


def load_weights(model, checkpoint: Path) -> None:
    """Load a checkpoint's weights into ``model`` in place (full model or LoRA adapter)."""
    from safetensors.torch import load_file, load_model

    adapter = checkpoint / "adapter_model.safetensors"
    if adapter.is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(adapter))
        return
    files = sorted(checkpoint.glob("model*.safetensors"))
    if len(files) == 1:
        missing, unexpected = load_model(model, files[0], strict=False)
    else:
        missing, unexpected = model.load_state_dict(read_weights(checkpoint), strict=False)
    check_weights(model, checkpoint, missing, unexpected)


def load_training_state(checkpoint: Path, optimizer, scheduler) -> dict[str, Any]:
    """Load optimizer (unless None: a sharded run loads its own) and scheduler state; returns the trainer state."""
    blob = torch.load(checkpoint / "training_state.pt", map_location="cpu", weights_only=False)
    if optimizer is not None:
        if "optimizer" not in blob:
            raise ValueError(
                f"{checkpoint}: the optimizer state is sharded (optimizer/, written by a --fsdp run); resume with "
                "--fsdp full_shard and the same number of processes"
            )
        optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    return json.loads((checkpoint / STATE_FILE).read_text())
