"""The evaluation harness: k samples per problem, scored by a rule-based reward, reported as avg@k and pass@k.

- **avg@k** (the paper's AIME/AMC metric, "avg@32"): the mean correctness over all k samples of all
  problems, i.e. the expected accuracy of one sample. The verl benchmark files repeat each AIME/AMC problem
  32 times to get it from k=1 runs; load them with ``dedupe=True`` and use ``k=32`` instead.
- **pass@k**: the chance that at least one of k samples is correct, by the unbiased estimator of Chen et al.
  (2021, "Evaluating Large Language Models Trained on Code", eq. 1) from n ≥ k samples of which c are
  correct: ``1 - C(n-c, k) / C(n, k)``, averaged over problems.

Every problem×sample pair is a row of its own in the sampling batch, so the k samples of a problem are
independent draws (a published harness gave all k samples one seed, making them identical). Sampling is
reproducible: the generator of each batch is seeded from ``seed`` and the batch's first row, so the same
seed and batch size give the same completions.

Ground truths math-verify cannot parse are reported as ``n_unverifiable`` and left out of the accuracies,
not scored 0; checks that ran past their time bound count as wrong and are reported as ``n_timeouts``.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from trapo.data.encoding import encode_prompt
from trapo.data.schema import Example
from trapo.evaluate_report import (
    EvalReport,
    GroupMetrics,
    ProblemResult,
    avg_at_k,
    default_pass_ks,
    mean_pass_at_k,
    pass_at_k,
    pass_at_k_per_problem,
)
from trapo.rewards.math_answers import Verdict, check_answer, math_reward
from trapo.rollout.base import RolloutEngine, SamplingParams
from trapo.rollout.hf import HFEngine

__all__ = [
    "CPU_KV_CACHE_BYTES",
    "MAX_AUTO_BATCH_SIZE",
    "EvalReport",
    "GroupMetrics",
    "ProblemResult",
    "auto_batch_size",
    "avg_at_k",
    "default_pass_ks",
    "evaluate",
    "mean_pass_at_k",
    "pass_at_k",
    "pass_at_k_per_problem",
]

# ---------------------------------------------------------------------------------------------- harness


def _group_of(example: Example, group_by: str | Callable[[Example], str]) -> str:
    if callable(group_by):
        name = group_by(example)
    elif hasattr(example, group_by):
        name = getattr(example, group_by)
    else:
        name = example.meta.get(group_by)
    return str(name) if name not in (None, "") else "unknown"


def _batch_seed(seed: int, first_row: int) -> int:
    digest = hashlib.sha256(f"trapo-eval:{seed}:{first_row}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _verdict(reward_fn: Callable[[str, str], Any], completion: str, answer: str) -> Verdict:
    if reward_fn is math_reward:  # the default: keep the status (unverifiable ground truth, timeout)
        return check_answer(completion, answer)
    try:
        value = reward_fn(completion, answer)
    except Exception as err:
        return Verdict("wrong", detail=f"reward raised {type(err).__name__}: {err}")
    if isinstance(value, Verdict):
        return value
    try:
        score = float(value)
    except (TypeError, ValueError):
        return Verdict("wrong", detail=f"reward returned {type(value).__name__}")
    return Verdict("correct" if math.isfinite(score) and score >= 0.5 else "wrong")


# The KV cache of a generation batch may take this much memory on CPU (on a GPU: half the free memory).
CPU_KV_CACHE_BYTES = 2 * 2**30
MAX_AUTO_BATCH_SIZE = 256


def auto_batch_size(model: torch.nn.Module | None, max_tokens: int, device: torch.device | None = None) -> int:
    """Rows per generation batch for ``model`` when ``max_tokens`` (prompt + completion) may be cached per row:
    as many as keep the KV cache within :data:`CPU_KV_CACHE_BYTES` on CPU or half the free memory of a GPU,
    between 8 and :data:`MAX_AUTO_BATCH_SIZE` (the throughput of the tiny model on CPU still grows up to 256
    rows; the progress bar moves per decode step whatever the batch)."""
    config = getattr(model, "config", None)
    try:
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        layers, heads = int(text.num_hidden_layers), int(text.num_attention_heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
        itemsize = next(model.parameters()).element_size()
    except (AttributeError, TypeError, ValueError, StopIteration):
        return 64
    per_row = 2 * layers * kv_heads * head_dim * itemsize * max(max_tokens, 1)
    budget = CPU_KV_CACHE_BYTES
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        budget = torch.cuda.mem_get_info(device)[0] // 2
    return int(min(MAX_AUTO_BATCH_SIZE, max(8, budget // per_row)))


def _check_arguments(k: int, max_new_tokens: int, batch_size: int | None, examples: Sequence[Example]) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not examples:
        raise ValueError("examples is empty: nothing to evaluate")


def _resolve_pass_ks(pass_ks: Sequence[int] | None, k: int) -> tuple[int, ...]:
    pass_ks = tuple(sorted(set(pass_ks))) if pass_ks else default_pass_ks(k)
    if any(not 1 <= j <= k for j in pass_ks):
        raise ValueError(f"every pass@k k must be in 1..{k} (the samples per problem), got {list(pass_ks)}")
    return pass_ks


def _groups(examples: Sequence[Example], group_by: str | Callable[[Example], str]) -> dict[str, list[int]]:
    """The indices of the examples of each group, groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(_group_of(ex, group_by), []).append(i)
    return groups


