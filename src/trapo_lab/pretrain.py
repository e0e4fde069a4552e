"""Pre-train the embedded tiny base model on CPU: ``build_base_model(out_dir)``.

The recipe (the shortcut design's 4.27M student; docs/results/miniature_gates.md): a small Qwen2
(:func:`trapo_lab.models.tiny_config`) trained from scratch
with plain NLL on solution tokens (prompt tokens are context only) of the pre-training stream
(:func:`trapo_lab.tasks.pretraining_stream`: chain arithmetic skewed to easy tiers, a small share of
expert-style solutions, retained skills). AdamW (peak 2e-3, betas 0.9/0.98, weight decay 0.01 on matrices),
linear warm-up, cosine decay to 10% of the peak, batch 64, gradient clipping at 1.0.

The run is bounded by ``steps`` only, never by seconds (a time bound made a fresh machine build
another base model), so the build is deterministic given the config: every machine gets the same base.
The recipe of each task design is :meth:`BaseModelConfig.for_task` (the shortcut design is the default).

The output directory holds ``config.json`` + ``model.safetensors`` (``save_pretrained``), the tokenizer
files, and ``trapo_base.json``: the build config and its hash, per-tier pass@1 on validation problems,
retained-skill accuracy, expert-token probability statistics and build time. It is written to a temporary
sibling renamed into place at the end, so an interrupted build never leaves a directory that loads.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from trapo.atomic import atomic_directory
from trapo.data.encoding import encode_prompt, encode_response
from trapo.data.schema import Example
from trapo_lab.tasks import (
    OOD_TIERS,
    SKILLS,
    TIERS,
    PretrainMix,
    arithmetic_examples,
    pretraining_stream,
    skill_examples,
)
from trapo_lab.tasks.splits import TRAIN_TIER_WEIGHTS, tier_counts

BASE_INFO = "trapo_base.json"
FORMAT = "trapo-base-v1"


@dataclass(frozen=True)
class BaseModelConfig:
    """Everything that determines the base model (its hash names the build).

    Defaults: the shortcut design's recipe, attempt I of docs/results/miniature_gates.md (the first to pass
    gates G1-G3): a 4.27M-parameter student (hidden 256, 4 layers, MLP 1024) at peak lr 1e-3, 3000 steps.
    ``for_task("place-value")`` gives the earlier 1.09M recipe (hidden 128, MLP 512, lr 2e-3, 1200 steps).
    """

    seed: int = 0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    bucket_batches: int = 16
    mix: PretrainMix = field(default_factory=PretrainMix)
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    eval_per_tier: int = 200
    n_expert_probe: int = 400
    format: str = FORMAT
    bf16: bool = False  # forward passes under bf16 autocast (weights and AdamW state fp32); off: not in the hash

    @classmethod
    def for_task(cls, task: str, **overrides) -> BaseModelConfig:
        """The recipe of a task design (:data:`trapo_lab.tasks.TASKS`) with any field replaced by
        ``overrides``; ``mix`` overrides may be given as a dict of :class:`PretrainMix` fields."""
        mix = overrides.pop("mix", {})
        if isinstance(mix, dict):
            mix = PretrainMix.for_task(task, **mix)
        defaults = TASK_RECIPES[task]
        return cls(**{**defaults, "mix": mix, **overrides})

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "bucket_batches", "hidden_size", "num_layers", "num_heads")
        for name in (*positive, "intermediate_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "eval_per_tier", "n_expert_probe"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def to_dict(self) -> dict:
        """The fields; ``bf16`` only when on, so that the fp32 recipe keeps the hash it was published with."""
        values = asdict(self)
        if not values["bf16"]:
            del values["bf16"]
        return values

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# Per-task recipe settings that differ from the dataclass defaults (the shortcut recipe is the default).
TASK_RECIPES: dict[str, dict] = {
    "shortcut": {},
    "place-value": {
        "steps": 1200,
        "lr": 2e-3,
        "hidden_size": 128,
        "num_layers": 4,
        "num_heads": 4,
        "intermediate_size": 512,
    },
}


# --- batching ----------------------------------------------------------------------------------


def encode_pairs(tokenizer, prompts: Sequence[str], solutions: Sequence[str]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, solution ids + EOS) for single-turn user prompts, batch-tokenized.

    Equal to ``encode_prompt`` / ``encode_response`` with the embedded chat template (tested), but one
    tokenizer call per batch instead of a template render per example.
    """
    user = tokenizer.convert_tokens_to_ids("<|user|>")
    assistant = tokenizer.convert_tokens_to_ids("<|assistant|>")
    p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    s_ids = tokenizer(list(solutions), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [([user, *p, assistant], [*s, eos]) for p, s in zip(p_ids, s_ids, strict=True)]


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``labels`` (-100 on prompt and padding). With right padding and a
    causal mask no real token attends to padding, so no attention mask is needed."""
    width = max(len(p) + len(s) for p, s in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    for row, (p, s) in enumerate(pairs):
        ids[row, : len(p) + len(s)] = torch.tensor(p + s)
        labels[row, len(p) : len(p) + len(s)] = torch.tensor(s)
    return ids, labels


def solution_nll(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the labelled (solution) tokens: logits at t predict token t+1."""
    logits = model(input_ids=ids).logits[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1), ignore_index=-100)


