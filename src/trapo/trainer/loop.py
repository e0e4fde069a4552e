"""``TRAPOTrainer``: one loop for TRAPO, its ablations and its baselines (Algorithm 1 of the paper).

Each optimizer step:

1. take this step's prompts (a function of ``(seed, step)``; processes take disjoint slices);
2. SFT steps (``sft`` / the first stage of ``sft-then-grpo``): NLL on expert solutions, go to 5;
3. rollouts: micro-group sampling with adaptive expert prefixes, rewards (:mod:`trapo.trainer.rollouts`);
4. group-relative advantages (:func:`trapo.advantages.group_advantages`), then the batch loss — TrSFT on
   prefix tokens + policy gradient on model tokens + entropy bonus (:func:`trapo.objective.trapo_loss`) —
   one forward/backward per mini-batch, gradients averaged over processes;
5. clip, optimizer and scheduler step; metrics (reduced over processes) to ``metrics.jsonl``; checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_scheduler

from trapo.advantages import group_advantages
from trapo.atomic import atomic_directory
from trapo.config import TRAPOConfig
from trapo.data import (
    Example,
    LoadResult,
    boundary_token_ids,
    encode_prompt,
    encode_response,
    examples_from_rows,
    expert_text,
    load_examples,
)
from trapo.losses import token_logprobs
from trapo.objective import (
    ObjectiveWeights,
    TokenBatch,
    TokenReduction,
    batch_reduction,
    sft_batch_loss,
    trapo_loss,
)
from trapo.rewards import (
    FAILURE_KINDS,
    RewardFunction,
    RewardSet,
    as_reward_function,
    bounded_reward,
    default_reward,
    reward_set,
)
from trapo.rewards.math_answers import ground_truth_problem
from trapo.rollout import HFEngine, RolloutEngine, SamplingParams
from trapo.trainer import checkpoint as ckpt
from trapo.trainer import precision, safety
from trapo.trainer.batch import build_token_batch, length_sorted_mini_batches, row_length
from trapo.trainer.rollouts import GuidedSampler, PreparedExample, RolloutBatch, Trajectory
from trapo.trainer.shared_prompts import PromptCache, distinct_prompts, supports_shared_prompts


@dataclass
class DataReport:
    """What preparing the training set kept and skipped."""

    rows: int = 0
    kept: int = 0
    without_expert: int = 0
    too_long: list[int] = field(default_factory=list)
    expert_truncated: int = 0
    origins: dict[int, str] = field(default_factory=dict)  # row -> "file:row" where known
    over_context: list[int] = field(default_factory=list)  # prompt alone fills the model's context: skipped
    near_context: list[int] = field(default_factory=list)  # prompt + max_completion_length exceeds it
    context: int | None = None
    think_kept: int = 0  # expert solutions with a <think> block used whole (expert_think="keep")
    unverifiable: dict[int, str] = field(default_factory=dict)  # row -> why the reward cannot check its answer

    def _where(self, rows: list[int]) -> str:
        shown = ", ".join(self.origins.get(r, f"row {r}") for r in rows[:5])
        return shown + (", ..." if len(rows) > 5 else "")

    def summary(self) -> str:
        text = f"{self.kept}/{self.rows} rows kept; {self.without_expert} without an expert solution (RL only)"
        if self.too_long:
            text += f"; {len(self.too_long)} skipped as longer than max_prompt_length ({self._where(self.too_long)})"
        if self.over_context:
            text += (
                f"; {len(self.over_context)} skipped as longer than the model's context of {self.context} "
                f"tokens ({self._where(self.over_context)})"
            )
        if self.near_context:
            text += (
                f"; {len(self.near_context)} whose prompt + max_completion_length exceed the model's context "
                f"of {self.context} tokens ({self._where(self.near_context)})"
            )
        if self.expert_truncated:
            text += f"; {self.expert_truncated} expert solutions truncated to max_completion_length"
        if self.think_kept:
            text += (
                f"; {self.think_kept} expert solutions hold <think>...</think> and are used whole "
                "(the authors train on the text inside: expert_think='extract')"
            )
        if self.unverifiable:
            rows = sorted(self.unverifiable)
            text += (
                f"; {len(rows)} with a ground truth the math reward cannot verify (rows {rows[:5]}"
                f"{', ...' if len(rows) > 5 else ''})"
            )
        return text


@dataclass
class TrainResult:
    output_dir: Path
    final_model_dir: Path
    steps: int
    last_metrics: dict[str, float]


def step_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (seed, step, process ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


class _Metrics:
    """Sums and counts per name, reduced over processes at the end of a step.

    A mean metric is sum / count over every process; a total (``add_total``: a loss whose mini-batch
    parts are already normalised to the batch) is the sum over mini-batches, averaged over processes
    (as the gradients are).
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, float] = defaultdict(float)
        self.totals: set[str] = set()

    def add(self, name: str, value: float, count: float = 1.0) -> None:
        """Add ``value`` as a sum over ``count`` items (the metric is sum / count)."""
        self.sums[name] += float(value)
        self.counts[name] += float(count)

    def add_total(self, name: str, value: float) -> None:
        self.totals.add(name)
        self.sums[name] += float(value)
        self.counts[name] = 1.0  # one per process: the reduced metric is the mean over processes

    def reduce(self, accelerator: Accelerator) -> dict[str, float]:
        names = sorted(self.sums)
        if accelerator.num_processes > 1:
            t = torch.tensor(
                [[self.sums[n], self.counts[n]] for n in names], dtype=torch.float64, device=accelerator.device
            )
            t = accelerator.reduce(t, reduction="sum").cpu()
            pairs = {n: (float(t[i, 0]), float(t[i, 1])) for i, n in enumerate(names)}
        else:
            pairs = {n: (self.sums[n], self.counts[n]) for n in names}
        return {n: (s / c if c else 0.0) for n, (s, c) in pairs.items()}