@dataclass
class _Sampler:
    """Generates the k samples of each problem in batches, each batch's generator seeded from ``seed`` and the
    batch's first row (counted over all groups), and moves the progress bar as the samples finish."""

    engine: RolloutEngine
    prompts: list[list[int]]
    k: int
    max_new_tokens: int
    sampling: SamplingParams
    seed: int
    batch_size: int
    device: torch.device
    progress: bool
    first_row: int = 0
    tokens_so_far: int = 0

    def __post_init__(self) -> None:
        total_rows = len(self.prompts) * self.k
        self.bar = tqdm(
            total=total_rows, desc="generating", unit="sample", disable=not self.progress, dynamic_ncols=True
        )
        self.per_step = self.progress and "progress" in inspect.signature(self.engine.generate).parameters

    def _step_done(self, finished: int, tokens: int) -> None:  # after every decode step of the engine
        self.tokens_so_far += tokens
        self.bar.set_postfix_str(f"{self.tokens_so_far} tokens", refresh=False)
        self.bar.update(finished)  # redraws at most every bar.mininterval seconds, also when finished == 0

    def sample(self, members: list[int]) -> tuple[list[list[int]], float]:
        """The k completions of each problem in ``members``, problem-major, and the seconds they took."""
        rows = [(i, s) for i in members for s in range(self.k)]  # problem-major: a problem's k samples together
        completions: list[list[int]] = []
        start = time.perf_counter()
        for b in range(0, len(rows), self.batch_size):
            chunk = rows[b : b + self.batch_size]
            generator = torch.Generator(device=self.device).manual_seed(_batch_seed(self.seed, self.first_row + b))
            chunk_prompts = [self.prompts[i] for i, _ in chunk]
            if self.per_step:
                completions += self.engine.generate(
                    chunk_prompts, self.max_new_tokens, self.sampling, generator, progress=self._step_done
                )
            else:
                completions += self.engine.generate(chunk_prompts, self.max_new_tokens, self.sampling, generator)
                self.bar.update(len(chunk))
        seconds = time.perf_counter() - start
        self.first_row += len(rows)
        return completions, seconds

    def close(self) -> None:
        self.bar.close()


@dataclass
class _Scorer:
    """Decodes and scores the k completions of each problem of a group."""

    examples: Sequence[Example]
    tokenizer: Any
    k: int
    reward_fn: Callable[[str, str], Any]
    max_new_tokens: int
    keep_completions: bool

    def __post_init__(self) -> None:
        self.eos = getattr(self.tokenizer, "eos_token_id", None)

    def group(self, name: str, members: list[int], completions: list[list[int]]) -> list[ProblemResult]:
        """The results of the problems ``members`` of group ``name``, from their completions (problem-major)."""
        k, max_new_tokens, eos = self.k, self.max_new_tokens, self.eos
        results = []
        for j, i in enumerate(members):
            ids = completions[j * k : (j + 1) * k]
            texts = [self.tokenizer.decode(c, skip_special_tokens=True) for c in ids]
            verdicts = [_verdict(self.reward_fn, t, self.examples[i].answer) for t in texts]
            results.append(
                ProblemResult(
                    index=i,
                    group=name,
                    answer=self.examples[i].answer,
                    correct=[v.correct for v in verdicts],
                    statuses=[v.status for v in verdicts],
                    completion_tokens=[len(c) for c in ids],
                    truncated=[len(c) >= max_new_tokens and (not c or c[-1] != eos) for c in ids],
                    completions=texts if self.keep_completions else None,
                )
            )
        return results


