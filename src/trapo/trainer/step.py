"""One optimizer step (Algorithm 1 of the paper): rollouts -> advantages -> the batch loss -> the update.

An RL step samples this step's prompts with micro-group guidance (:mod:`trapo.trainer.rollouts`), turns the
rewards into group-relative advantages (:func:`trapo.advantages.step_advantages`), backpropagates the batch
loss (:func:`trapo.objective.trapo_loss`) one mini-batch at a time, and takes one optimizer step. An SFT step
(``sft`` and the first stage of ``sft-then-grpo``) backpropagates the NLL of expert solutions instead.
The run (:mod:`trapo.trainer.run`) calls :meth:`TrainingStep.training_step` and, once the step is logged,
:meth:`TrainingStep.step_counted`; nothing else.
"""

from __future__ import annotations

import contextlib
import enum
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

from trapo.advantages import step_advantages
from trapo.losses import token_logprobs
from trapo.objective import LossTerms, Normaliser, TokenBatch, batch_normaliser, sft_batch_loss, trapo_loss
from trapo.rewards import RewardSet
from trapo.trainer import precision, sharding
from trapo.trainer.batch import build_token_batch, length_sorted_mini_batches, row_length
from trapo.trainer.engines import record_importance_weights, record_sync
from trapo.trainer.metrics import Metrics, record_batch
from trapo.trainer.rollouts import RolloutBatch, Trajectory
from trapo.trainer.shared_prompts import PromptCache, distinct_prompts, supports_shared_prompts
from trapo.trainer.trl_surface import clip_fractions, with_trl_names

if TYPE_CHECKING:
    from accelerate import Accelerator

    from trapo.config import TRAPOConfig
    from trapo.guidance import MicroGroupSchedule
    from trapo.objective import ObjectiveWeights
    from trapo.rollout import RolloutEngine
    from trapo.trainer import safety
    from trapo.trainer.rollouts import GuidedSampler, PreparedExample


class StepOutcome(enum.Enum):
    """What became of a step's update."""

    APPLIED = "applied"
    ROLLED_BACK = "rolled_back"  # finite, but the update guard judged its size out of range
    SKIPPED_NONFINITE = "skipped_nonfinite"  # NaN/inf loss or gradient


@dataclass
class MiniBatch:
    """One forward/backward's share of the batch."""

    tokens: TokenBatch
    advantages: Tensor  # (rows,)
    prompt_rows: Tensor  # (rows,): each row's prompt among the batch's distinct prompts (the shared cache)


class LossNormalisers(NamedTuple):
    """The ``Z`` of each loss term for the whole batch (:func:`trapo.objective.batch_normaliser`)."""

    model: Normaliser
    prefix: Normaliser
    entropy: Normaliser | None  # over every response token (entropy_tokens="all"); None: ``model``


def mask_truncated(tokens: TokenBatch, trajs: Sequence[Trajectory], eos: int) -> None:
    """TRL's ``mask_truncated_completions``: a continuation cut at the token budget (no EOS) is left out of the
    policy loss and the entropy (its generated tokens leave the model mask); its expert prefix still trains."""
    for row, t in enumerate(trajs):
        if t.completion_ids and t.completion_ids[-1] != eos:
            tokens.model_mask[row] = False