class TRAPOTrainer:
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
        processing_class: the tokenizer (needs an EOS token; PAD falls back to EOS). Default: loaded from
            the model's directory.
        peft_config: a ``peft`` config to wrap the model with (as TRL); ``args.lora_r > 0`` is the other way.
        tokenizer, config, reward_fn: the former names of ``processing_class``, ``args``, ``reward_funcs``.
        engine: a :class:`~trapo.rollout.RolloutEngine`; default :class:`~trapo.rollout.HFEngine` on the model.
        accelerator: an ``accelerate.Accelerator``; default one built from the config (``accelerate launch``
            sets the processes).

    The former positional form ``TRAPOTrainer(model, tokenizer, train_dataset, config, reward_fn)`` still works.
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
        tokenizer: Any = None,
        config: TRAPOConfig | None = None,
        reward_fn: Callable | None = None,
        engine: RolloutEngine | None = None,
        accelerator: Accelerator | None = None,
    ):
        if isinstance(train_dataset, TRAPOConfig) or hasattr(reward_funcs, "eos_token_id"):
            # the former form: TRAPOTrainer(model, tokenizer, train_dataset, config[, reward_fn[, engine]])
            tokenizer, reward_funcs = reward_funcs, None
            if isinstance(train_dataset, TRAPOConfig):
                args, train_dataset = train_dataset, args
            elif not isinstance(args, TRAPOConfig):
                args, train_dataset = None, args if train_dataset is None else train_dataset
            if callable(eval_dataset) and reward_fn is None:
                reward_fn, eval_dataset = eval_dataset, None
            if processing_class is not None and hasattr(processing_class, "generate") and engine is None:
                engine, processing_class = processing_class, None
        config = args or config or TRAPOConfig()
        tokenizer = processing_class or tokenizer
        if isinstance(model, (str, os.PathLike)):
            from trapo.models import load_model_and_tokenizer

            model, loaded = load_model_and_tokenizer(model)
            tokenizer = tokenizer or loaded
        if tokenizer is None:
            tokenizer = _tokenizer_of(model)
        if train_dataset is None:
            raise ValueError("train_dataset is required")
        if reward_funcs is not None and reward_fn is not None:
            raise ValueError("pass the reward as reward_funcs or reward_fn, not both")
        _check_report_to(config.report_to)
        self.accelerator = accelerator or Accelerator(
            mixed_precision="no",  # --bf16 is autocast of the forward passes (trapo.trainer.precision)
            log_with=None if config.report_to == "none" else config.report_to,
            project_dir=str(config.output_dir),
        )
        _check_not_sharded(self.accelerator)
        config = config.for_processes(self.accelerator.num_processes)  # TRL's batch fields, if set
        self.config = self.args = config
        self.output_dir = Path(config.output_dir)
        torch.manual_seed(config.seed)
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token; set tokenizer.eos_token before training")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = self.processing_class = tokenizer
        examples, loaded, conversational = _as_examples(train_dataset, strict=config.strict)
        if reward_funcs is not None or config.reward_weights is not None:
            rewards = reward_set(
                reward_funcs if reward_funcs is not None else (reward_fn or "math"),
                config.reward_weights,
                conversational=conversational,
            )
            rewards.functions = [
                bounded_reward(f, config.reward_timeout, process=bool(getattr(f, "_trapo_process", False)))
                for f in rewards.functions
            ]  # each bounded on its own; the set logs each
            self.reward_fn: RewardFunction = rewards
        else:
            reward: RewardFunction = as_reward_function(reward_fn) if reward_fn is not None else default_reward()
            self.reward_fn = bounded_reward(
                reward, config.reward_timeout, process=bool(getattr(reward_fn, "_trapo_process", False))
            )
        self._reward_error = ""
        self.schedule = config.schedule()
        self.prefix_loss = config.resolved_prefix_loss
        self.weights = ObjectiveWeights(
            prefix_loss=self.prefix_loss,
            trsft_alpha=config.trsft_alpha,
            prefix_loss_coef=config.prefix_loss_coef,
            luffy_gamma=config.luffy_gamma,
            entropy_coef=config.entropy_coef,
            epsilon=config.epsilon,
            epsilon_high=config.epsilon if config.epsilon_high is None else config.epsilon_high,
            beta=config.beta,
            entropy_tokens=config.entropy_tokens,
        )

        if config.lora_r > 0 or peft_config is not None:
            try:
                from peft import LoraConfig, get_peft_model
            except ImportError as err:
                raise ImportError("LoRA (lora_r > 0 or peft_config) needs peft: pip install 'trapo[lora]'") from err

            targets = config.lora_target_modules
            model = get_peft_model(
                model,
                peft_config
                or LoraConfig(
                    r=config.lora_r,
                    lora_alpha=config.lora_alpha,
                    task_type="CAUSAL_LM",
                    target_modules="all-linear" if targets == ["all-linear"] else targets,
                ),
            )

        guided = any(r > 0 for r in self.schedule.ratios) or config.sft_steps > 0
        if guided and not any(ex.expert_solutions for ex in examples):  # before any work
            why = (loaded.expert_problem() if loaded is not None else None) or "no training row has an expert solution"
            raise ValueError(
                f"method {config.method!r} trains on expert solutions, but {why}. Use a method "
                "without expert guidance (grpo) to train RL only."
            )
        self.items, self.data_report = self._prepare(examples, _context_length(model))
        self.expert_items = [i for i, item in enumerate(self.items) if item.expert_ids]
        if guided and not self.expert_items:
            raise ValueError(
                f"method {config.method!r} trains on expert solutions, but no kept training row has "
                f"one ({self.data_report.summary()})"
            )

        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
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
        if config.beta > 0:  # a frozen copy of the initial model, placed by accelerate like the policy
            import copy

            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.ref_model = None if ref_model is None else self.accelerator.prepare_model(ref_model, evaluation_mode=True)

        self.compute_dtype = precision.compute_dtype(config.bf16)
        self.engine = engine or HFEngine.from_tokenizer(
            self.unwrapped, tokenizer, config.generation_batch_size, dtype=self.compute_dtype
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
        self.step = 0
        self._last_batch: RolloutBatch | None = None  # for samples.jsonl
        self._nonfinite_in_a_row = 0
        self._reward_failures_in_a_row = 0
        self.totals: dict[str, int] = defaultdict(int)
        self.update_guard = safety.UpdateGuard(config.update_guard_factor, config.max_update_ratio)
        self._signals = safety.SignalGuard()  # installed by train(); here only its critical-section flags
        self._dirty = False  # an optimizer step of self.step was applied but self.step not yet counted
        self._pending_sizes: list[float] = []
        self._rollback_reason = ""
        # The update computes each distinct prompt once (trapo.trainer.shared_prompts) in one process; with
        # several, DDP's gradient reduction expects one backward per forward, and the plain path is used.
        self.share_prompts = self.accelerator.num_processes == 1

    # ------------------------------------------------------------------ set-up
    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def _prepare(
        self, dataset: Sequence[Example], context: int | None = None
    ) -> tuple[list[PreparedExample], DataReport]:
        cfg, report, items = self.config, DataReport(rows=len(dataset), context=context), []
        for row, example in enumerate(dataset):
            if example.origin:
                report.origins[row] = example.origin
            where = example.origin or f"training row {row}"
            try:
                prompt_ids = encode_prompt(self.tokenizer, example, cfg.prompt_template)
            except Exception as err:  # e.g. jinja's TemplateError for a chat role the template does not know
                raise ValueError(
                    f"{where}: the tokenizer's chat template cannot render the prompt ({type(err).__name__}: {err})"
                ) from err
            if context is not None and len(prompt_ids) >= context:
                if cfg.strict:
                    raise ValueError(f"{where}: prompt has {len(prompt_ids)} tokens, the model's context is {context}")
                report.over_context.append(row)
                continue
            if len(prompt_ids) > cfg.max_prompt_length:
                if cfg.strict:
                    raise ValueError(
                        f"{where}: prompt has {len(prompt_ids)} tokens, more than "
                        f"max_prompt_length={cfg.max_prompt_length}"
                    )
                report.too_long.append(row)
                continue
            if context is not None and len(prompt_ids) + cfg.max_completion_length > context:
                report.near_context.append(row)
            experts = []
            for solution in example.expert_solutions:
                if cfg.expert_think == "keep" and "<think>" in solution and "</think>" in solution:
                    report.think_kept += 1
                ids = encode_response(self.tokenizer, expert_text(solution, cfg.expert_think))
                if len(ids) > cfg.max_completion_length:
                    report.expert_truncated += 1
                    ids = ids[: cfg.max_completion_length]
                experts.append(ids)
            report.without_expert += not experts
            items.append(PreparedExample(example, prompt_ids, experts))
        report.kept = len(items)
        if getattr(self.reward_fn, "_trapo_builtin", False):  # checked up front, and cached for training
            for row, example in enumerate(dataset):
                problem = ground_truth_problem(example.answer)
                if problem:
                    report.unverifiable[row] = problem
        if not items:
            raise ValueError(f"no usable training rows: {report.summary()}")
        return items, report

    def _indices(self, step: int, pool: Sequence[int]) -> list[int]:
        """This process's rows for ``step``: epochs of seeded permutations of ``pool``, sliced by process."""
        n, per_step = len(pool), self.config.prompts_per_step
        out = []
        for k in range(step * per_step, (step + 1) * per_step):
            perm = np.random.default_rng(step_seed(self.config.seed, k // n, 7)).permutation(n)
            out.append(pool[int(perm[k % n])])
        return out[self.accelerator.process_index :: self.accelerator.num_processes]

    def _generator(self, step: int) -> torch.Generator:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(step_seed(self.config.seed, step, self.accelerator.process_index, 11))
        return gen

    # ------------------------------------------------------------------ one step
    def rollout(self, step: int) -> RolloutBatch:
        """Sample and score this process's trajectories for ``step``."""
        items = [self.items[i] for i in self._indices(step, range(len(self.items)))]
        return self.sampler.sample(items, self._generator(step))

    def _mini_batches(self, trajectories: Sequence[Trajectory], shared_prompt: bool = False) -> list[list[int]]:
        """Indices of each mini-batch of a batch (at most ``mini_batch_size`` trajectories each, grouped by the
        width of their rows so that padding costs little: :func:`trapo.trainer.batch.length_sorted_mini_batches`)."""
        return length_sorted_mini_batches(
            [row_length(t, shared_prompt) for t in trajectories], self.config.mini_batch_size
        )

    def _shares_prompts(self, trajectories: Sequence[Trajectory]) -> bool:
        """Whether the update computes each distinct prompt once: where the model supports it and some
        trajectories share a prompt (otherwise the prompt pass would be one forward more for nothing)."""
        return (
            self.share_prompts
            and len({tuple(t.prompt_ids) for t in trajectories}) < len(trajectories)
            and supports_shared_prompts(self.unwrapped)
        )

    def _global_counts(self, masks: Sequence[torch.Tensor]) -> tuple[float, float] | None:
        if self.accelerator.num_processes == 1:
            return None
        local = torch.tensor(
            [sum(float(m.sum()) for m in masks), sum(float((m.sum(1) > 0).sum()) for m in masks)],
            dtype=torch.float64,
            device=self.accelerator.device,
        )
        total = self.accelerator.reduce(local, reduction="sum")
        return float(total[0]), float(total[1])

    def _reduction(self, kind: str, masks: Sequence[torch.Tensor]) -> TokenReduction:
        return batch_reduction(
            kind,
            masks,
            self.config.max_completion_length,
            self.accelerator.num_processes,
            self._global_counts(masks),
            constant=self.config.loss_constant,
        )

    def _backward_all(self, n_batches: int, loss_of: Callable[[int], torch.Tensor]) -> None:
        for i in range(n_batches):
            if i < n_batches - 1:
                with self.accelerator.no_sync(self.model):
                    self.accelerator.backward(loss_of(i))
            else:
                self.accelerator.backward(loss_of(i))

    def advantages(self, batch: RolloutBatch) -> torch.Tensor:
        """Group-relative advantages of ``batch``'s trajectories, one per trajectory (§3)."""
        cfg, trajs = self.config, batch.trajectories
        guided = torch.tensor([t.guided for t in trajs])
        rewards = torch.tensor([t.reward for t in trajs], dtype=torch.float32)
        advantages = group_advantages(
            rewards,
            torch.tensor([t.prompt_index for t in trajs]),
            scale_by_std=cfg.scale_rewards == "group",
            baseline_mask=~guided if cfg.advantage_baseline == "unguided" else None,
        )
        if cfg.scale_rewards == "batch":  # TRL's "batch": the std of every reward of the step, over processes
            moments = torch.tensor(
                [len(rewards), float(rewards.sum()), float((rewards.double() ** 2).sum())],
                dtype=torch.float64,
                device=self.accelerator.device,
            )
            if self.accelerator.num_processes > 1:
                moments = self.accelerator.reduce(moments, reduction="sum")
            n, total, squares = (float(x) for x in moments.cpu())
            std = math.sqrt(max(squares / n - (total / n) ** 2, 0.0)) if n else 0.0
            advantages = advantages / (std + 1e-6) if std > 0 else torch.zeros_like(advantages)
        return advantages

    def update(self, batch: RolloutBatch, advantages: torch.Tensor, metrics: _Metrics) -> None:
        """Backpropagate the batch loss (:func:`trapo.objective.trapo_loss`) of ``batch`` with ``advantages``.

        With ``num_iterations == 1`` (the paper) this accumulates the gradients of one pass over the batch
        and leaves the optimizer step to the caller. With ``num_iterations = K > 1`` (PPO-style reuse of the
        rollouts) it takes the first ``K - 1`` optimizer steps itself, one after each pass, with the ratio
        taken to the policy that sampled the batch, and leaves the last pass's gradients to the caller.
        Metrics describe the last pass. Where trajectories share prompts, each distinct prompt is computed
        once per pass and its KV cache serves every trajectory of it (:mod:`trapo.trainer.shared_prompts`).
        """
        cfg, device, pad = self.config, self.accelerator.device, self.tokenizer.pad_token_id
        trajs = batch.trajectories
        shared = self._shares_prompts(trajs)
        chunks = self._mini_batches(trajs, shared)
        tokens = [build_token_batch([trajs[j] for j in c], pad, device, shared_prompt=shared) for c in chunks]
        advs = [advantages[c].to(device) for c in chunks]
        model_tokens = self._reduction(cfg.loss_normalization, [b.model_mask for b in tokens])
        prefix_tokens = self._reduction(cfg.loss_normalization, [b.prefix_mask for b in tokens])
        entropy_tokens = (
            self._reduction(cfg.loss_normalization, [b.response_mask for b in tokens])
            if cfg.entropy_tokens == "all"
            else None
        )
        prompts, prompt_of = distinct_prompts(trajs)
        prompt_rows = [torch.tensor([prompt_of[j] for j in c], device=device) for c in chunks]

        def encode(model: torch.nn.Module) -> PromptCache | None:
            """The distinct prompts' KV cache on ``model`` (None on the plain path)."""
            with precision.autocast(self.compute_dtype, device):
                return PromptCache.encode(model, prompts, pad, device) if shared else None

        def logits_of(model: torch.nn.Module, i: int, cache: PromptCache | None) -> torch.Tensor:
            b = tokens[i]
            with precision.autocast(self.compute_dtype, device):
                if cache is None:
                    return model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits.float()
                return cache.logits(model, b.input_ids, b.attention_mask, prompt_rows[i]).float()

        def logprobs_of(model: torch.nn.Module) -> list[torch.Tensor]:
            cache = encode(model)
            return [token_logprobs(logits_of(model, i, cache)[:, :-1].float(), b.labels) for i, b in enumerate(tokens)]

        old: list[torch.Tensor | None] = [None] * len(chunks)
        ref: list[torch.Tensor | None] = [None] * len(chunks)
        with torch.no_grad():  # only PPO-style reuse and the KL penalty need a pass without the gradient
            if cfg.num_iterations > 1:
                old = [*logprobs_of(self.model)]
            if self.ref_model is not None:
                ref = [*logprobs_of(self.ref_model)]

        record = False
        cut: PromptCache | None = None  # this pass's prompt cache, cut from its graph (PromptCache.cut)

        def loss_of(i: int) -> torch.Tensor:
            b = tokens[i]
            terms = trapo_loss(
                logits_of(self.model, i, cut),
                b,
                advs[i],
                self.weights,
                model_tokens=model_tokens,
                prefix_tokens=prefix_tokens,
                old_logprobs=old[i],
                ref_logprobs=ref[i],
                entropy_reduction=entropy_tokens,
            )
            if record:
                self._record_loss(terms, b, metrics)
            return terms.total

        for iteration in range(cfg.num_iterations):
            if iteration > 0:  # PPO-style: one optimizer step per pass over the batch; the last is the caller's
                self._apply_gradients(metrics)
            record = iteration == cfg.num_iterations - 1
            cache = encode(self.model)
            cut = cache.cut() if cache is not None else None
            self._backward_all(len(chunks), loss_of)
            if cache is not None:
                cache.backward(cut)  # the mini-batches' gradient on the prompts' keys and values, once
        self._record_batch(batch, metrics)

    def _record_loss(self, terms, b: TokenBatch, metrics: _Metrics) -> None:
        for name, value in (
            ("loss/total", terms.total.detach()),
            ("loss/policy", terms.policy),
            ("loss/prefix", terms.prefix),
            ("loss/entropy", terms.entropy),
            ("loss/kl", terms.kl),
        ):
            metrics.add_total(name, float(value))
        metrics.add(
            "trust/prefix_below_alpha",
            float((terms.logprobs.exp()[b.prefix_mask] < self.config.trsft_alpha).sum()),
            float(b.prefix_mask.sum()),
        )
        if terms.token_entropy is not None:
            metrics.add("entropy", float(terms.token_entropy[b.model_mask].sum()), float(b.model_mask.sum()))
            if self.config.entropy_tokens == "all":
                metrics.add(
                    "entropy/response", float(terms.token_entropy[b.response_mask].sum()), float(b.response_mask.sum())
                )

    def _record_batch(self, batch: RolloutBatch, metrics: _Metrics) -> None:
        trajs = batch.trajectories
        rewards = torch.tensor([t.reward for t in trajs], dtype=torch.float32)
        guided = torch.tensor([t.guided for t in trajs])
        metrics.add("reward/mean", float(rewards.sum()), len(trajs))
        metrics.add("reward/unguided", float(rewards[~guided].sum()), float((~guided).sum()))
        metrics.add("reward/guided", float(rewards[guided].sum()), float(guided.sum()))
        for level in range(len(self.schedule.sizes)):
            metrics.add(f"guidance/level_{level}", sum(t.level == level for t in trajs), len(trajs))
        generating = [t for t in trajs if t.completion_ids]
        metrics.add("length/completion", sum(len(t.completion_ids) for t in generating), len(generating))
        metrics.add("length/response", sum(len(t.response_ids) for t in trajs), len(trajs))
        metrics.add("length/prefix", sum(len(t.prefix_ids) for t in trajs if t.guided), float(guided.sum()))
        metrics.add_total("reward/errors", batch.reward_errors)
        metrics.add("reward/failed", batch.reward_errors, len(trajs))
        for kind in FAILURE_KINDS:
            metrics.add(f"reward/failed_{kind}", batch.reward_failures.get(kind, 0), len(trajs))
        self._reward_error = batch.first_reward_error

    def sft_update(self, step: int, metrics: _Metrics) -> None:
        """Plain SFT on expert solutions for this step's prompts (the SFT baseline / first stage)."""
        cfg, device = self.config, self.accelerator.device
        gen = self._generator(step)
        trajs = []
        for i in self._indices(step, self.expert_items):
            item = self.items[i]
            expert = item.expert_ids[int(torch.randint(len(item.expert_ids), (1,), generator=gen))]
            trajs.append(Trajectory(0, 0, 0, item.prompt_ids, expert, [], prefix_loss=True, reward=1.0))
        chunks = self._mini_batches(trajs)
        tokens = [build_token_batch([trajs[j] for j in c], self.tokenizer.pad_token_id, device) for c in chunks]
        expert_tokens = self._reduction(cfg.sft_normalization, [b.prefix_mask for b in tokens])

        def loss_of(i: int) -> torch.Tensor:
            b = tokens[i]
            with precision.autocast(self.compute_dtype, device):
                logits = self.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits.float()
            loss = sft_batch_loss(logits, b, expert_tokens)
            metrics.add_total("loss/sft", float(loss.detach()))
            metrics.add_total("loss/total", float(loss.detach()))
            return loss

        self._backward_all(len(chunks), loss_of)
        metrics.add("length/response", sum(len(t.response_ids) for t in trajs), len(trajs))

    def _apply_gradients(self, metrics: _Metrics) -> tuple[float, bool]:
        """Clip and take an optimizer step on the accumulated gradients, unless the loss or the gradient is
        NaN/inf (then the step is skipped) or the update guard rolls the step back (:class:`UpdateGuard`);
        gradients are cleared either way. Returns (grad norm, applied)."""
        grad_norm = torch.tensor(0.0)
        if self.config.max_grad_norm > 0:
            grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        finite = bool(torch.isfinite(torch.as_tensor(grad_norm)).all()) and math.isfinite(metrics.sums["loss/total"])
        applied = finite
        if finite and self.update_guard.enabled:
            applied, size, reason = self.update_guard.judge(
                self.optimizer, self.scheduler.get_last_lr()[0], self._reduce_sum
            )
            if applied:
                self._pending_sizes.append(size)
            else:
                self._rollback_reason = reason
        if applied:
            if not self._dirty:
                self._dirty = True  # from here until the step is counted, memory holds a half-finished step
                self._signals.enter_critical()
            self.optimizer.step()
            self.engine.sync_weights(self.unwrapped)
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm), applied

    def _step_counted(self) -> None:
        """The step's update, scheduler step and logs are all in: the state is consistent again."""
        for size in self._pending_sizes:
            self.update_guard.accept(size)
        self._pending_sizes = []
        self._dirty = False

    def _reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return values
        return self.accelerator.reduce(values.to(self.accelerator.device), reduction="sum").cpu()

    def _any_process(self, flag: bool) -> bool:
        """True when ``flag`` is true on any process (every process gets the same answer)."""
        return bool(self._reduce_sum(torch.tensor([float(flag)], dtype=torch.float64))[0] > 0)

    def training_step(self, step: int) -> dict[str, float]:
        """One optimizer step; returns the metrics reduced over processes."""
        cfg = self.config
        if self._dirty:  # the previous step was taken outside train(): it is complete now
            self._step_counted()
        metrics = _Metrics()
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        phase = "sft" if step < cfg.sft_steps else "rl"
        generated = 0
        if phase == "sft":
            self.sft_update(step, metrics)
        else:
            from transformers import TrainerState

            self.sampler.trainer_state = TrainerState(global_step=step, max_steps=cfg.max_steps)
            batch = self.rollout(step)
            if isinstance(self.reward_fn, RewardSet):  # each reward on its own, as TRL logs them
                for name, (total, count) in self.reward_fn.pop_stats().items():
                    metrics.add(f"rewards/{name}", total, count)
            generated = batch.generated_tokens
            metrics.add("perf/generation_s", batch.generation_seconds, 1)
            metrics.add("perf/tokens_per_s", batch.generated_tokens, batch.generation_seconds)
            self._last_batch = batch
            self.update(batch, self.advantages(batch), metrics)
        self._rollback_reason = ""
        grad_norm, applied = self._apply_gradients(metrics)
        finite = applied or bool(self._rollback_reason)
        if applied:
            self.scheduler.step()
            self._nonfinite_in_a_row = 0
        else:
            self._nonfinite_in_a_row += 1
            self.totals["nonfinite_steps" if not finite else "rolled_back_steps"] += 1
        metrics.add("grad_norm", grad_norm, 1)
        metrics.add("perf/step_s", time.perf_counter() - t0, 1)
        metrics.add("perf/generated_tokens", generated, 1)
        out = metrics.reduce(self.accelerator)
        out["perf/step_s"] = time.perf_counter() - t0
        out["lr"] = self.scheduler.get_last_lr()[0]
        out["skipped_nonfinite"] = float(not finite)
        out["rolled_back"] = float(finite and not applied)
        out["sft_step"] = float(phase == "sft")
        return out

    # ------------------------------------------------------------------ the run
    def train(self, resume_from_checkpoint: str | bool | None = None) -> TrainResult:
        """Run to ``config.max_steps``.

        ``resume_from_checkpoint``: True (the latest complete checkpoint in output_dir, falling back to the
        one before when it is unreadable), a checkpoint path, or ``"auto"`` (resume when output_dir has a
        checkpoint, else start fresh). A fresh run refuses an output_dir holding another run unless
        ``config.overwrite_output_dir``; a resumed one refuses a different config (see :mod:`.safety`).

        Raises :class:`~trapo.trainer.safety.Preempted` after saving a checkpoint on SIGTERM / SIGUSR1,
        :class:`~trapo.trainer.safety.TrainingStopped` when the run stops itself (failing rewards, NaN/inf,
        rolled-back updates), ``KeyboardInterrupt`` on Ctrl-C (after saving the last finished step).
        """
        safety.check_output_dir(self.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            safety.acquire_lock(self.output_dir)
        try:
            return self._train(resume_from_checkpoint)
        finally:
            if self.is_main:
                safety.release_lock(self.output_dir)

    def _start(self, resume_from_checkpoint: str | bool | None) -> None:
        """Resume, or claim the output directory for a fresh run."""
        cfg, acc, out = self.config, self.accelerator, self.output_dir
        metrics_path = out / "metrics.jsonl"
        if self.is_main:
            removed = safety.remove_orphans(out)
            if removed:
                acc.print(
                    f"removed {len(removed)} unfinished temporary directories left by a killed run: "
                    f"{', '.join(removed[:3])}"
                )
        if resume_from_checkpoint == "auto":
            resume_from_checkpoint = True if ckpt.checkpoints(out) else None
            if resume_from_checkpoint is None:
                acc.print(f"--resume auto: no checkpoint in {out}; starting fresh")
        if resume_from_checkpoint:
            path, state = self._load_checkpoint(resume_from_checkpoint)
            self.step = int(state["step"])
            self.totals.update(state.get("totals", {}))
            self.update_guard.history = [float(x) for x in state.get("update_history", [])]
            if self.is_main:
                _truncate_jsonl(metrics_path, self.step)
                _truncate_jsonl(out / "samples.jsonl", self.step)
                (out / "run_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
            acc.print(f"resumed from {path} at step {self.step}")
            return
        acc.wait_for_everyone()  # every process looks before the main one writes run_config.json
        existing = safety.run_files(out)
        acc.wait_for_everyone()
        if existing and not cfg.overwrite_output_dir:
            raise FileExistsError(
                f"output_dir {str(out)!r} holds another run ({', '.join(existing[:6])}); pass --resume to "
                "continue it, --overwrite_output_dir to replace it, or choose another --output_dir"
            )
        if self.is_main:
            if existing:
                safety.clear_run(out)
                acc.print(f"--overwrite_output_dir: removed the previous run in {out}")
            (out / "run_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        acc.wait_for_everyone()

    def _load_checkpoint(self, which: str | bool) -> tuple[Path, dict[str, Any]]:
        """Load the newest readable checkpoint (or the one named); returns it and its trainer state."""
        if which is True:
            candidates = list(reversed(ckpt.checkpoints(self.output_dir)))
            if not candidates:
                raise FileNotFoundError(f"no complete checkpoint to resume from in {self.output_dir}")
        else:
            path = Path(which)
            if not (path / ckpt.STATE_FILE).is_file():
                raise FileNotFoundError(f"no complete checkpoint to resume from in {path}")
            candidates = [path]
        failures = []
        for path in candidates:
            try:
                stored = json.loads((path / ckpt.STATE_FILE).read_text())
            except (OSError, ValueError) as err:
                failures.append(f"{path.name}: unreadable {ckpt.STATE_FILE} ({err})")
                self.accelerator.print(f"warning: {path} is corrupt ({failures[-1]}); trying the one before")
                continue
            differences = safety.config_differences(stored.get("config", {}), self.config.to_dict())
            if differences:
                raise ValueError(
                    f"cannot resume {path}: it was trained with a different config ({'; '.join(differences)}). "
                    "Use the same settings (only max_steps, logging, saving and reward limits may change), "
                    "or start a new run with --overwrite_output_dir / another --output_dir"
                )
            try:
                ckpt.load_weights(self.unwrapped, path)
                state = ckpt.load_training_state(path, self.optimizer, self.scheduler)
            except Exception as err:  # a truncated or garbled file: fall back to the previous checkpoint
                failures.append(f"{path.name}: {type(err).__name__}: {str(err)[:200]}")
                self.accelerator.print(f"warning: {path} is corrupt ({failures[-1]}); trying the one before")
                continue
            if failures:
                self.accelerator.print(f"resuming from {path.name} instead of the corrupt newer checkpoint(s)")
            return path, state
        raise ValueError(f"no readable checkpoint to resume from in {self.output_dir}: {'; '.join(failures)}")

    def _train(self, resume_from_checkpoint: str | bool | None) -> TrainResult:
        cfg, acc = self.config, self.accelerator
        metrics_path = self.output_dir / "metrics.jsonl"
        self._start(resume_from_checkpoint)
        if cfg.report_to != "none":
            acc.init_trackers(
                "trapo", config={k: v for k, v in cfg.to_dict().items() if isinstance(v, int | float | str | bool)}
            )
        acc.print(f"data: {self.data_report.summary()}")
        bar = tqdm(
            total=cfg.max_steps, initial=self.step, disable=not self.is_main, desc=f"{cfg.method}", dynamic_ncols=True
        )
        last: dict[str, float] = {}
        last_save = time.monotonic()
        signals = self._signals
        with signals:
            try:
                while self.step < cfg.max_steps:
                    last = self.training_step(self.step)
                    self.step += 1
                    if self.is_main:
                        if self.step % cfg.logging_steps == 0 or self.step == cfg.max_steps:
                            with metrics_path.open("a") as f:
                                f.write(json.dumps({"step": self.step, **last}) + "\n")
                        if cfg.sample_log_steps and self.step % cfg.sample_log_steps == 0 and not last["sft_step"]:
                            self._log_samples()
                    self._step_counted()
                    signals.leave_critical()  # a Ctrl-C held during the update is raised here
                    if self.is_main:
                        self._report_problems(last, bar)
                        bar.set_postfix(
                            {k: f"{last[k]:.3g}" for k in ("reward/unguided", "loss/total", "entropy") if k in last}
                        )
                        bar.update(1)
                    if cfg.report_to != "none":
                        acc.log(last, step=self.step)
                    self._check_stop(last)
                    if self._any_process(signals.stop_signal is not None):
                        self.save_checkpoint()
                        raise safety.Preempted(signals.stop_signal or signal.SIGTERM, self.step, self.output_dir)
                    due = bool(cfg.save_steps and self.step % cfg.save_steps == 0) or bool(
                        cfg.save_minutes and time.monotonic() - last_save >= 60 * cfg.save_minutes
                    )
                    if self.step < cfg.max_steps and self._any_process(due):
                        self.save_checkpoint()
                        last_save = time.monotonic()
            except safety.Preempted:
                raise
            except BaseException as err:
                signals.leave_critical_quietly()
                if self._dirty:  # memory holds an update its step count does not: saving it would repeat it
                    acc.print(
                        f"\ninterrupted in the middle of an update: not saving it; the last checkpoint in "
                        f"{self.output_dir} is the place to --resume from"
                    )
                elif self.step > 0:  # nothing lost on a crash or Ctrl-C: the last finished step is saved
                    self.save_checkpoint()
                    what = "stopped" if isinstance(err, safety.TrainingStopped) else "interrupted"
                    acc.print(
                        f"\n{what}: saved a checkpoint at step {self.step} in {self.output_dir}; "
                        "rerun with --resume to continue"
                    )
                raise
            finally:
                bar.close()
        self.save_checkpoint()
        skipped = self.totals["nonfinite_steps"] + self.totals["rolled_back_steps"]
        if skipped:
            acc.print(
                f"warning: {skipped} of {self.step} steps were not applied ({self.totals['nonfinite_steps']} "
                f"NaN/inf, {self.totals['rolled_back_steps']} rolled back as out of range)"
            )
        if skipped >= self.step:
            raise safety.TrainingStopped(
                f"no step of the run was applied ({skipped} skipped or rolled back); no final model written. "
                "Lower learning_rate or check the data and reward"
            )
        final = self.save_final()
        if cfg.report_to != "none":
            acc.end_training()
        return TrainResult(self.output_dir, final, self.step, last)

    def _report_problems(self, last: dict[str, float], bar) -> None:
        """Reward failures and skipped updates of the step just taken, on the console."""
        notes = []
        if last.get("reward/failed", 0) > 0:
            kinds = ", ".join(
                f"{k.removeprefix('reward/failed_')} {last[k]:.0%}"
                for k in sorted(last)
                if k.startswith("reward/failed_") and last[k] > 0
            )
            notes.append(
                f"{last['reward/failed']:.0%} of rewards failed ({kinds})"
                + (f": {self._reward_error}" if self._reward_error else "")
            )
        if last.get("skipped_nonfinite"):
            notes.append("update skipped: NaN/inf loss or gradient")
        if last.get("rolled_back"):
            notes.append(f"update not applied: {self._rollback_reason}")
        if notes:
            bar.write(f"step {self.step}: " + "; ".join(notes))

    def _check_stop(self, last: dict[str, float]) -> None:
        cfg = self.config
        if self._nonfinite_in_a_row >= cfg.max_nonfinite_steps:
            raise safety.TrainingStopped(
                f"{self._nonfinite_in_a_row} steps in a row had a NaN/inf loss or gradient or an update out of "
                f"range (last at step {self.step}); stopping. Lower learning_rate, check the data, or raise "
                "max_nonfinite_steps."
            )
        if last.get("sft_step"):
            return
        failed = last.get("reward/failed", 0.0)
        self._reward_failures_in_a_row = (
            self._reward_failures_in_a_row + 1 if failed >= cfg.max_reward_failure_share - 1e-9 else 0
        )
        if cfg.max_reward_failure_steps and self._reward_failures_in_a_row >= cfg.max_reward_failure_steps:
            raise safety.TrainingStopped(
                f"the reward failed on {failed:.0%} of the rollouts for {self._reward_failures_in_a_row} steps in "
                f"a row (last at step {self.step}; {self._reward_error or 'see the step lines above'}); stopping. "
                "Fix the reward function or the ground truths (max_reward_failure_share / "
                "max_reward_failure_steps set this rule)."
            )

    # ------------------------------------------------------------------ outputs
    def save_checkpoint(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.is_main:
            ckpt.save_checkpoint(
                self.output_dir,
                self.step,
                self.unwrapped,
                self.tokenizer,
                self.optimizer,
                self.scheduler,
                {
                    "totals": dict(self.totals),
                    "config": self.config.to_dict(),
                    "update_history": self.update_guard.history,
                },
                keep=self.config.save_total_limit,
            )
        self.accelerator.wait_for_everyone()

    def save_model(self, output_dir: str | os.PathLike | None = None) -> Path:
        """Save the model and tokenizer (TRL's name): to ``output_dir``, default ``args.output_dir``."""
        return self.save_final(Path(output_dir) if output_dir is not None else self.output_dir)

    def save_final(self, final: Path | None = None) -> Path:
        """The trained model (LoRA merged in) with its tokenizer, loadable with ``from_pretrained``; written
        through a temporary directory renamed at the end (default: ``output_dir/final``)."""
        final = final if final is not None else self.output_dir / "final"
        self.accelerator.wait_for_everyone()
        if self.is_main:
            model = self.unwrapped
            if hasattr(model, "merge_and_unload"):
                import copy

                model = copy.deepcopy(model).merge_and_unload()
            with atomic_directory(final) as tmp:
                model.save_pretrained(tmp)
                self.tokenizer.save_pretrained(tmp)
        self.accelerator.wait_for_everyone()
        return final

    def _log_samples(self) -> None:
        batch = self._last_batch
        if batch is None:
            return
        decode = self.tokenizer.decode
        rows = [
            {
                "step": self.step,
                "prompt": decode(t.prompt_ids, skip_special_tokens=True),
                "group": t.group,
                "level": t.level,
                "prefix": decode(t.prefix_ids, skip_special_tokens=True),
                "continuation": decode(t.completion_ids, skip_special_tokens=True),
                "reward": t.reward,
            }
            for t in batch.trajectories
            if t.prompt_index == 0
        ]
        with (self.output_dir / "samples.jsonl").open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


def _as_examples(dataset: Any, strict: bool = False) -> tuple[list[Example], LoadResult | None, bool]:
    """(examples, the load result where this loaded them, whether rewards get chat messages as TRL would)."""
    if isinstance(dataset, (str, os.PathLike)):
        loaded = load_examples(dataset, strict=strict)
        return loaded.examples, loaded, False
    if isinstance(dataset, LoadResult):
        return dataset.examples, dataset, False
    if hasattr(dataset, "keys") and not hasattr(dataset, "to_list"):
        raise ValueError(
            f"train_dataset is a mapping of splits ({', '.join(map(str, dataset.keys()))}); "
            "pass one split, e.g. dataset['train']"
        )
    if not hasattr(dataset, "__len__"):
        raise ValueError(
            "train_dataset must have a length (a datasets.Dataset, a list, or a path); "
            "an IterableDataset is not supported"
        )
    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    if rows and all(isinstance(r, Example) for r in rows):
        return rows, None, False
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError("train_dataset must hold dict rows (or trapo.data.Example records)")
    loaded = examples_from_rows(rows, strict=strict)
    first = rows[0].get("prompt")
    return loaded.examples, loaded, isinstance(first, list)


def _tokenizer_of(model: torch.nn.Module):
    """The tokenizer saved beside ``model`` (TRL loads it from the model's name or path)."""
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    if not name or not Path(name).is_dir():
        raise ValueError("pass the tokenizer as processing_class= (the model's directory is not known)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, local_files_only=True)


def _check_not_sharded(accelerator: Accelerator) -> None:
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


def _check_report_to(report_to: str) -> None:
    """A metric sink whose package is missing is an error naming what to install."""
    import importlib.util

    needs = {"tensorboard": "pip install 'trapo[tensorboard]'", "wandb": "pip install wandb"}
    if report_to in needs and importlib.util.find_spec(report_to) is None:
        raise ImportError(f"report_to={report_to} needs the {report_to} package: {needs[report_to]}")


def _context_length(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def _truncate_jsonl(path: Path, step: int) -> None:
    """Drop lines logged after ``step`` (a resumed run logs them again) and a line cut off by a kill."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a truncated last line: the step it belongs to is logged again
        if isinstance(row, dict) and row.get("step", 0) <= step:
            keep.append(line)
    path.write_text("".join(line + "\n" for line in keep))


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (one per logged step; empty when the run logged none)."""
    path = Path(output_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut off by a kill
    return rows
