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
from trapo.config import TRAPOConfig
from trapo.data import Example, boundary_token_ids, encode_prompt, encode_response
from trapo.losses import token_logprobs
from trapo.objective import (
    ObjectiveWeights,
    TokenBatch,
    TokenReduction,
    batch_reduction,
    sft_batch_loss,
    trapo_loss,
)
from trapo.rewards import RewardFunction, as_reward_function, default_reward
from trapo.rollout import HFEngine, RolloutEngine, SamplingParams
from trapo.trainer import checkpoint as ckpt
from trapo.trainer.batch import build_token_batch, length_sorted_mini_batches, sequence_length
from trapo.trainer.rollouts import GuidedSampler, PreparedExample, RolloutBatch, Trajectory


@dataclass
class DataReport:
    """What preparing the training set kept and skipped."""

    rows: int = 0
    kept: int = 0
    without_expert: int = 0
    too_long: list[int] = field(default_factory=list)
    expert_truncated: int = 0

    def summary(self) -> str:
        text = f"{self.kept}/{self.rows} rows kept; {self.without_expert} without an expert solution (RL only)"
        if self.too_long:
            text += f"; {len(self.too_long)} skipped as longer than max_prompt_length (rows {self.too_long[:5]})"
        if self.expert_truncated:
            text += f"; {self.expert_truncated} expert solutions truncated to max_completion_length"
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
            t = torch.tensor([[self.sums[n], self.counts[n]] for n in names], dtype=torch.float64,
                             device=accelerator.device)
            t = accelerator.reduce(t, reduction="sum").cpu()
            pairs = {n: (float(t[i, 0]), float(t[i, 1])) for i, n in enumerate(names)}
        else:
            pairs = {n: (self.sums[n], self.counts[n]) for n in names}
        return {n: (s / c if c else 0.0) for n, (s, c) in pairs.items()}


