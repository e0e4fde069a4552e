"""TRL 1.16 ``GRPOConfig`` fields trapo does not take, each with TRL's default and what to use instead.

A refused field passed at TRL's default changes nothing (TRL's behaviour at that default is trapo's) and is
accepted and dropped; any other value is an error with the advice below (:func:`trapo.config_trl.refuse`).
``tests/library/trainer/test_trl_config.py`` checks, against the installed TRL, that every ``GRPOConfig``
field is a :class:`~trapo.config.TRAPOConfig` field or listed here.
"""

from __future__ import annotations

from typing import Any

_EVAL = "evaluation during training is not supported: evaluate a checkpoint with `trapo eval` (trapo.evaluate)"
_HUB = "trapo does not contact the Hub: save with trainer.save_model(DIR) and upload DIR yourself"
_VLLM = (
    "engine='vllm' (--engine vllm) runs vLLM in the trainer's process, as TRL's colocate mode (its knobs keep "
    "TRL's vllm_* names; server mode is not offered); another engine is a trapo.rollout.RolloutEngine passed as "
    "TRAPOTrainer(engine=...)"
)
_DIST = (
    "several processes run under `accelerate launch` or torchrun (DDP; parameter sharding with --fsdp "
    "full_shard, torch's FSDP2); accelerate's FSDP plugin and DeepSpeed ZeRO-3 are refused (README)"
)
_LOADER = "trapo uses no DataLoader: each step's prompts are a seeded function of (seed, step)"
_LOSS = "trapo trains TRAPO and its baselines: choose method and loss_type (grpo, dr_grpo, dapo, bnpo)"
_PRECISION = "use bf16=True (mixed precision) or leave it off (float32)"
_SPEED = "not supported; the rollout engine has its own cached decode path"
_LOGS = "metrics go to metrics.jsonl, the console and report_to; samples to samples.jsonl (sample_log_steps)"
_ENTROPY = "entropy_coef is a fixed coefficient (entropy_tokens picks the tokens); adaptive control is not supported"
_REF = "the reference model is the frozen initial model (beta > 0); syncing it is not supported"
_SAMPLING = "rollouts sample with temperature, top_p and top_k only (penalties would change the sampled policy)"
_MODEL = "load the model yourself (any dtype, quantised or not) and pass it as model="
_OPTIM = "trapo uses torch's AdamW (learning_rate, adam_beta1, adam_beta2, adam_epsilon, weight_decay)"
_SAVE = "checkpoints hold model, tokenizer, optimizer and scheduler (save_steps, save_minutes, save_total_limit)"

