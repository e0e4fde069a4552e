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
from trapo.rewards import RewardFunction, as_reward_function, bounded_reward, default_reward, reward_set
from trapo.rollout import HFEngine, RolloutEngine, SamplingParams
from trapo.trainer import precision, safety
from trapo.trainer.data_prep import as_examples, context_length, prepare_examples, tokenizer_of
from trapo.trainer.rollouts import GuidedSampler, PreparedExample
from trapo.trainer.run import TrainingRun
from trapo.trainer.step import TrainingStep

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
        reward_fn: one reward, unweighted and logged as ``reward/*`` only (``reward_funcs`` is the TRL way).
        engine: a :class:`~trapo.rollout.RolloutEngine`; default :class:`~trapo.rollout.HFEngine` on the model.
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
        reward_fn: RewardFunction | None = None,
        engine: RolloutEngine | None = None,
        accelerator: Accelerator | None = None,
    ):
        _check_arguments(args, train_dataset, eval_dataset, reward_funcs, reward_fn)
        config = args or TRAPOConfig()
        model, tokenizer = _model_and_tokenizer(model, processing_class)
        check_report_to(config.report_to)
        self.accelerator = accelerator or Accelerator(
            mixed_precision="no",  # --bf16 is autocast of the forward passes (trapo.trainer.precision)
            log_with=None if config.report_to == "none" else config.report_to,
            project_dir=str(config.output_dir),
        )
        check_not_sharded(self.accelerator)
        config = config.for_processes(self.accelerator.num_processes)  # TRL's batch fields, if set
        self.config = self.args = config
        self.output_dir = Path(config.output_dir)
        torch.manual_seed(config.seed)
        self.tokenizer = self.processing_class = tokenizer
        examples, loaded, conversational = as_examples(train_dataset, strict=config.strict)
        self.reward_fn = _bounded_rewards(config, reward_funcs, reward_fn, conversational)
        self.schedule = config.schedule()
        self.weights = config.objective_weights()
        model = _with_lora(model, config, peft_config)
        self.items, self.data_report = self._prepare_data(examples, loaded, model)
        self.expert_items = [i for i, item in enumerate(self.items) if item.expert_ids]
        self._build_optimization(model)
        self.engine = engine or HFEngine.from_tokenizer(
            self.unwrapped, tokenizer, config.generation_batch_size, dtype=precision.compute_dtype(config.bf16)
        )
        self.sampler = GuidedSampler(
            self.engine,
            tokenizer,
            self.reward_fn,
            self.schedule,
            boundary_ids=boundary_token_ids(tokenizer, config.prefix_boundary, config.prefix_boundary_match),
            max_completion_length=config.max_completion_length,
            sampling=SamplingParams(temperature=config.temperature, top_p=config.top_p),
            prefix_slack=config.prefix_slack,
            mode=config.rollout_mode,
            prefix_strict=config.prefix_boundary_strict,
        )
        self._init_state()

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
        builtin = bool(getattr(self.reward_fn, "_trapo_builtin", False))
        items, report = prepare_examples(examples, self.tokenizer, config, context_length(model), builtin)
        if config.uses_expert and not any(item.expert_ids for item in items):
            raise ValueError(
                f"method {config.method!r} trains on expert solutions, but no kept training row has "
                f"one ({report.summary()})"
            )
        return items, report

    def _build_optimization(self, model: torch.nn.Module) -> None:
        """AdamW, the LR schedule, the frozen reference (``beta > 0``), all placed by accelerate."""
        config = self.config
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.weight_decay,
        )
        self.scheduler = get_scheduler(
            config.lr_scheduler_type,
            optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=config.max_steps,
        )
        ref_model = None
        if config.beta > 0:  # a frozen copy of the initial model
            import copy

            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.ref_model = None if ref_model is None else self.accelerator.prepare_model(ref_model, evaluation_mode=True)

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
        self.share_prompts = self.accelerator.num_processes == 1


def _check_arguments(args: Any, train_dataset: Any, eval_dataset: Any, reward_funcs: Any, reward_fn: Any) -> None:
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


def _model_and_tokenizer(model: Any, tokenizer: Any) -> tuple[torch.nn.Module, Any]:
    """The model (loaded when a path) and its tokenizer with an EOS token and a PAD token (EOS when unset)."""
    if isinstance(model, (str, os.PathLike)):
        from trapo.models import load_model_and_tokenizer

        model, loaded = load_model_and_tokenizer(model)
        tokenizer = tokenizer or loaded
    if tokenizer is None:
        tokenizer = tokenizer_of(model)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set tokenizer.eos_token before training")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _bounded_rewards(config: TRAPOConfig, reward_funcs: Any, reward_fn: Any, conversational: bool) -> RewardFunction:
    """The reward(s), each bounded by ``reward_timeout`` on its own."""
    if reward_funcs is not None or config.reward_weights is not None:
        rewards = reward_set(
            reward_funcs if reward_funcs is not None else (reward_fn or "math"),
            config.reward_weights,
            conversational=conversational,
        )
        rewards.functions = [
            bounded_reward(f, config.reward_timeout, process=bool(getattr(f, "_trapo_process", False)))
            for f in rewards.functions
        ]  # the set logs each
        return rewards
    reward: RewardFunction = as_reward_function(reward_fn) if reward_fn is not None else default_reward()
    return bounded_reward(reward, config.reward_timeout, process=bool(getattr(reward_fn, "_trapo_process", False)))


def _with_lora(model: torch.nn.Module, config: TRAPOConfig, peft_config: Any) -> torch.nn.Module:
    if config.lora_r <= 0 and peft_config is None:
        return model
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
    """Refuse parameter sharding (FSDP, DeepSpeed ZeRO-3) rather than train wrongly: rollouts generate on the
    unwrapped module, which under sharding holds only this process's shard, and checkpoints and the final
    model are saved from it too. Several processes with DDP (each holding the whole model) are supported."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    zero3 = (
        kind == DistributedType.DEEPSPEED
        and getattr(getattr(accelerator.state, "deepspeed_plugin", None), "zero_stage", 0) == 3
    )
    if kind == DistributedType.FSDP or zero3:
        raise NotImplementedError(
            f"{'FSDP' if kind == DistributedType.FSDP else 'DeepSpeed ZeRO-3'} is not supported: rollouts generate on "
            "the unwrapped model without gathering sharded parameters, and checkpoints are saved from it. Use several "
            "processes with DDP (accelerate launch --multi_gpu), LoRA (--lora_r) or one process."
        )


def check_report_to(report_to: str) -> None:
    """A metric sink whose package is missing is an error naming what to install."""
    import importlib.util

    needs = {"tensorboard": "pip install 'trapo[tensorboard]'", "wandb": "pip install wandb"}
    if report_to in needs and importlib.util.find_spec(report_to) is None:
        raise ImportError(f"report_to={report_to} needs the {report_to} package: {needs[report_to]}")