def pretraining_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ids: torch.Tensor,
    labels: torch.Tensor,
    grad_clip: float,
    autocast: contextlib.AbstractContextManager,
) -> float:
    """One optimizer step on :func:`solution_nll` (forward under ``autocast``, gradients clipped to
    ``grad_clip``); returns the loss."""
    with autocast:
        loss = solution_nll(model, ids, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


def length_bucketed_batches(
    tokenizer, stream, batch_size: int, bucket_batches: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches from ``stream`` with little padding: take ``batch_size * bucket_batches`` examples, sort
    them by length, cut into ``bucket_batches`` batches and yield those in a seeded random order.

    Every example is still used once, in a batch of ``batch_size``; only which examples share a batch
    changes (about 1.6x fewer padded tokens per step on the default mix).
    """
    rng = random.Random(f"{seed}:batches")
    while True:
        chunk = list(itertools.islice(stream, batch_size * bucket_batches))
        pairs = encode_pairs(tokenizer, [c[0] for c in chunk], [c[1] for c in chunk])
        pairs.sort(key=lambda pair: len(pair[0]) + len(pair[1]))
        batches = [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)]
        rng.shuffle(batches)
        for batch in batches:
            yield collate(batch, tokenizer.pad_token_id)


def lr_at(config: BaseModelConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from the peak to ``min_lr_ratio`` × peak as
    ``progress`` (fraction of the post-warm-up budget used) goes 0 → 1."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def pretrain(model: torch.nn.Module, tokenizer, config: BaseModelConfig, progress_bar: bool = True) -> dict:
    """Run the pre-training loop in place on ``model``; return ``{"steps", "seconds", "final_loss"}``."""
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=config.betas,
    )
    batches = length_bucketed_batches(
        tokenizer, pretraining_stream(config.seed, config.mix), config.batch_size, config.bucket_batches, config.seed
    )
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if config.bf16 else contextlib.nullcontext()
    model.train()
    start = time.perf_counter()
    losses: list[float] = []
    bar = tqdm(total=config.steps, desc="pre-training", unit="step", disable=not progress_bar)
    step = 0
    try:
        while step < config.steps:
            progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
            lr = lr_at(config, step, progress)
            for group in optimizer.param_groups:
                group["lr"] = lr
            ids, labels = next(batches)
            losses.append(pretraining_step(model, optimizer, ids, labels, config.grad_clip, autocast))
            step += 1
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{sum(losses[-10:]) / 10:.3f}", lr=f"{lr:.1e}")
    finally:
        bar.close()
    model.eval()
    tail = losses[-20:]
    return {
        "steps": step,
        "seconds": round(time.perf_counter() - start, 1),
        "final_loss": round(sum(tail) / max(len(tail), 1), 4),
    }


# --- measurements ------------------------------------------------------------------------------


@torch.no_grad()
def sequence_token_probabilities(
    model: torch.nn.Module, tokenizer, pairs: Sequence[tuple[list[int], list[int]]], batch_size: int = 64
) -> list[torch.Tensor]:
    """For each (prompt ids, response ids) pair, the probability of every response token given what
    precedes it (teacher forcing); one 1-D tensor per pair."""
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i : i + batch_size]
            ids, labels = collate(chunk, pad)
            logprobs = model(input_ids=ids).logits[:, :-1].float().log_softmax(-1)
            target = labels[:, 1:]
            picked = logprobs.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1).exp()
            for row, (prompt, response) in enumerate(chunk):
                out.append(picked[row, len(prompt) - 1 : len(prompt) - 1 + len(response)])
    finally:
        model.train(was_training)
    return out


def expert_token_probabilities(
    model: torch.nn.Module, tokenizer, examples: Sequence[Example], *, all_solutions: bool = True, batch_size: int = 64
) -> torch.Tensor:
    """Probability the model gives each expert token, teacher-forced after the prompt (1-D tensor).

    Tokens are those TrSFT would see on a full expert trajectory: the solution's ids plus EOS
    (:func:`trapo.data.encode_response`). ``all_solutions=False`` uses only each example's first
    expert solution. The share of values below 0.1 is how off-policy the expert is for this model
    (TrSFT's trust region, α = 0.1, attenuates exactly those tokens).
    """
    pairs = []
    for ex in examples:
        prompt = encode_prompt(tokenizer, ex)
        for solution in ex.expert_solutions if all_solutions else ex.expert_solutions[:1]:
            pairs.append((prompt, encode_response(tokenizer, solution)))
    probs = sequence_token_probabilities(model, tokenizer, pairs, batch_size)
    return torch.cat(probs) if probs else torch.empty(0)


def probability_stats(probs: torch.Tensor) -> dict[str, float]:
    """Summary of :func:`expert_token_probabilities`: shares below 0.1 and 0.01, mean, median, count."""
    if probs.numel() == 0:
        return {"tokens": 0}
    return {
        "tokens": int(probs.numel()),
        "share_below_0.1": round(float((probs < 0.1).float().mean()), 4),
        "share_below_0.01": round(float((probs < 0.01).float().mean()), 4),
        "mean": round(float(probs.mean()), 4),
        "median": round(float(probs.median()), 4),
    }


def accuracy_by_source(
    model: torch.nn.Module,
    tokenizer,
    examples: Sequence[Example],
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 160,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """pass@1 (one sample per problem; greedy when ``temperature == 0``) per ``data_source``, measured
    with :func:`trapo.evaluate.evaluate` (scored by :func:`trapo.rewards.math_reward`)."""
    from trapo.evaluate import evaluate
    from trapo.rollout import SamplingParams

    report = evaluate(
        model,
        tokenizer,
        examples,
        k=1,
        sampling=SamplingParams(temperature=temperature),
        max_new_tokens=max_new_tokens,
        seed=seed,
        progress=progress,
    )
    return {name: round(group.avg_at_k or 0.0, 4) for name, group in report.groups.items()}


def measure_base_model(
    model,
    tokenizer,
    config: BaseModelConfig,
    *,
    split: str = "val",
    n_per_tier: int | None = None,
    seed: int = 0,
    greedy: bool = True,
) -> dict:
    """Per-tier (OOD tiers too, shortcut design) and retained-skill pass@1 (sampled at T = 1, and greedy) on
    ``split`` problems, plus the expert-token probability statistics on post-training (train split) expert
    solutions."""
    n = config.eval_per_tier if n_per_tier is None else n_per_tier
    task = config.mix.task
    report: dict = {"split": split, "n_per_tier": n, "task": task}
    if n > 0:
        skills = config.mix.skills if config.mix.skill_share > 0 else ()
        tiers = (*TIERS, *OOD_TIERS) if task == "shortcut" else TIERS
        problems = arithmetic_examples(split, dict.fromkeys(tiers, n), seed=seed, task=task)
        problems += skill_examples(split, n, seed=seed, skills=skills)
        report["sampled_pass@1"] = accuracy_by_source(model, tokenizer, problems, temperature=1.0, seed=seed)
        if greedy:
            report["greedy_pass@1"] = accuracy_by_source(model, tokenizer, problems, temperature=0.0, seed=seed)
    if config.n_expert_probe > 0:
        train = arithmetic_examples(
            "train", tier_counts(config.n_expert_probe, TRAIN_TIER_WEIGHTS), seed=seed, task=task
        )
        pairs, tags = [], []
        for ex in train:
            prompt = encode_prompt(tokenizer, ex)
            for kind, solutions in (("expert", ex.expert_solutions), ("native", (ex.meta["native_solution"],))):
                for solution in solutions:
                    pairs.append((prompt, encode_response(tokenizer, solution)))
                    tags.append((kind, ex.data_source))
        probs = sequence_token_probabilities(model, tokenizer, pairs)

        def pooled(keep) -> torch.Tensor:
            return torch.cat([p for p, tag in zip(probs, tags, strict=True) if keep(tag)])

        report["expert_token_probability"] = probability_stats(pooled(lambda t: t[0] == "expert"))
        report["native_token_probability"] = probability_stats(pooled(lambda t: t[0] == "native"))
        report["expert_token_probability_by_tier"] = {
            source: probability_stats(pooled(lambda t, s=source: t == ("expert", s)))
            for source in sorted({tag[1] for tag in tags})
        }
    return report


# --- the cached build --------------------------------------------------------------------------


def read_base_info(path: str | os.PathLike) -> dict | None:
    """``trapo_base.json`` of a base-model directory, or None when missing / unreadable."""
    try:
        return json.loads((Path(path) / BASE_INFO).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(path: Path) -> bool:
    info = read_base_info(path)
    needed = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    return info is not None and "config_hash" in info and all((path / name).is_file() for name in needed)


def build_base_model(
    out_dir: str | os.PathLike = "artifacts/base",
    config: BaseModelConfig | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    threads: int | None = None,
    **overrides,
) -> Path:
    """Pre-train the embedded base model into ``out_dir`` (or reuse it) and return the path.

    The build is :class:`BaseModelConfig` ``config`` (default: the recipe) with any of its fields replaced
    by keyword ``overrides``, e.g. ``build_base_model("artifacts/base", seed=1, steps=800)``.
    Caching: if ``out_dir`` holds a complete build with the same config hash it is returned untouched; a
    complete build with another config, or a partial / corrupt directory, raises ``ValueError`` naming
    the path unless ``force`` (rebuild). ``threads`` sets torch's CPU threads for the build only (on a
    busy machine 1 thread can be faster than 2); it is not part of the config: it changes speed, not
    the steps taken.
    """
    config = config or BaseModelConfig()
    unknown = sorted(set(overrides) - {f.name for f in fields(BaseModelConfig)})
    if unknown:
        raise ValueError(f"unknown base-model setting(s) {unknown}; see trapo_lab.pretrain.BaseModelConfig")
    if overrides:
        config = replace(config, **overrides)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"base model path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        info = read_base_info(out)
        if not _is_complete(out):
            raise ValueError(
                f"{out} exists but is not a complete trapo base model (missing or unreadable {BASE_INFO}, "
                "model or tokenizer files); remove it or pass force=True (--force) to rebuild"
            )
        if info["config_hash"] != config.hash():
            raise ValueError(
                f"{out} holds a base model built with another config (hash {info['config_hash']}, "
                f"requested {config.hash()}); choose another directory or pass force=True (--force) to rebuild"
            )
        return out

    previous_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        return _build(out, config, progress=progress)
    finally:
        torch.set_num_threads(previous_threads)


def new_student(config: BaseModelConfig, tokenizer) -> torch.nn.Module:
    """The recipe's Qwen2 with its initial weights (seeded by ``config.seed``), before pre-training."""
    from transformers import Qwen2ForCausalLM

    from trapo_lab.models import tiny_config

    model_config = tiny_config(
        len(tokenizer),
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(config.seed)
    return Qwen2ForCausalLM(model_config)


def _build(out: Path, config: BaseModelConfig, *, progress: bool) -> Path:
    from trapo_lab.models import build_tokenizer

    started = time.perf_counter()
    tokenizer = build_tokenizer()
    model = new_student(config, tokenizer)
    run = pretrain(model, tokenizer, config, progress_bar=progress)
    train_seconds = time.perf_counter() - started
    measured = measure_base_model(model, tokenizer, config, seed=config.seed)
    info = {
        "format": FORMAT,
        "config": config.to_dict(),
        "config_hash": config.hash(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "pretraining": run,
        "build_seconds": round(time.perf_counter() - started, 1),
        "train_seconds": round(train_seconds, 1),
        "torch_threads": torch.get_num_threads(),
        **measured,
    }
    return save_base_model(model, tokenizer, info, out)


def save_base_model(model: torch.nn.Module, tokenizer, info: dict, out_dir: str | os.PathLike) -> Path:
    """Write ``model`` (safetensors), ``tokenizer`` and ``info`` (as ``trapo_base.json``, last) into a
    temporary sibling of ``out_dir``, then rename it into place (replacing ``out_dir`` if it exists)."""
    out = Path(out_dir)
    with atomic_directory(out) as tmp:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / BASE_INFO).write_text(json.dumps(info, indent=2) + "\n")  # written last: marks completeness
    return out


__all__ = [
    "BASE_INFO",
    "SKILLS",
    "BaseModelConfig",
    "accuracy_by_source",
    "build_base_model",
    "encode_pairs",
    "expert_token_probabilities",
    "measure_base_model",
    "pretrain",
    "probability_stats",
    "read_base_info",
    "save_base_model",
]
