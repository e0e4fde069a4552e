"""The rollout engine a run's config names (``engine: hf | vllm``), and the metrics of an engine that keeps its own
copy of the weights (the weight sync's time, the importance weights between its log-probs and the trainer's).

Under ``--fsdp full_shard`` each process runs a vLLM engine of its own on the whole model, as TRL's colocate mode
does with FSDP: its weights are written and synced inside :func:`trapo.trainer.sharding.gathered` (one all-gather
of the model per sync, on every process in step, since every process takes the optimizer step)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from trapo.config import TRAPOConfig
from trapo.objective import LossTerms, TokenBatch
from trapo.rollout import HFEngine, RolloutEngine
from trapo.rollout.vllm import VLLMEngine
from trapo.trainer import precision, sharding


class GatheredVLLMEngine(VLLMEngine):
    """:class:`VLLMEngine` on a model sharded with FSDP2: each sync loads the whole parameters, all-gathered for
    the duration (every process must sync together: each gather is a collective)."""

    def sync_weights(self, model: torch.nn.Module) -> None:
        with sharding.gathered(model):
            super().sync_weights(model)


def make_engine(config: TRAPOConfig, model: torch.nn.Module, tokenizer: Any) -> RolloutEngine:
    """:class:`~trapo.rollout.HFEngine` on ``model`` (``engine="hf"``) or a
    :class:`~trapo.rollout.vllm.VLLMEngine` on a copy of its weights (``engine="vllm"``; on the gathered whole
    weights when ``model`` is sharded with FSDP2)."""
    if config.engine == "hf":
        dtype = precision.compute_dtype(config.bf16)  # --bf16: generation under autocast, bf16 weight copies
        return HFEngine.from_tokenizer(model, tokenizer, config.generation_batch_size, dtype=dtype)
    if config.engine != "vllm":
        raise ValueError(f"engine must be hf or vllm, got {config.engine!r}")
    dtype = config.vllm_dtype
    if dtype == "auto" and config.bf16:
        dtype = "bfloat16"
    length = config.vllm_max_model_length or config.max_prompt_length + config.max_completion_length
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if config.vllm_max_model_length is None and isinstance(context, int):
        length = min(length, context)  # the trainer skips longer prompts anyway
    sharded = sharding.is_sharded(model)
    with sharding.gathered(model) if sharded else contextlib.nullcontext():  # vLLM starts on the whole weights
        return (GatheredVLLMEngine if sharded else VLLMEngine).from_tokenizer(
            model,
            tokenizer,
            dtype=dtype,
            max_model_len=length,
            gpu_memory_utilization=config.vllm_gpu_memory_utilization,
            kv_cache_gib=config.vllm_kv_cache_gib,
            seed=config.seed,
            logprobs=config.vllm_importance_sampling_correction,
            enforce_eager=config.vllm_enforce_eager,
        )


def record_importance_weights(terms: LossTerms, batch: TokenBatch, metrics: Any) -> None:
    """``sampling/importance_weight`` (mean of ``w`` over generated tokens), ``sampling/masked`` (the share of
    them at weight 0) and ``sampling/logprob_diff`` (mean ``|trainer - engine|`` log-prob), as TRL logs them."""
    if terms.importance_weights is None or batch.sampling_logprobs is None:
        return
    mask, count = batch.model_mask, float(batch.model_mask.sum())
    weights = terms.importance_weights[mask]
    metrics.add("sampling/importance_weight", float(weights.sum()), count)
    metrics.add("sampling/masked", float((weights == 0).sum()), count)
    diff = (terms.logprobs - batch.sampling_logprobs)[mask].abs()
    metrics.add("sampling/logprob_diff", float(diff.sum()), count)


def record_sync(engine: RolloutEngine, metrics: Any) -> None:
    """``perf/weight_sync_s``: the seconds this step's weight syncs took, for an engine that times them (vLLM)."""
    seconds = getattr(engine, "last_sync_seconds", None)
    if seconds is not None:
        metrics.add_total("perf/weight_sync_s", seconds)