def _settings(
    k: int, sampling: SamplingParams, max_new_tokens: int, seed: int, batch_size: int, reward_fn, n_problems: int
) -> dict[str, Any]:
    """The settings an :class:`EvalReport` records."""
    return {
        "k": k,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "batch_size": batch_size,
        "reward": getattr(reward_fn, "__name__", type(reward_fn).__name__),
        "n_problems": n_problems,
    }


def evaluate(
    model: torch.nn.Module | None,
    tokenizer,
    examples: Sequence[Example],
    *,
    k: int = 1,
    sampling: SamplingParams | None = None,
    max_new_tokens: int = 512,
    reward_fn: Callable[[str, str], Any] = math_reward,
    seed: int = 0,
    batch_size: int | None = None,
    engine: RolloutEngine | None = None,
    group_by: str | Callable[[Example], str] = "data_source",
    pass_ks: Sequence[int] | None = None,
    progress: bool = True,
    keep_completions: bool = False,
    prompt_template: str = "chat",
) -> EvalReport:
    """Sample ``k`` completions per problem, score them, and report avg@k / pass@k per group and overall.

    Args:
        model, tokenizer: a ``transformers`` causal LM and its tokenizer (prompts go through the chat
            template, completions are decoded with ``skip_special_tokens``). ``model`` may be None when an
            ``engine`` is given.
        examples: the problems (de-duplicate repeated rows first: ``load_examples(..., dedupe=True)``).
        k: samples per problem.
        sampling: temperature / top-p / top-k (default ``SamplingParams(temperature=1.0)``).
        max_new_tokens: completion budget; completions that hit it count in ``truncated_rate``.
        reward_fn: ``(completion, ground_truth) -> float`` (a sample is correct when its reward is >= 0.5)
            or ``-> Verdict``. With the default :func:`math_reward`, unverifiable ground truths and
            timeouts are reported separately.
        seed: seeds sampling; the same seed and batch size give the same completions.
        batch_size: rows (problem × sample) per generation call; default :func:`auto_batch_size`.
        engine: a :class:`RolloutEngine` (default ``HFEngine.from_tokenizer(model, tokenizer)``).
        group_by: an :class:`Example` attribute or ``meta`` key, or a callable, naming each problem's group.
        pass_ks: the k's of pass@k to report (default powers of two up to k, and k).
        progress: show a tqdm progress bar of finished samples (and tokens so far), updated after every decode
            step where the engine reports them (:class:`HFEngine` does), else after every batch.
        keep_completions: store the completion texts in the report.
        prompt_template: how prompts become text, as in training (:func:`trapo.data.encode_prompt`: chat,
            none, trapo, or a template file); evaluate with the template the model was trained with.
    """
    _check_arguments(k, max_new_tokens, batch_size, examples)
    prompts = [encode_prompt(tokenizer, ex, prompt_template) for ex in examples]
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    if batch_size is None:
        batch_size = auto_batch_size(model, max(map(len, prompts)) + max_new_tokens, device)
    pass_ks = _resolve_pass_ks(pass_ks, k)
    sampling = sampling or SamplingParams(temperature=1.0)
    if engine is None:
        if model is None:
            raise ValueError("pass a model or an engine")
        engine = HFEngine.from_tokenizer(model, tokenizer, max_batch_size=batch_size)

    groups = _groups(examples, group_by)
    scorer = _Scorer(examples, tokenizer, k, reward_fn, max_new_tokens, keep_completions)
    sampler = _Sampler(engine, prompts, k, max_new_tokens, sampling, seed, batch_size, device, progress)
    results: list[ProblemResult | None] = [None] * len(examples)
    group_metrics: dict[str, GroupMetrics] = {}
    total_tokens, total_seconds = 0, 0.0
    for name, members in groups.items():
        completions, seconds = sampler.sample(members)
        n_tokens = sum(map(len, completions))
        total_tokens, total_seconds = total_tokens + n_tokens, total_seconds + seconds
        scored = scorer.group(name, members, completions)
        for i, result in zip(members, scored, strict=True):
            results[i] = result
        group_metrics[name] = GroupMetrics.measure(scored, k, pass_ks, n_tokens, seconds)
    sampler.close()

    problems = [r for r in results if r is not None]
    settings = _settings(k, sampling, max_new_tokens, seed, batch_size, reward_fn, len(examples))
    overall = GroupMetrics.measure(problems, k, pass_ks, total_tokens, total_seconds)
    return EvalReport(k=k, pass_ks=pass_ks, groups=group_metrics, overall=overall, problems=problems, settings=settings)
