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
import sys
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


def prune(output_dir: str | Path, keep: int) -> list[str]:
    """Remove all but the newest ``keep`` checkpoints (0 keeps all); what could not be removed is reported
    on stderr (the run goes on: a disk that keeps an extra checkpoint loses nothing) and returned."""
    failures: list[str] = []
    for path in checkpoints(output_dir)[:-keep] if keep > 0 else []:
        errors: list[str] = []

        def note(fn, where, info, errors=errors) -> None:  # shutil's onerror (onexc needs Python 3.12)
            errors.append(f"{Path(where).name}: {info[1]}")

        shutil.rmtree(path, onerror=note)
        if errors:
            failures.append(f"{path.name} ({errors[0]}{'; ...' if len(errors) > 1 else ''})")
    if failures:
        print(
            f"warning: could not remove {len(failures)} old checkpoint(s) beyond save_total_limit {keep}: "
            f"{'; '.join(failures)}. Remove them by hand when disk space matters",
            file=sys.stderr,
        )
    return failures


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
    """Load a checkpoint's weights into ``model`` in place (full model or LoRA adapter). The files are read
    and checked first: unreadable files or NaN/inf weights raise before ``model`` is touched."""
    from safetensors.torch import load_file

    adapter = checkpoint / "adapter_model.safetensors"
    state = load_file(adapter) if adapter.is_file() else read_weights(checkpoint)
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"its weights hold NaN/inf ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
    if adapter.is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, state)
        return
    missing, unexpected = model.load_state_dict(state, strict=False)
    check_weights(model, checkpoint, missing, unexpected)


def read_training_state(checkpoint: Path) -> dict[str, Any]:
    """The optimizer and scheduler state of a checkpoint, read (not yet applied)."""
    return torch.load(checkpoint / "training_state.pt", map_location="cpu", weights_only=False)


def load_training_state(checkpoint: Path, optimizer, scheduler, blob: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load optimizer (unless None: a sharded run loads its own) and scheduler state (from ``blob`` when it
    was read already); returns the trainer state."""
    blob = read_training_state(checkpoint) if blob is None else blob
    if optimizer is not None:
        if "optimizer" not in blob:
            raise ValueError(
                f"{checkpoint}: the optimizer state is sharded (optimizer/, written by a --fsdp run); resume with "
                "--fsdp full_shard and the same number of processes"
            )
        optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    return json.loads((checkpoint / STATE_FILE).read_text())