def step_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (seed, step, process ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


class TrainingStep:
    """The step half of :class:`~trapo.trainer.TRAPOTrainer`; its state is built by the trainer's ``__init__``."""

    config: TRAPOConfig
    accelerator: Accelerator
    model: torch.nn.Module
    ref_model: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    tokenizer: object
    engine: RolloutEngine
    sampler: GuidedSampler
    reward_fn: RewardSet
    schedule: MicroGroupSchedule
    weights: ObjectiveWeights
    items: list[PreparedExample]
    expert_items: list[int]
    update_guard: safety.UpdateGuard
    share_prompts: bool
    totals: dict[str, int]
    _signals: safety.SignalGuard
    _uncounted_update: bool  # an optimizer step was applied but the run has not counted it yet
    _pending_sizes: list[float]
    _rollback_reason: str
    _unapplied_in_a_row: int
    _last_batch: RolloutBatch | None
    _reward_error: str

    fsdp: bool  # parameters sharded with torch's FSDP2 (trapo.trainer.sharding)
    _local_fraction: float  # under fsdp: this process's share of the parameter elements

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------ this step's data
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

    def rollout(self, step: int) -> RolloutBatch:
        """Sample and score this process's trajectories for ``step``."""
        items = [self.items[i] for i in self._indices(step, range(len(self.items)))]
        # gathered: decoding on the sharded model then runs no collectives (vLLM decodes on its own synced copy)
        gather = self.fsdp and self.engine.decodes_on_training_model
        with sharding.gathered(self.model) if gather else contextlib.nullcontext():
            return self.sampler.sample(items, self._generator(step))

    def advantages(self, batch: RolloutBatch) -> torch.Tensor:
        """Group-relative advantages of ``batch``'s trajectories, one per trajectory (§3)."""
        trajs = batch.trajectories
        return step_advantages(
            torch.tensor([t.reward for t in trajs], dtype=torch.float32),
            torch.tensor([t.prompt_index for t in trajs]),
            torch.tensor([t.guided for t in trajs]),
            scale_rewards=self.config.scale_rewards,
            baseline=self.config.advantage_baseline,
            reduce_sum=self._reduce_sum,
        )

    # ------------------------------------------------------------------ the batch loss
    def _mini_batches(self, trajectories: Sequence[Trajectory], shared_prompt: bool = False) -> list[list[int]]:
        """Indices of each mini-batch of a batch (at most ``mini_batch_size`` trajectories each, grouped by the
        width of their rows so that padding costs little: :func:`trapo.trainer.batch.length_sorted_mini_batches`)."""
        return length_sorted_mini_batches(
            [row_length(t, shared_prompt) for t in trajectories], self.config.mini_batch_size
        )

    def _distinct_prompts(self, trajectories: Sequence[Trajectory]) -> tuple[list[list[int]] | None, list[int]]:
        """(the distinct prompts where the update computes each once, else None; each trajectory's index among
        the distinct prompts). Shared where the model supports it and some trajectories share a prompt
        (otherwise the prompt pass would be one forward more for nothing). Only in one process: with several,
        DDP's gradient reduction expects one backward per forward."""
        prompts, prompt_of = distinct_prompts(trajectories)
        shared = self.share_prompts and len(prompts) < len(trajectories) and supports_shared_prompts(self.unwrapped)
        return (prompts if shared else None), prompt_of

    def _split(
        self, trajs: Sequence[Trajectory], advantages: Tensor, prompt_of: list[int], shared: bool
    ) -> list[MiniBatch]:
        device, pad = self.accelerator.device, self.tokenizer.pad_token_id
        minis = []
        for rows in self._mini_batches(trajs, shared):
            tokens = build_token_batch([trajs[j] for j in rows], pad, device, shared_prompt=shared)
            if self.config.mask_truncated_completions:
                mask_truncated(tokens, [trajs[j] for j in rows], self.tokenizer.eos_token_id)
            prompt_rows = torch.tensor([prompt_of[j] for j in rows], device=device)
            minis.append(MiniBatch(tokens, advantages[rows].to(device), prompt_rows))
        return minis

    def _normaliser(self, kind: str, masks: Sequence[Tensor]) -> Normaliser:
        return batch_normaliser(
            kind,
            masks,
            self.config.max_completion_length,
            world_size=self.accelerator.num_processes,
            reduce_sum=self._reduce_sum,
            constant=self.config.loss_constant,
        )

    def _loss_normalisers(self, tokens: Sequence[TokenBatch]) -> LossNormalisers:
        kind = self.config.loss_normalization
        every_response_token = self.config.entropy_tokens == "all"
        return LossNormalisers(
            self._normaliser(kind, [b.model_mask for b in tokens]),
            self._normaliser(kind, [b.prefix_mask for b in tokens]),
            self._normaliser(kind, [b.response_mask for b in tokens]) if every_response_token else None,
        )

    def _logits(self, model: torch.nn.Module, mb: MiniBatch, cache: PromptCache | None) -> Tensor:
        """The mini-batch's logits, in float32 (``--bf16``: computed under autocast, :mod:`.precision`)."""
        b = mb.tokens
        with precision.autocast(precision.compute_dtype(self.config.bf16), b.input_ids.device):
            if cache is None:
                return model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits.float()
            return cache.logits(model, b.input_ids, b.attention_mask, mb.prompt_rows).float()

    def _prompt_cache(self, model: torch.nn.Module, prompts: list[list[int]] | None) -> PromptCache | None:
        """The distinct prompts' KV cache on ``model`` (None on the plain path: ``prompts`` is None)."""
        if prompts is None:
            return None
        device = self.accelerator.device
        with precision.autocast(precision.compute_dtype(self.config.bf16), device):
            return PromptCache.encode(model, prompts, self.tokenizer.pad_token_id, device)

    @torch.no_grad()
    def _fixed_logprobs(
        self, model: torch.nn.Module, minis: Sequence[MiniBatch], prompts: list[list[int]] | None, idle: int = 0
    ) -> list[Tensor]:
        """``model``'s token log-probs on each mini-batch, without the gradient (the sampling policy's under
        PPO-style reuse, the reference model's for the KL penalty), then ``idle`` passes (:meth:`_idle_count`)."""
        cache = self._prompt_cache(model, prompts)
        out = [token_logprobs(self._logits(model, mb, cache)[:, :-1], mb.tokens.labels) for mb in minis]
        self._idle_passes(model, idle, backward=False)
        return out

    def _idle_count(self, n: int) -> int:
        """Passes to run beyond this process's ``n`` mini-batches: under ``--fsdp`` every pass gathers parameters
        with every other process, so all run as many as the busiest one (0 unless sharded). Every process calls
        this before its first pass."""
        return sharding.pass_count(n, self.accelerator.device) - n if self.fsdp else 0

    def _idle_passes(self, model: torch.nn.Module, count: int, backward: bool) -> None:
        """``count`` zero-loss passes (:func:`sharding.idle_loss`): the collectives without a gradient."""
        for _ in range(count):
            loss = sharding.idle_loss(model, self.tokenizer.pad_token_id, self.accelerator.device)
            if backward:
                self.accelerator.backward(loss)

    def _gradient_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """DDP averages gradients once, on the last mini-batch's backward."""
        return contextlib.nullcontext() if last else self.accelerator.no_sync(self.model)

    def update(self, batch: RolloutBatch, advantages: torch.Tensor, metrics: Metrics) -> None:
        """Backpropagate the batch loss (:func:`trapo.objective.trapo_loss`) of ``batch`` with ``advantages``.

        With ``num_iterations == 1`` (the paper) this accumulates the gradients of one pass over the batch
        and leaves the optimizer step to the caller. With ``num_iterations = K > 1`` (PPO-style reuse of the
        rollouts) it takes the first ``K - 1`` optimizer steps itself, one after each pass, with the ratio
        taken to the policy that sampled the batch, and leaves the last pass's gradients to the caller.
        Metrics describe the last pass. Where trajectories share prompts, each distinct prompt is computed
        once per pass and its KV cache serves every trajectory of it (:mod:`trapo.trainer.shared_prompts`).
        """
        cfg, trajs = self.config, batch.trajectories
        prompts, prompt_of = self._distinct_prompts(trajs)
        minis = self._split(trajs, advantages, prompt_of, shared=prompts is not None)
        norms = self._loss_normalisers([mb.tokens for mb in minis])
        idle = self._idle_count(len(minis))
        old: list[Tensor | None] = [None] * len(minis)
        ref: list[Tensor | None] = [None] * len(minis)
        if cfg.num_iterations > 1:  # only PPO-style reuse and the KL penalty need a pass without the gradient
            old = [*self._fixed_logprobs(self.model, minis, prompts, idle)]
        if self.ref_model is not None:
            ref = [*self._fixed_logprobs(self.ref_model, minis, prompts, idle)]
        for iteration in range(cfg.num_iterations):
            if iteration > 0:  # PPO-style: one optimizer step per pass over the batch; the last is the caller's
                self._apply_gradients(metrics)
            cache = self._prompt_cache(self.model, prompts)
            leaves = cache.detached() if cache is not None else None
            for i, mb in enumerate(minis):
                with self._gradient_sync(last=i == len(minis) - 1):
                    terms = trapo_loss(
                        self._logits(self.model, mb, leaves),
                        mb.tokens,
                        mb.advantages,
                        self.weights,
                        model_norm=norms.model,
                        prefix_norm=norms.prefix,
                        old_logprobs=old[i],
                        ref_logprobs=ref[i],
                        entropy_norm=norms.entropy,
                    )
                    if iteration == cfg.num_iterations - 1:
                        self._record_loss(terms, mb.tokens, metrics)
                        self._record_clipping(terms, mb, old[i], metrics)
                    self.accelerator.backward(terms.total)
            self._idle_passes(self.model, idle, backward=True)
            if cache is not None:
                cache.backward(leaves)  # the mini-batches' gradient on the prompts' keys and values, once
        self._record_batch(batch, metrics)

    def sft_update(self, step: int, metrics: Metrics) -> None:
        """Plain SFT on expert solutions for this step's prompts (the SFT baseline / first stage)."""
        device, gen = self.accelerator.device, self._generator(step)
        trajs = []
        for i in self._indices(step, self.expert_items):
            item = self.items[i]
            expert = item.expert_ids[int(torch.randint(len(item.expert_ids), (1,), generator=gen))]
            trajs.append(Trajectory.demonstration(item.prompt_ids, expert))
        pad = self.tokenizer.pad_token_id
        tokens = [build_token_batch([trajs[j] for j in rows], pad, device) for rows in self._mini_batches(trajs)]
        expert_norm = self._normaliser(self.config.sft_normalization, [b.prefix_mask for b in tokens])
        idle = self._idle_count(len(tokens))
        for i, b in enumerate(tokens):
            with self._gradient_sync(last=i == len(tokens) - 1):
                with precision.autocast(precision.compute_dtype(self.config.bf16), device):
                    logits = self.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits.float()
                loss = sft_batch_loss(logits, b, expert_norm)
                metrics.add_total("loss/sft", float(loss.detach()))
                metrics.add_total("loss/total", float(loss.detach()))
                self.accelerator.backward(loss)
        self._idle_passes(self.model, idle, backward=True)
        metrics.add("length/response", sum(len(t.response_ids) for t in trajs), len(trajs))
        metrics.add("perf/input_tokens", sum(len(t.prompt_ids) + len(t.response_ids) for t in trajs), 1)

    # ------------------------------------------------------------------ metrics of the batch
    def _record_loss(self, terms: LossTerms, b: TokenBatch, metrics: Metrics) -> None:
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
        record_importance_weights(terms, b, metrics)
        if terms.token_entropy is not None:
            metrics.add("entropy", float(terms.token_entropy[b.model_mask].sum()), float(b.model_mask.sum()))
            if self.config.entropy_tokens == "all":
                metrics.add(
                    "entropy/response", float(terms.token_entropy[b.response_mask].sum()), float(b.response_mask.sum())
                )

    def _record_clipping(self, terms: LossTerms, mb: MiniBatch, old: Tensor | None, metrics: Metrics) -> None:
        """TRL's clip_ratio/* over the model's tokens."""
        w = self.weights
        for name, (clipped, n) in clip_fractions(
            terms.logprobs, old, mb.advantages, mb.tokens.model_mask, w.epsilon, w.epsilon_high
        ).items():
            metrics.add(name, clipped, n)

    def _record_batch(self, batch: RolloutBatch, metrics: Metrics) -> None:
        record_batch(batch, metrics, self.tokenizer.eos_token_id, len(self.schedule.sizes))
        self._reward_error = batch.first_reward_error

    # ------------------------------------------------------------------ the optimizer step
    def _apply_gradients(self, metrics: Metrics) -> tuple[float, StepOutcome]:
        """Clip and take an optimizer step on the accumulated gradients, unless the loss or the gradient is
        NaN/inf (then the step is skipped) or the update guard rolls the step back (:class:`UpdateGuard`);
        gradients are cleared either way. Returns (grad norm, what became of the update)."""
        grad_norm = torch.tensor(0.0)
        if self.config.max_grad_norm > 0:
            clip = sharding.clip_grad_norm if self.fsdp else self.accelerator.clip_grad_norm_
            grad_norm = clip(self.model.parameters(), self.config.max_grad_norm)
        finite = bool(torch.isfinite(torch.as_tensor(grad_norm)).all()) and math.isfinite(metrics.sums["loss/total"])
        outcome = StepOutcome.APPLIED if finite else StepOutcome.SKIPPED_NONFINITE
        if finite and self.update_guard.enabled:
            applied, size, reason = self.update_guard.judge(
                self.optimizer, self.scheduler.get_last_lr()[0], self._reduce_sum
            )
            if applied:
                self._pending_sizes.append(size)
            else:
                outcome, self._rollback_reason = StepOutcome.ROLLED_BACK, reason
        if outcome is StepOutcome.APPLIED:
            if not self._uncounted_update:
                self._uncounted_update = True  # until the run counts the step, memory holds a half-finished one
                self._signals.enter_critical()
            self.optimizer.step()
            self.engine.sync_weights(self.unwrapped)
            record_sync(self.engine, metrics)
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm), outcome

    def step_counted(self) -> None:
        """The step's update, scheduler step and logs are all in: the state is consistent again."""
        for size in self._pending_sizes:
            self.update_guard.accept(size)
        self._pending_sizes = []
        self._uncounted_update = False

    def _reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return values
        return self.accelerator.reduce(values.to(self.accelerator.device), reduction="sum").cpu()

    def _rl_update(self, step: int, metrics: Metrics) -> int:
        """Rollouts, advantages and the update's gradients for ``step``; returns the tokens generated."""
        from transformers import TrainerState

        self.sampler.trainer_state = TrainerState(global_step=step, max_steps=self.config.max_steps)
        batch = self.rollout(step)
        for name, stats in self.reward_fn.pop_stats().items():  # each reward on its own, as TRL logs them
            metrics.add(f"rewards/{name}", stats.total, stats.count)
            metrics.add(f"rewards/{name}/sq", stats.squares, stats.count)
        for name, (total, count) in self.reward_fn.pop_metrics().items():  # what rewards logged (log_metric)
            metrics.add(name, total, count)
        metrics.add("perf/generation_s", batch.generation_seconds, 1)
        metrics.add("perf/tokens_per_s", batch.generated_tokens, batch.generation_seconds)
        self._last_batch = batch
        self.update(batch, self.advantages(batch), metrics)
        return batch.generated_tokens

    def _count(self, outcome: StepOutcome) -> None:
        if outcome is StepOutcome.APPLIED:
            self.scheduler.step()
            self._unapplied_in_a_row = 0
        else:
            self._unapplied_in_a_row += 1
            self.totals["nonfinite_steps" if outcome is StepOutcome.SKIPPED_NONFINITE else "rolled_back_steps"] += 1

    def training_step(self, step: int) -> dict[str, float]:
        """One optimizer step; returns the metrics reduced over processes."""
        if self._uncounted_update:  # the previous step was taken outside train(): it is complete now
            self.step_counted()
        metrics, t0 = Metrics(), time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        sft = step < self.config.sft_steps
        generated = 0
        if sft:
            self.sft_update(step, metrics)
        else:
            generated = self._rl_update(step, metrics)
        self._rollback_reason = ""
        grad_norm, outcome = self._apply_gradients(metrics)
        self._count(outcome)
        metrics.add("grad_norm", grad_norm, 1)
        metrics.add("perf/generated_tokens", generated, 1)
        if self.fsdp:  # this process's share of the parameter elements, averaged over processes
            metrics.add("fsdp/local_param_fraction", self._local_fraction, 1)
        out = metrics.reduce(self.accelerator)
        self.totals["num_tokens"] += round(out.pop("perf/input_tokens", 0.0) * self.accelerator.num_processes)
        out["num_tokens"] = float(self.totals["num_tokens"])  # TRL's: tokens seen so far, prompts included
        out["epoch"] = (step + 1) * self.config.prompts_per_step / len(self.items)
        out["perf/step_s"] = time.perf_counter() - t0  # this process's wall time for the step
        out["lr"] = self.scheduler.get_last_lr()[0]
        out["skipped_nonfinite"] = float(outcome is StepOutcome.SKIPPED_NONFINITE)
        out["rolled_back"] = float(outcome is StepOutcome.ROLLED_BACK)
        out["sft_step"] = float(sft)
        return with_trl_names(out, self.reward_fn.names)
