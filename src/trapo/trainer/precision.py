"""``--bf16``: bfloat16 compute for rollouts and updates, with float32 master weights and optimizer state.

Updates run their forward passes under ``torch.autocast(..., dtype=torch.bfloat16)`` (matrix products and
attention in bf16; the weights, their gradients and AdamW's state stay float32) and take the logits back in
float32 before any log-softmax. Rollouts run the same way: :class:`~trapo.rollout.HFEngine` with
``dtype=torch.bfloat16`` prefills under autocast and decodes with bf16 copies of the matrix weights, made once
per generation call. The trainer does this itself instead of through ``Accelerator(mixed_precision="bf16")``,
whose process-wide state cannot change within a process: runs in fp32 and bf16 can then share one process
(tests, benchmarks/step_cost.py). On CPU, bf16 pays where the cores have bf16 matrix units (AMX, AVX512-BF16).
"""

from __future__ import annotations

import contextlib

import torch


def compute_dtype(bf16: bool) -> torch.dtype | None:
    """The dtype of forward passes: bfloat16 with ``--bf16``, else None (the weights' own, float32)."""
    return torch.bfloat16 if bf16 else None


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``'s kind, or nothing where ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
