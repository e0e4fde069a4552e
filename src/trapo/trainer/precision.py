"""The precision policy for weights a run trains and saves (issue 24): the trained weights (master weights)
and so the AdamW state are float32 whatever dtype the model was saved in; ``final/`` is written in the
input's dtype unless ``save_dtype`` says otherwise; checkpoints keep float32 so that a resume is exact.

Why: an AdamW step taken in bfloat16 rounds most of a small update away (bf16 keeps 8 bits of mantissa:
an update below ~1/256 of a weight is lost), and one taken in float16 overflows to inf/NaN. With float32
master weights the update is the one the update guard judged.
``--bf16`` is what the forward passes compute in, a separate choice: updates run them under
``torch.autocast(..., dtype=torch.bfloat16)`` (matrix products and attention in bf16; the float32 master
weights, their gradients and AdamW's state untouched) and take the logits back in float32 before any
log-softmax; :class:`~trapo.rollout.HFEngine` with ``dtype=torch.bfloat16`` prefills under autocast and
decodes with bf16 copies of the matrix weights. The trainer does this itself instead of through
``Accelerator(mixed_precision="bf16")``, whose process-wide state cannot change within a process: runs in
fp32 and bf16 can then share one process (tests, benchmarks/step_cost.py). On CPU, bf16 pays where the
cores have bf16 matrix units (AMX, AVX512-BF16).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path

import torch

SAVE_DTYPES = ("auto", "float32", "bfloat16", "float16")
HALF = (torch.float16, torch.bfloat16)


def weights_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype most of ``model``'s floating-point parameters have (float32 for a model without any)."""
    counts = Counter(p.dtype for p in model.parameters() if p.is_floating_point())
    return counts.most_common(1)[0][0] if counts else torch.float32


def to_master_weights(model: torch.nn.Module) -> torch.dtype:
    """Make every trained parameter float32 in place (the frozen ones of a LoRA model keep their dtype) and
    return the dtype the model came in (what ``final/`` is saved in by default)."""
    came_in = weights_dtype(model)
    trained = [p for p in model.parameters() if p.requires_grad and p.is_floating_point()]
    if all(p.requires_grad for p in model.parameters()):
        if any(p.dtype != torch.float32 for p in trained):
            model.float()  # buffers too (rotary frequencies ...), as a float32 model would have them
    else:
        for p in trained:
            p.data = p.data.float()
    return came_in


def resolve_save_dtype(save_dtype: str, came_in: torch.dtype) -> torch.dtype:
    """``save_dtype`` (``auto``: the dtype the model came in) as a torch dtype."""
    return came_in if save_dtype == "auto" else getattr(torch, save_dtype)


def _cast_state(weights: dict[str, torch.Tensor], dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], int]:
    """``weights`` with floating tensors in ``dtype`` (tensors sharing storage stay shared) and the number of
    values that the cast made non-finite (finite before, inf/NaN after)."""
    cast: dict[int, torch.Tensor] = {}
    state, broken = {}, 0
    for name, t in weights.items():
        if not t.is_floating_point() or t.dtype == dtype:
            state[name] = t
            continue
        key = t.data_ptr()
        if key not in cast:
            cast[key] = t.detach().to(dtype)
            broken += int((torch.isfinite(t) & ~torch.isfinite(cast[key])).sum())
        state[name] = cast[key]
    return state, broken


def save_pretrained_as(
    model: torch.nn.Module, directory: Path, dtype: torch.dtype, weights: dict[str, torch.Tensor] | None = None
) -> torch.dtype:
    """``model.save_pretrained(directory)`` with the weights in ``dtype`` (the model itself is not changed).
    ``weights``: the whole state dict to save instead of the model's own (a sharded model's, gathered).
    Weights that ``dtype`` cannot hold (float16's range is +-65504) would be saved as inf: then the model is
    saved in float32 instead, with a warning. Returns the dtype written."""
    own = {} if weights is None else {"state_dict": weights}
    if dtype == weights_dtype(model):
        model.save_pretrained(directory, **own)
        return dtype
    whole = model.state_dict() if weights is None else weights
    state, broken = _cast_state(whole, dtype)
    if broken:
        print(
            f"warning: {broken} weight value(s) do not fit in {str(dtype).removeprefix('torch.')} (they would "
            f"be saved as inf/NaN); {directory.name}/ is saved in float32 instead",
            flush=True,
        )
        model.save_pretrained(directory, state_dict=_cast_state(whole, torch.float32)[0])
        dtype = torch.float32
    else:
        model.save_pretrained(directory, state_dict=state)
    config = directory / "config.json"
    if config.is_file():  # save_pretrained wrote the in-memory dtype; say the one on disk
        values = json.loads(config.read_text())
        values["dtype"] = str(dtype).removeprefix("torch.")
        values.pop("torch_dtype", None)
        config.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    return dtype


def compute_dtype(bf16: bool) -> torch.dtype | None:
    """The dtype of forward passes: bfloat16 with ``--bf16``, else None (the weights' own, float32)."""
    return torch.bfloat16 if bf16 else None


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``'s kind, or nothing where ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