# field -> (TRL's default, what to use instead)
REFUSED: dict[str, tuple[Any, str]] = {
    "optim_args": (None, _OPTIM),
    "optim_target_modules": (None, _OPTIM),
    "average_tokens_across_devices": (True, "the loss normaliser is loss_normalization / loss_type"),
    "label_smoothing_factor": (0.0, "not used by GRPO"),
    "fp16": (False, _PRECISION),
    "bf16_full_eval": (False, _EVAL),
    "fp16_full_eval": (False, _EVAL),
    "tf32": (None, "set torch.backends.cuda.matmul.allow_tf32 yourself before training"),
    "activation_checkpointing": (None, "use gradient_checkpointing=True"),
    "activation_checkpointing_kwargs": (None, "use gradient_checkpointing=True"),
    "torch_compile": (False, _SPEED),
    "torch_compile_backend": (None, _SPEED),
    "torch_compile_mode": (None, _SPEED),
    "use_liger_kernel": (False, _SPEED),
    "liger_kernel_config": (None, _SPEED),
    "use_cache": (False, "the rollout engine always decodes with a KV cache; training forwards never do"),
    "neftune_noise_alpha": (None, "not supported"),
    "torch_empty_cache_steps": (None, "not supported"),
    "auto_find_batch_size": (False, "set mini_batch_size (or per_device_train_batch_size) yourself"),
    "log_on_each_node": (True, _LOGS),
    "logging_nan_inf_filter": (True, "NaN/inf steps are skipped and counted (max_nonfinite_steps)"),
    "include_num_input_tokens_seen": ("no", "num_tokens is always logged"),
    "log_level": ("passive", "use Python's logging module"),
    "log_level_replica": ("warning", "use Python's logging module"),
    "trackio_space_id": (None, "report_to=trackio logs locally; configure trackio yourself"),
    "trackio_bucket_id": (None, "report_to=trackio logs locally; configure trackio yourself"),
    "trackio_static_space_id": (None, "report_to=trackio logs locally; configure trackio yourself"),
    "eval_steps": (None, _EVAL),
    "eval_delay": (0, _EVAL),
    "per_device_eval_batch_size": (8, _EVAL),
    "prediction_loss_only": (False, _EVAL),
    "eval_on_start": (False, _EVAL),
    "eval_do_concat_batches": (True, _EVAL),
    "eval_use_gather_object": (False, _EVAL),
    "eval_accumulation_steps": (None, _EVAL),
    "include_for_metrics": ([], _EVAL),
    "batch_eval_metrics": (False, _EVAL),
    "num_generations_eval": (None, _EVAL),
    "save_only_model": (False, _SAVE),
    "save_on_each_node": (False, _SAVE),
    "enable_jit_checkpoint": (False, "SIGTERM / SIGUSR1 already checkpoint at the next step boundary"),
    "hub_token": (None, _HUB),
    "hub_private_repo": (None, _HUB),
    "hub_model_id": (None, _HUB),
    "hub_strategy": ("every_save", _HUB),
    "hub_always_push": (False, _HUB),
    "hub_revision": (None, _HUB),
    "log_completions_hub_repo": (None, _HUB),
    "load_best_model_at_end": (False, _EVAL),
    "metric_for_best_model": (None, _EVAL),
    "greater_is_better": (None, _EVAL),
    "ignore_data_skip": (False, "a resumed run takes the same prompts it would have: data order is (seed, step)"),
    "restore_callback_states_from_checkpoint": (False, "not supported"),
    "full_determinism": (False, "runs are reproducible from seed on CPU already (docs/ARCHITECTURE.md)"),
    "data_seed": (None, "seed sets the data order too"),
    "accelerator_config": (None, _DIST),
    "parallelism_config": (None, _DIST),
    "dataloader_drop_last": (False, _LOADER),
    "dataloader_num_workers": (0, _LOADER),
    "dataloader_pin_memory": (True, _LOADER),
    "dataloader_persistent_workers": (False, _LOADER),
    "dataloader_prefetch_factor": (None, _LOADER),
    "dataloader_multiprocessing_context": (None, _LOADER),
    "dataloader_in_order": (True, _LOADER),
    "remove_unused_columns": (False, "every column reaches the rewards, as with TRL's GRPO default"),
    "label_names": (None, "not used by GRPO"),
    "train_sampling_strategy": ("random", "prompts are drawn by seeded permutations (shuffle_dataset)"),
    "length_column_name": ("length", "mini-batches are grouped by length already"),
    "ddp_find_unused_parameters": (None, _DIST),
    "ddp_bucket_cap_mb": (None, _DIST),
    "ddp_broadcast_buffers": (None, _DIST),
    "ddp_static_graph": (None, _DIST),
    "ddp_backend": (None, _DIST),
    "ddp_timeout": (1800, _DIST),
    "fsdp_config": (None, _DIST),
    "deepspeed": (None, _DIST),
    "local_rank": (-1, _DIST),
    "debug": ("", "not supported"),
    "skip_memory_metrics": (True, "not supported"),
    "router_aux_loss_coef": (None, "mixture-of-experts auxiliary losses are not supported"),
    "cast_lm_head_to_fp32": (False, "log-probabilities are computed in float32 already"),
    "ds3_gather_for_generation": (True, _DIST),
    "pad_to_multiple_of": ("auto", "rows are padded to the mini-batch's longest"),
    "steps_per_generation": (None, "one generation round per optimizer step; num_iterations reuses rollouts"),
    "min_p": (None, _SAMPLING),
    "generation_kwargs": (None, _SAMPLING),
    "chat_template_kwargs": (None, "render prompts with prompt_template (chat, none, trapo or a file)"),
    "repetition_penalty": (1.0, _SAMPLING),
    "cache_implementation": (None, _SPEED),
    "use_vllm": (False, _VLLM),
    "vllm_mode": ("colocate", _VLLM),
    "vllm_model_impl": ("vllm", _VLLM),
    "vllm_enable_sleep_mode": (False, _VLLM),
    "vllm_structured_outputs_regex": (None, _VLLM),
    "vllm_server_base_url": (None, _VLLM),
    "vllm_server_host": ("0.0.0.0", _VLLM),
    "vllm_server_port": (8000, _VLLM),
    "vllm_server_timeout": (240.0, _VLLM),
    "vllm_group_port": (51216, _VLLM),
    "vllm_tensor_parallel_size": (1, _VLLM),
    "vllm_importance_sampling_clip_min": (None, _VLLM),
    "vllm_importance_sampling_cap": (None, _VLLM),
    "use_transformers_continuous_batching": (False, _VLLM),
    "transformers_continuous_batching_config": (None, _VLLM),
    "use_transformers_paged": (False, _VLLM),
    "delta": (None, "clipping takes epsilon and epsilon_high"),
    "sapo_temperature_neg": (1.05, _LOSS),
    "sapo_temperature_pos": (1.0, _LOSS),
    "vespo_k_pos": (2.0, _LOSS),
    "vespo_lambda_pos": (3.0, _LOSS),
    "vespo_k_neg": (3.0, _LOSS),
    "vespo_lambda_neg": (2.0, _LOSS),
    "importance_sampling_level": ("token", "the ratio is per token (TRAPO.md); sequence-level (GSPO) is not supported"),
    "multi_objective_aggregation": ("sum_then_normalize", "rewards are summed with reward_weights, then scale_rewards"),
    "sync_ref_model": (False, _REF),
    "ref_model_mixup_alpha": (0.6, _REF),
    "ref_model_sync_steps": (512, _REF),
    "top_entropy_quantile": (1.0, _ENTROPY),
    "use_adaptive_entropy": (False, _ENTROPY),
    "entropy_coef_min": (0.0, _ENTROPY),
    "entropy_coef_max": (1.0, _ENTROPY),
    "entropy_coef_delta": (0.005, _ENTROPY),
    "entropy_target": (0.2, _ENTROPY),
    "max_tool_calling_iterations": (None, "tool calling is not supported"),
    "off_policy_mask_threshold": (None, "not supported; num_iterations reuses rollouts with clipping"),
    "use_bias_correction_kl": (True, "the KL term is the k3 estimator to the frozen initial model (beta)"),
    "log_multimodal": (True, "multimodal prompts are not supported"),
    "num_completions_to_print": (None, _LOGS),
    "log_unique_prompts": (False, _LOGS),
}
