"""``TRAPOTrainer``: one trainer for TRAPO, its ablations and its baselines (Algorithm 1 of the paper).

The trainer is built here (model, rewards, data, optimizer, sampler) and made of two halves:
:class:`~trapo.trainer.step.TrainingStep` (one step: rollouts -> advantages -> update) and
:class:`~trapo.trainer.run.TrainingRun` (resume, the loop to ``max_steps``, stop conditions, signals, saving).
Preparing the data is :mod:`trapo.trainer.data_prep`; the metrics files are :mod:`trapo.trainer.metrics`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import get_scheduler

from trapo.config import TRAPOConfig
from trapo.data import LoadResult, boundary_token_ids
from trapo.rewards import RewardSet, reward_identity, reward_set
from trapo.rollout import RolloutEngine, SamplingParams
from trapo.rollout.base import as_engine
from trapo.trainer import precision, resume, safety, sharding
from trapo.trainer.data_prep import as_examples, context_length, prepare_examples, tokenizer_of
from trapo.trainer.engines import make_engine
from trapo.trainer.rollouts import GuidedSampler, PreparedExample
from trapo.trainer.run import TrainingRun
from trapo.trainer.step import TrainingStep
from trapo.trainer.trl_surface import Callbacks

_TRL_ORDER = "TRAPOTrainer(model, reward_funcs, args, train_dataset, eval_dataset, processing_class), TRL's order"


class TRAPOTrainer(TrainingStep, TrainingRun):
    """Train a causal LM with TRAPO or one of its baselines (``args.method``), called like TRL's GRPOTrainer.

    Args:
        model: a ``transformers`` causal LM, or the path of a local ``save_pretrained`` directory.
        reward_funcs: one reward or a list (TRL's ``reward_funcs``): callables in any supported signature
            (:func:`trapo.rewards.as_reward_function`: TRL's, verl's, ``(completion, ground_truth)``), a
            built-in name (``"math"``) or ``"module:function"``; weighted by ``args.reward_weights`` and each
            logged as ``rewards/<name>``. Default: :func:`trapo.rewards.math_reward`.
        args: :class:`~trapo.config.TRAPOConfig` (TRL's ``GRPOConfig`` names accepted); default ``TRAPOConfig()``.
        train_dataset: a ``datasets.Dataset`` or a list of dicts (flat rows: ``prompt``, expert solutions in
            ``expert_solutions`` as a string or a list, the reward's own columns; verl's nesting works too),
            :class:`~trapo.data.Example` rows, or a path (parquet / JSONL files, a directory, a
            ``save_to_disk`` directory).
        eval_dataset: not supported (refused): evaluate the saved model with :func:`trapo.evaluate.evaluate`
            or ``trapo eval``.
        processing_class: the tokenizer (needs an EOS token; PAD falls back to EOS). Default: loaded from
            the model's directory.
        peft_config: a ``peft`` config to wrap the model with (as TRL); ``args.lora_r > 0`` is the other way.
        callbacks: ``transformers.TrainerCallback`` objects (or classes), called as the ``Trainer`` calls them.
        quantization_config: refused unless None (load the quantised model and pass it as ``model``).
        reward_fn: one reward (``reward_funcs`` is the TRL way).
        engine: a :class:`~trapo.rollout.RolloutEngine`; default: the one ``args.engine`` names (``hf``:
            :class:`~trapo.rollout.HFEngine` on the model; ``vllm``: :class:`~trapo.rollout.vllm.VLLMEngine`).
            An engine without per-row ``seeds``, or any object with a ``generate`` of that shape, is adapted
            (:func:`trapo.rollout.base.as_engine`); it then samples from the step's generator.
        accelerator: an ``accelerate.Accelerator``; default one built from the config (``accelerate launch``
            sets the processes).
    """

    def __init__(
        self,
        model: torch.nn.Module | str | os.PathLike,
        reward_funcs: Any = None,
        args: TRAPOConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        *,
        peft_config: Any = None,
        callbacks: list | None = None,
        quantization_config: Any = None,
        reward_fn: Any = None,
        engine: RolloutEngine | None = None,
        accelerator: Accelerator | None = None,
    ):
        _check_arguments(args, train_dataset, eval_dataset, reward_funcs, reward_fn, quantization_config)
        config = args or TRAPOConfig()
        model, tokenizer = _model_and_tokenizer(model, processing_class, config)
        check_report_to(config.report_to)
        self.accelerator = accelerator or _accelerator(config)
        check_not_sharded(self.accelerator)
        config = config.for_processes(self.accelerator.num_processes)  # TRL's batch fields, if set
        self.fsdp = bool(config.fsdp) and self.accelerator.num_processes > 1  # trapo.trainer.sharding
        if config.fsdp and not self.fsdp:
            self.accelerator.print(f"--fsdp {config.fsdp}: one process, nothing to shard; training unsharded")
        self.config = self.args = config
        self.output_dir = Path(config.output_dir)
        torch.manual_seed(config.seed)
        self.tokenizer = self.processing_class = tokenizer
        examples, loaded, conversational = as_examples(train_dataset, config.strict, config.expert_key)
        config = self.config = self.args = config.for_dataset(len(examples))  # max_steps=-1: from epochs
        self.reward_fn = _rewards(config, reward_funcs, reward_fn, conversational)
        expert_keys = loaded.expert_keys if loaded is not None else None
        self.fingerprint = resume.fingerprint(examples, reward_identity(self.reward_fn), expert_keys)
        self.schedule = config.schedule()
        self.weights = config.objective_weights()
        model = _with_lora(model, config, peft_config, self.fsdp)
        self.input_dtype = precision.to_master_weights(model)  # float32 master weights (trainer/precision.py)
        self.items, self.data_report = self._prepare_data(examples, loaded, model)
        self.expert_items = [i for i, item in enumerate(self.items) if item.expert_ids]
        self._build_optimization(model)
        self.engine = as_engine(engine or make_engine(config, self.unwrapped, tokenizer))
        self.sampler = GuidedSampler(
            self.engine,
            tokenizer,
            self.reward_fn,
            self.schedule,
            boundary_ids=boundary_token_ids(tokenizer, config.prefix_boundary, config.prefix_boundary_match),
            max_completion_length=config.max_completion_length,
            sampling=SamplingParams(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k),
            prefix_slack=config.prefix_slack,
            mode=config.rollout_mode,
            prefix_strict=config.prefix_boundary_strict,
        )
        self._init_state()
        objects = {"processing_class": tokenizer, "optimizer": self.optimizer, "lr_scheduler": self.scheduler}
        self.callbacks = Callbacks(callbacks, config, model=self.model, **objects)

    @property
    def state(self) -> Any:
        """A ``transformers.TrainerState``: ``global_step``, ``max_steps``, ``epoch``, ``log_history``."""
        return self.callbacks.state

    def add_callback(self, callback: Any) -> None:
        """Add a ``TrainerCallback`` (an instance or a class), as ``Trainer.add_callback``."""
        self.callbacks.add(callback)

    def _prepare_data(
        self, examples: list, loaded: LoadResult | None, model: torch.nn.Module
    ) -> tuple[list[PreparedExample], Any]:
        """Tokenize the rows; a method that trains on expert solutions refuses data without one, before any work."""
        config = self.config
        if config.uses_expert and not any(ex.expert_solutions for ex in examples):
            why = (loaded.expert_problem() if loaded is not None else None) or "no training row has an expert solution"
            raise ValueError(
                f"method {config.method!r} trains on expert solutions, but {why}. Use a method "
                "without expert guidance (grpo) to train RL only."
            )
        builtin = self.reward_fn.checks_math
        items, report = prepare_examples(examples, self.tokenizer, config, context_length(model), builtin)
        if loaded is not None:
            report.expert_keys = sorted({k for k in loaded.expert_keys.values() if k})
        if config.uses_expert and not any(item.expert_ids for item in items):
            raise ValueError(
                f"method {config.method!r} trains on expert solutions, but no kept training row has "
                f"one ({report.summary()})"
            )
        return items, report

    def _build_optimization(self, model: torch.nn.Module) -> None:
        """AdamW, the LR schedule, the frozen reference (``beta > 0``), placed by accelerate, or sharded with
        the policy under ``--fsdp`` (before the optimizer is built: it then holds this process's shards)."""
        config = self.config
        _prepare_model(model, config)
        ref_model = None
        if config.beta > 0:  # a frozen copy of the initial model
            import copy

            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        if self.fsdp:
            model, ref_model = self._shard(model, ref_model)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_epsilon,
            weight_decay=config.weight_decay,
        )
        self.scheduler = get_scheduler(
            config.lr_scheduler_type,
            optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=config.max_steps,
            scheduler_specific_kwargs=config.lr_scheduler_kwargs,
        )
        if self.fsdp:  # sharded by torch itself: accelerate does not wrap it
            self.model, self.optimizer, self.ref_model = model, optimizer, ref_model
            return
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.ref_model = None if ref_model is None else self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    def _shard(self, model: torch.nn.Module, ref_model: torch.nn.Module | None) -> tuple[torch.nn.Module, Any]:
        """``--fsdp``: shard the policy (and the reference model) over the processes (:mod:`.sharding`)."""
        cfg, device = self.config, self.accelerator.device
        options = {"bf16": cfg.bf16, "offload": "offload" in cfg.fsdp.split()}
        model = sharding.shard_model(model, device, **options)
        if ref_model is not None:
            ref_model = sharding.shard_model(ref_model, device, **options)
        local, total = sharding.element_counts(model)
        self._local_fraction = local / total
        self.accelerator.print(
            f"--fsdp {cfg.fsdp}: {self.accelerator.num_processes} processes; process 0 holds {local:,} of the "
            f"model's {total:,} parameter elements ({self._local_fraction:.1%})"
        )
        return model, ref_model

    def _init_state(self) -> None:
        config = self.config
        self.step = 0
        self._last_batch = None  # for samples.jsonl
        self._reward_error = ""
        self._unapplied_in_a_row = 0  # steps skipped (NaN/inf) or rolled back, in a row
        self._reward_failures_in_a_row = 0
        self.totals: dict[str, int] = defaultdict(int)
        self.update_guard = safety.UpdateGuard(config.update_guard_factor, config.max_update_ratio)
        self._signals = safety.SignalGuard()  # installed by train(); here only its critical-section flags
        self._uncounted_update = False
        self._pending_sizes: list[float] = []
        self._rollback_reason = ""
        # Each distinct prompt computed once in the update (trapo.trainer.shared_prompts) needs one process:
        # with several, DDP's gradient reduction expects one backward per forward.
        self.share_prompts = self.accelerator.num_processes == 1 and not config.gradient_checkpointing


def _accelerator(config: TRAPOConfig) -> Accelerator:
    return Accelerator(
        mixed_precision="no",  # --bf16 is autocast of the forward passes (trapo.trainer.precision)
        cpu=config.use_cpu,
        log_with=config.report_to or None,
        project_dir=str(config.output_dir),
    )


def _check_arguments(
    args: Any, train_dataset: Any, eval_dataset: Any, reward_funcs: Any, reward_fn: Any, quantization_config: Any
) -> None:
    if args is not None and not isinstance(args, TRAPOConfig):
        raise TypeError(f"args must be a TRAPOConfig, got {type(args).__name__}; call {_TRL_ORDER}, or by keyword")
    if train_dataset is None:
        raise ValueError("train_dataset is required")
    if eval_dataset is not None:
        raise ValueError(
            "eval_dataset is not supported: the trainer does not evaluate during training; evaluate the saved "
            "model with trapo.evaluate.evaluate or `trapo eval`"
        )
    if reward_funcs is not None and reward_fn is not None:
        raise ValueError("pass the reward as reward_funcs or reward_fn, not both")
    if quantization_config is not None:
        raise ValueError(
            "quantization_config is not supported: load the quantised model yourself and pass it as model= "
            "(with peft_config for LoRA on top)"
        )


def _model_and_tokenizer(model: Any, tokenizer: Any, config: TRAPOConfig) -> tuple[torch.nn.Module, Any]:
    """The model (loaded when a path, with TRL's ``model_init_kwargs``) and its tokenizer with an EOS token and
    a PAD token (EOS when unset)."""
    if isinstance(model, (str, os.PathLike)):
        from trapo.models import load_model_and_tokenizer

        init = {**(config.model_init_kwargs or {}), "trust_remote_code": config.trust_remote_code or None}
        model, loaded = load_model_and_tokenizer(model, **init)
        tokenizer = tokenizer or loaded
    if tokenizer is None:
        tokenizer = tokenizer_of(model)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set tokenizer.eos_token before training")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _rewards(config: TRAPOConfig, reward_funcs: Any, reward_fn: Any, conversational: bool) -> RewardSet:
    """Every reward as a record (:class:`~trapo.rewards.Reward`), through one path: weighted by
    ``reward_weights``, each call bounded by ``reward_timeout``; default the math reward."""
    return reward_set(
        reward_funcs if reward_funcs is not None else (reward_fn or "math"),
        config.reward_weights,
        timeout=config.reward_timeout,
        conversational=conversational,
    )


def _with_lora(model: torch.nn.Module, config: TRAPOConfig, peft_config: Any, sharded: bool) -> torch.nn.Module:
    if config.lora_r <= 0 and peft_config is None:
        return model
    if sharded:
        raise NotImplementedError(
            "--fsdp full_shard with LoRA (--lora_r / peft_config) is not supported (untested); train LoRA "
            "without --fsdp (each process holds the model) or all weights with --fsdp full_shard"
        )
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ImportError("LoRA (lora_r > 0 or peft_config) needs peft: pip install 'trapo[lora]'") from err
    targets = config.lora_target_modules
    return get_peft_model(
        model,
        peft_config
        or LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            task_type="CAUSAL_LM",
            target_modules="all-linear" if targets == ["all-linear"] else targets,
        ),
    )


def check_not_sharded(accelerator: Accelerator) -> None:
    """Refuse the sharding set-ups this trainer does not drive (accelerate's own FSDP plugin, DeepSpeed ZeRO-3)
    rather than train wrongly: rollouts, checkpoints and the final model would read this process's shard as if
    it were the model. ``--fsdp full_shard`` shards with torch's FSDP2 directly (:mod:`.sharding`)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    zero3 = (
        kind == DistributedType.DEEPSPEED
        and getattr(getattr(accelerator.state, "deepspeed_plugin", None), "zero_stage", 0) == 3
    )
    if kind == DistributedType.FSDP or zero3:
        what = "accelerate's FSDP plugin (an accelerate config with FSDP)" if not zero3 else "DeepSpeed ZeRO-3"
        raise NotImplementedError(
            f"{what} is not supported: rollouts, checkpoints and the final model would see only this process's "
            "shard. Shard with --fsdp full_shard (torch's FSDP2, launched with torchrun or a plain accelerate "
            "launch --multi_gpu), or use several processes with DDP, LoRA (--lora_r) or one process."
        )


def check_report_to(report_to: list[str]) -> None:
    """A metric sink whose package is missing is an error naming what to install."""
    import importlib.util

    needs = {"tensorboard": "pip install 'trapo[tensorboard]'"}
    for sink in report_to:
        if importlib.util.find_spec(sink) is None:
            raise ImportError(f"report_to={sink} needs the {sink} package: {needs.get(sink, f'pip install {sink}')}")


def _prepare_model(model: torch.nn.Module, config: TRAPOConfig) -> None:
    """TRL's model switches: gradient checkpointing and dropout off."""
    if config.gradient_checkpointing:
        kwargs = config.gradient_checkpointing_kwargs
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.20's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if hasattr(model, "enable_input_require_grads"):  # LoRA: the checkpointed blocks need a grad input
            model.enable_input_require_grads()
    if config.disable_dropout:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