class TRAPOTrainer:
    """Train a causal LM with TRAPO or one of its baselines (``config.method``).

    Args:
        model: a ``transformers`` causal LM (``AutoModelForCausalLM.from_pretrained(dir)``).
        tokenizer: its tokenizer; needs an EOS token (PAD falls back to EOS).
        train_dataset: :class:`~trapo.data.Example` rows (``trapo.data.load_examples``).
        config: :class:`~trapo.config.TRAPOConfig`.
        reward_fn: a reward in any supported signature (see :func:`trapo.rewards.as_reward_function`);
            default :func:`trapo.rewards.math_reward`.
        engine: a :class:`~trapo.rollout.RolloutEngine`; default :class:`~trapo.rollout.HFEngine` on the model.
        accelerator: an ``accelerate.Accelerator``; default one built from the config (``accelerate launch``
            sets the processes).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        train_dataset: Sequence[Example],
        config: TRAPOConfig,
        reward_fn: Callable | None = None,
        engine: RolloutEngine | None = None,
        accelerator: Accelerator | None = None,
    ):
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.accelerator = accelerator or Accelerator(
            mixed_precision="bf16" if config.bf16 else "no",
            log_with=None if config.report_to == "none" else config.report_to,
            project_dir=str(self.output_dir),
        )
        torch.manual_seed(config.seed)
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token; set tokenizer.eos_token before training")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.reward_fn: RewardFunction = as_reward_function(reward_fn) if reward_fn is not None else default_reward()
        self.schedule = config.schedule()
        self.prefix_loss = config.resolved_prefix_loss
        self.weights = ObjectiveWeights(
            prefix_loss=self.prefix_loss, trsft_alpha=config.trsft_alpha, prefix_loss_coef=config.prefix_loss_coef,
            luffy_gamma=config.luffy_gamma, entropy_coef=config.entropy_coef, epsilon=config.epsilon,
            epsilon_high=config.epsilon if config.epsilon_high is None else config.epsilon_high, beta=config.beta,
        )

        if config.lora_r > 0:
            from peft import LoraConfig, get_peft_model

            targets = config.lora_target_modules
            model = get_peft_model(model, LoraConfig(
                r=config.lora_r, lora_alpha=config.lora_alpha, task_type="CAUSAL_LM",
                target_modules="all-linear" if targets == ["all-linear"] else targets))

        self.items, self.data_report = self._prepare(train_dataset)
        self.expert_items = [i for i, item in enumerate(self.items) if item.expert_ids]
        if config.sft_steps > 0 and not self.expert_items:
            raise ValueError(f"method {config.method!r} has SFT steps but no training row has an expert solution")
        if self.prefix_loss != "none" and not self.expert_items:
            self.accelerator.print("warning: no row has an expert solution; guidance never fires (pure RL)")

        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                      weight_decay=config.weight_decay)
        self.scheduler = get_scheduler(config.lr_scheduler_type, optimizer, num_warmup_steps=config.warmup_steps,
                                       num_training_steps=config.max_steps)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.ref_model = None
        if config.beta > 0:
            import copy

            self.ref_model = copy.deepcopy(self.unwrapped).eval().requires_grad_(False)

        self.engine = engine or HFEngine.from_tokenizer(self.unwrapped, tokenizer, config.generation_batch_size)
        self.sampler = GuidedSampler(
            self.engine, tokenizer, self.reward_fn, self.schedule,
            boundary_ids=boundary_token_ids(tokenizer, config.prefix_boundary),
            max_completion_length=config.max_completion_length,
            sampling=SamplingParams(temperature=config.temperature, top_p=config.top_p),
            prefix_slack=config.prefix_slack, speculative=config.rollout_mode == "speculative",
        )
        self.step = 0
        self._last_batch: RolloutBatch | None = None  # for samples.jsonl
        self._nonfinite_in_a_row = 0
        self.totals: dict[str, int] = defaultdict(int)

    # ------------------------------------------------------------------ set-up
    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def _prepare(self, dataset: Sequence[Example]) -> tuple[list[PreparedExample], DataReport]:
        cfg, report, items = self.config, DataReport(rows=len(dataset)), []
        for row, example in enumerate(dataset):
            prompt_ids = encode_prompt(self.tokenizer, example)
            if len(prompt_ids) > cfg.max_prompt_length:
                if cfg.strict:
                    raise ValueError(f"training row {row}: prompt has {len(prompt_ids)} tokens, more than "
                                     f"max_prompt_length={cfg.max_prompt_length}")
                report.too_long.append(row)
                continue
            experts = []
            for solution in example.expert_solutions:
                ids = encode_response(self.tokenizer, solution)
                if len(ids) > cfg.max_completion_length:
                    report.expert_truncated += 1
                    ids = ids[: cfg.max_completion_length]
                experts.append(ids)
            report.without_expert += not experts
            items.append(PreparedExample(example, prompt_ids, experts))
        report.kept = len(items)
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

    def _mini_batches(self, trajectories: Sequence[Trajectory]) -> list[list[int]]:
        """Indices of each mini-batch of a batch (at most ``mini_batch_size`` trajectories each, grouped by
        length so that padding costs little: :func:`trapo.trainer.batch.length_sorted_mini_batches`)."""
        return length_sorted_mini_batches([sequence_length(t) for t in trajectories], self.config.mini_batch_size)

    def _global_counts(self, masks: Sequence[torch.Tensor]) -> tuple[float, float] | None:
        if self.accelerator.num_processes == 1:
            return None
        local = torch.tensor([sum(float(m.sum()) for m in masks), sum(float((m.sum(1) > 0).sum()) for m in masks)],
                             dtype=torch.float64, device=self.accelerator.device)
        total = self.accelerator.reduce(local, reduction="sum")
        return float(total[0]), float(total[1])

    def _reduction(self, kind: str, masks: Sequence[torch.Tensor]) -> TokenReduction:
        return batch_reduction(kind, masks, self.config.max_completion_length, self.accelerator.num_processes,
                               self._global_counts(masks))

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
        return group_advantages(
            torch.tensor([t.reward for t in trajs], dtype=torch.float32),
            torch.tensor([t.prompt_index for t in trajs]), scale_by_std=cfg.scale_rewards,
            baseline_mask=~guided if cfg.advantage_baseline == "unguided" else None,
        )

    def update(self, batch: RolloutBatch, advantages: torch.Tensor, metrics: _Metrics) -> None:
        """Backpropagate the batch loss (:func:`trapo.objective.trapo_loss`) of ``batch`` with ``advantages``.

        With ``num_iterations == 1`` (the paper) this accumulates the gradients of one pass over the batch
        and leaves the optimizer step to the caller. With ``num_iterations = K > 1`` (PPO-style reuse of the
        rollouts) it takes the first ``K - 1`` optimizer steps itself, one after each pass, with the ratio
        taken to the policy that sampled the batch, and leaves the last pass's gradients to the caller.
        Metrics describe the last pass.
        """
        cfg, device = self.config, self.accelerator.device
        trajs = batch.trajectories
        chunks = self._mini_batches(trajs)
        tokens = [build_token_batch([trajs[j] for j in c], self.tokenizer.pad_token_id, device) for c in chunks]
        advs = [advantages[c].to(device) for c in chunks]
        model_tokens = self._reduction(cfg.loss_normalization, [b.model_mask for b in tokens])
        prefix_tokens = self._reduction(cfg.loss_normalization, [b.prefix_mask for b in tokens])

        old: list[torch.Tensor | None] = [None] * len(chunks)
        ref: list[torch.Tensor | None] = [None] * len(chunks)
        with torch.no_grad():
            for i, b in enumerate(tokens):
                if cfg.num_iterations > 1:
                    old[i] = _logprobs(self.model, b)
                if self.ref_model is not None:
                    ref[i] = _logprobs(self.ref_model, b)

        record = False

        def loss_of(i: int) -> torch.Tensor:
            b = tokens[i]
            logits = self.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
            terms = trapo_loss(logits, b, advs[i], self.weights, model_tokens=model_tokens,
                               prefix_tokens=prefix_tokens, old_logprobs=old[i], ref_logprobs=ref[i])
            if record:
                self._record_loss(terms, b, metrics)
            return terms.total

        for iteration in range(cfg.num_iterations):
            if iteration > 0:  # PPO-style: one optimizer step per pass over the batch; the last is the caller's
                self._apply_gradients(metrics)
            record = iteration == cfg.num_iterations - 1
            self._backward_all(len(chunks), loss_of)
        self._record_batch(batch, metrics)

    def _record_loss(self, terms, b: TokenBatch, metrics: _Metrics) -> None:
        for name, value in (("loss/total", terms.total.detach()), ("loss/policy", terms.policy),
                            ("loss/prefix", terms.prefix), ("loss/entropy", terms.entropy), ("loss/kl", terms.kl)):
            metrics.add_total(name, float(value))
        metrics.add("trust/prefix_below_alpha",
                    float((terms.logprobs.exp()[b.prefix_mask] < self.config.trsft_alpha).sum()),
                    float(b.prefix_mask.sum()))
        if terms.token_entropy is not None:
            metrics.add("entropy", float(terms.token_entropy[b.model_mask].sum()), float(b.model_mask.sum()))

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
            logits = self.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
            loss = sft_batch_loss(logits, b, expert_tokens)
            metrics.add_total("loss/sft", float(loss.detach()))
            metrics.add_total("loss/total", float(loss.detach()))
            return loss

        self._backward_all(len(chunks), loss_of)
        metrics.add("length/response", sum(len(t.response_ids) for t in trajs), len(trajs))

    def _apply_gradients(self, metrics: _Metrics) -> tuple[float, bool]:
        """Clip and take an optimizer step on the accumulated gradients, unless the loss or the gradient is
        NaN/inf (then the step is skipped); gradients are cleared either way. Returns (grad norm, finite)."""
        grad_norm = torch.tensor(0.0)
        if self.config.max_grad_norm > 0:
            grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        finite = bool(torch.isfinite(torch.as_tensor(grad_norm)).all()) and math.isfinite(metrics.sums["loss/total"])
        if finite:
            self.optimizer.step()
            self.engine.sync_weights(self.unwrapped)
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm), finite

    def training_step(self, step: int) -> dict[str, float]:
        """One optimizer step; returns the metrics reduced over processes."""
        cfg = self.config
        metrics = _Metrics()
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        phase = "sft" if step < cfg.sft_steps else "rl"
        generated = 0
        if phase == "sft":
            self.sft_update(step, metrics)
        else:
            batch = self.rollout(step)
            generated = batch.generated_tokens
            metrics.add("perf/generation_s", batch.generation_seconds, 1)
            metrics.add("perf/tokens_per_s", batch.generated_tokens, batch.generation_seconds)
            self._last_batch = batch
            self.update(batch, self.advantages(batch), metrics)
        grad_norm, finite = self._apply_gradients(metrics)
        if finite:
            self.scheduler.step()
            self._nonfinite_in_a_row = 0
        else:
            self._nonfinite_in_a_row += 1
            self.totals["nonfinite_steps"] += 1
        metrics.add("grad_norm", grad_norm, 1)
        metrics.add("perf/step_s", time.perf_counter() - t0, 1)
        metrics.add("perf/generated_tokens", generated, 1)
        out = metrics.reduce(self.accelerator)
        out["perf/step_s"] = time.perf_counter() - t0
        out["lr"] = self.scheduler.get_last_lr()[0]
        out["skipped_nonfinite"] = float(not finite)
        out["sft_step"] = float(phase == "sft")
        return out

    # ------------------------------------------------------------------ the run
    def train(self, resume_from_checkpoint: str | bool | None = None) -> TrainResult:
        """Run to ``config.max_steps``; ``resume_from_checkpoint``: True (latest in output_dir) or a path."""
        cfg, acc = self.config, self.accelerator
        self.output_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = self.output_dir / "metrics.jsonl"
        if resume_from_checkpoint:
            path = (ckpt.latest_checkpoint(self.output_dir) if resume_from_checkpoint is True
                    else Path(resume_from_checkpoint))
            if path is None or not (path / ckpt.STATE_FILE).is_file():
                raise FileNotFoundError(f"no complete checkpoint to resume from in {path or self.output_dir}")
            ckpt.load_weights(self.unwrapped, path)
            state = ckpt.load_training_state(path, self.optimizer, self.scheduler)
            self.step = int(state["step"])
            self.totals.update(state.get("totals", {}))
            if self.is_main:
                _truncate_jsonl(metrics_path, self.step)
                _truncate_jsonl(self.output_dir / "samples.jsonl", self.step)
            acc.print(f"resumed from {path} at step {self.step}")
        elif self.is_main:
            metrics_path.unlink(missing_ok=True)
            (self.output_dir / "samples.jsonl").unlink(missing_ok=True)
            (self.output_dir / "run_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        if cfg.report_to != "none":
            acc.init_trackers("trapo", config={k: v for k, v in cfg.to_dict().items()
                                               if isinstance(v, int | float | str | bool)})
        acc.print(f"data: {self.data_report.summary()}")
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not self.is_main, desc=f"{cfg.method}",
                   dynamic_ncols=True)
        last: dict[str, float] = {}
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
                    bar.set_postfix({k: f"{last[k]:.3g}" for k in ("reward/unguided", "loss/total", "entropy")
                                     if k in last})
                    bar.update(1)
                if cfg.report_to != "none":
                    acc.log(last, step=self.step)
                if self._nonfinite_in_a_row >= cfg.max_nonfinite_steps:
                    raise RuntimeError(
                        f"{self._nonfinite_in_a_row} steps in a row had a NaN/inf loss or gradient (last at step "
                        f"{self.step}); stopping. Lower learning_rate, check the data, or raise max_nonfinite_steps.")
                if cfg.save_steps and self.step % cfg.save_steps == 0 and self.step < cfg.max_steps:
                    self.save_checkpoint()
        except BaseException:
            if self.step > 0:  # nothing lost on a crash or Ctrl-C: the last finished step is saved
                self.save_checkpoint()
                acc.print(f"\ninterrupted: saved a checkpoint at step {self.step} in {self.output_dir}; "
                          "rerun with --resume to continue")
            raise
        finally:
            bar.close()
        self.save_checkpoint()
        final = self.save_final()
        if cfg.report_to != "none":
            acc.end_training()
        return TrainResult(self.output_dir, final, self.step, last)

    # ------------------------------------------------------------------ outputs
    def save_checkpoint(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.is_main:
            ckpt.save_checkpoint(self.output_dir, self.step, self.unwrapped, self.tokenizer, self.optimizer,
                                 self.scheduler, {"totals": dict(self.totals), "config": self.config.to_dict()},
                                 keep=self.config.save_total_limit)
        self.accelerator.wait_for_everyone()

    def save_final(self) -> Path:
        """The trained model (LoRA merged in) with its tokenizer, loadable with ``from_pretrained``."""
        final = self.output_dir / "final"
        self.accelerator.wait_for_everyone()
        if self.is_main:
            model = self.unwrapped
            if hasattr(model, "merge_and_unload"):
                import copy

                model = copy.deepcopy(model).merge_and_unload()
            model.save_pretrained(final)
            self.tokenizer.save_pretrained(final)
        self.accelerator.wait_for_everyone()
        return final

    def _log_samples(self) -> None:
        batch = self._last_batch
        if batch is None:
            return
        decode = self.tokenizer.decode
        rows = [{
            "step": self.step, "prompt": decode(t.prompt_ids, skip_special_tokens=True), "group": t.group,
            "level": t.level, "prefix": decode(t.prefix_ids, skip_special_tokens=True),
            "continuation": decode(t.completion_ids, skip_special_tokens=True), "reward": t.reward,
        } for t in batch.trajectories if t.prompt_index == 0]
        with (self.output_dir / "samples.jsonl").open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


def _logprobs(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return token_logprobs(logits[:, :-1].float(), batch.labels)


def _truncate_jsonl(path: Path, step: int) -> None:
    """Drop lines logged after ``step`` (a resumed run logs them again)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (one per logged step; empty when the run logged none)."""
    path = Path(output_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
