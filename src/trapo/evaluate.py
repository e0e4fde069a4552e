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
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from trapo.data.encoding import encode_prompt
from trapo.data.schema import Example
from trapo.rewards.math_answers import Verdict, check_answer, math_reward
from trapo.rollout.base import RolloutEngine, SamplingParams
from trapo.rollout.hf import HFEngine

# ---------------------------------------------------------------------------------------------- metrics


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: ``1 - C(n-c, k)/C(n, k)``.

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (Chen et al. 2021), which never forms the binomials.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def _matrix(correct: Sequence[Sequence[Any]]) -> list[list[bool]]:
    rows = [[bool(x) for x in row] for row in correct]
    if not rows or not rows[0]:
        raise ValueError("correct must be a non-empty problems × samples matrix")
    if any(len(r) != len(rows[0]) for r in rows):
        raise ValueError("every problem must have the same number of samples")
    return rows


def avg_at_k(correct: Sequence[Sequence[Any]]) -> float:
    """avg@k: the mean of an n_problems × k correctness matrix (expected single-sample accuracy)."""
    rows = _matrix(correct)
    return sum(map(sum, rows)) / (len(rows) * len(rows[0]))


def pass_at_k_per_problem(correct: Sequence[Sequence[Any]], k: int) -> list[float]:
    """pass@k of each problem (row) of a correctness matrix."""
    return [pass_at_k(len(row), sum(row), k) for row in _matrix(correct)]


def mean_pass_at_k(correct: Sequence[Sequence[Any]], k: int) -> float:
    """pass@k averaged over the problems of a correctness matrix."""
    per_problem = pass_at_k_per_problem(correct, k)
    return sum(per_problem) / len(per_problem)


def default_pass_ks(k: int) -> tuple[int, ...]:
    """Powers of two up to k, and k itself: (1, 2, 4, 8, 16, 32) for k=32, (1, 2, 4, 5) for k=5."""
    ks = [2**i for i in range(k.bit_length()) if 2**i <= k]
    return tuple(sorted(set([*ks, k])))


# ---------------------------------------------------------------------------------------------- report


@dataclass
class ProblemResult:
    """The k samples of one problem."""

    index: int  # position in the evaluated examples
    group: str
    answer: str
    correct: list[bool]
    statuses: list[str]  # Verdict status per sample ("scored" for rewards that give plain floats)
    completion_tokens: list[int]
    truncated: list[bool]  # ran out of max_new_tokens before EOS
    completions: list[str] | None = None  # kept with keep_completions=True

    @property
    def unverifiable(self) -> bool:
        return "unverifiable_ground_truth" in self.statuses

    @property
    def n_correct(self) -> int:
        return sum(self.correct)


@dataclass
class GroupMetrics:
    """Metrics of one group of problems (a benchmark), or of all of them."""

    n_problems: int
    n_unverifiable: int
    n_timeouts: int  # samples whose check ran past its bound (scored wrong)
    avg_at_k: float | None  # None when no problem could be scored
    pass_at_k: dict[int, float]
    mean_completion_tokens: float
    truncated_rate: float
    tokens_per_s: float
    generation_s: float

    @property
    def n_scored(self) -> int:
        return self.n_problems - self.n_unverifiable

    def to_dict(self, k: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_problems": self.n_problems,
            "n_scored": self.n_scored,
            "n_unverifiable": self.n_unverifiable,
            "n_timeouts": self.n_timeouts,
            f"avg@{k}": self.avg_at_k,
        }
        out.update({f"pass@{j}": v for j, v in self.pass_at_k.items()})
        out.update(
            mean_completion_tokens=self.mean_completion_tokens,
            truncated_rate=self.truncated_rate,
            tokens_per_s=self.tokens_per_s,
            generation_s=self.generation_s,
        )
        return out


@dataclass
class EvalReport:
    """What :func:`evaluate` measured: per group, overall, and per problem."""

    k: int
    pass_ks: tuple[int, ...]
    groups: dict[str, GroupMetrics]
    overall: GroupMetrics
    problems: list[ProblemResult]
    settings: dict[str, Any] = field(default_factory=dict)

    def correctness(self, group: str | None = None) -> list[list[bool]]:
        """The problems × k correctness matrix of the scored problems (of one group, or all)."""
        return [p.correct for p in self.problems if not p.unverifiable and (group is None or p.group == group)]

    def pass_at_k_curve(self, group: str | None = None, ks: Sequence[int] | None = None) -> dict[int, float]:
        """pass@k for every k in ``ks`` (default 1..k), from the stored per-problem correctness."""
        matrix = self.correctness(group)
        if not matrix:
            return {}
        return {j: mean_pass_at_k(matrix, j) for j in (ks or range(1, self.k + 1))}

    def group_mean(self) -> dict[str, float]:
        """avg@k and pass@k averaged over groups (each benchmark weighs the same, as in the paper's average)."""
        scored = [g for g in self.groups.values() if g.avg_at_k is not None]
        if not scored:
            return {}
        out = {f"avg@{self.k}": sum(g.avg_at_k for g in scored) / len(scored)}
        for j in self.pass_ks:
            out[f"pass@{j}"] = sum(g.pass_at_k[j] for g in scored) / len(scored)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: settings, metrics per group / overall / mean of groups, and per-problem correctness."""
        return {
            "k": self.k,
            "pass_ks": list(self.pass_ks),
            "settings": self.settings,
            "overall": self.overall.to_dict(self.k),
            "groups": {name: g.to_dict(self.k) for name, g in self.groups.items()},
            "group_mean": self.group_mean(),
            "problems": [
                {
                    "index": p.index,
                    "group": p.group,
                    "answer": p.answer,
                    "unverifiable": p.unverifiable,
                    "n_correct": p.n_correct,
                    "correct": [int(c) for c in p.correct],
                    "statuses": p.statuses,
                    "completion_tokens": p.completion_tokens,
                    **({"completions": p.completions} if p.completions is not None else {}),
                }
                for p in self.problems
            ],
        }

    def table(self) -> str:
        """A Markdown table: one row per group, then all problems pooled, then the mean over groups."""
        pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
        head = [
            "group",
            "problems",
            f"avg@{self.k}",
            *(f"pass@{j}" for j in self.pass_ks),
            "unverifiable",
            "timeouts",
            "mean tokens",
            "truncated",
            "tokens/s",
        ]

        def row(name: str, g: GroupMetrics) -> list[str]:
            return [
                name,
                str(g.n_problems),
                pct(g.avg_at_k),
                *(pct(g.pass_at_k.get(j)) for j in self.pass_ks),
                str(g.n_unverifiable),
                str(g.n_timeouts),
                f"{g.mean_completion_tokens:.1f}",
                pct(g.truncated_rate),
                f"{g.tokens_per_s:.1f}",
            ]

        rows = [row(name, g) for name, g in self.groups.items()]
        rows.append(row("**all problems**", self.overall))
        if len(self.groups) > 1 and (mean := self.group_mean()):
            rows.append(
                [
                    "**mean of groups**",
                    "",
                    pct(mean[f"avg@{self.k}"]),
                    *(pct(mean[f"pass@{j}"]) for j in self.pass_ks),
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)


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


def _metrics(
    problems: list[ProblemResult], k: int, pass_ks: Sequence[int], n_tokens: int, seconds: float
) -> GroupMetrics:
    scored = [p.correct for p in problems if not p.unverifiable]
    samples = [t for p in problems for t in p.completion_tokens]
    truncated = [t for p in problems for t in p.truncated]
    return GroupMetrics(
        n_problems=len(problems),
        n_unverifiable=sum(p.unverifiable for p in problems),
        n_timeouts=sum(s == "timeout" for p in problems for s in p.statuses),
        avg_at_k=avg_at_k(scored) if scored else None,
        pass_at_k={j: mean_pass_at_k(scored, j) for j in pass_ks} if scored else {},
        mean_completion_tokens=sum(samples) / len(samples) if samples else 0.0,
        truncated_rate=sum(truncated) / len(truncated) if truncated else 0.0,
        tokens_per_s=n_tokens / seconds if seconds > 0 else 0.0,
        generation_s=seconds,
    )


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
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not examples:
        raise ValueError("examples is empty: nothing to evaluate")
    prompts = [encode_prompt(tokenizer, ex, prompt_template) for ex in examples]
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    if batch_size is None:
        batch_size = auto_batch_size(model, max(map(len, prompts)) + max_new_tokens, device)
    pass_ks = tuple(sorted(set(pass_ks))) if pass_ks else default_pass_ks(k)
    if any(not 1 <= j <= k for j in pass_ks):
        raise ValueError(f"every pass@k k must be in 1..{k} (the samples per problem), got {list(pass_ks)}")
    sampling = sampling or SamplingParams(temperature=1.0)
    if engine is None:
        if model is None:
            raise ValueError("pass a model or an engine")
        engine = HFEngine.from_tokenizer(model, tokenizer, max_batch_size=batch_size)

    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(_group_of(ex, group_by), []).append(i)
    eos = getattr(tokenizer, "eos_token_id", None)

    results: list[ProblemResult | None] = [None] * len(examples)
    group_metrics: dict[str, GroupMetrics] = {}
    total_rows = len(examples) * k
    bar = tqdm(total=total_rows, desc="generating", unit="sample", disable=not progress, dynamic_ncols=True)
    per_step = progress and "progress" in inspect.signature(engine.generate).parameters
    tokens_so_far = 0

    def step_done(finished: int, tokens: int) -> None:  # after every decode step of the engine
        nonlocal tokens_so_far
        tokens_so_far += tokens
        bar.set_postfix_str(f"{tokens_so_far} tokens", refresh=False)
        bar.update(finished)  # redraws at most every bar.mininterval seconds, also when finished == 0

    first_row, total_tokens, total_seconds = 0, 0, 0.0
    for name, members in groups.items():
        rows = [(i, s) for i in members for s in range(k)]  # problem-major: a problem's k samples together
        completions: list[list[int]] = []
        start = time.perf_counter()
        for b in range(0, len(rows), batch_size):
            chunk = rows[b : b + batch_size]
            generator = torch.Generator(device=device).manual_seed(_batch_seed(seed, first_row + b))
            chunk_prompts = [prompts[i] for i, _ in chunk]
            if per_step:
                completions += engine.generate(chunk_prompts, max_new_tokens, sampling, generator, progress=step_done)
            else:
                completions += engine.generate(chunk_prompts, max_new_tokens, sampling, generator)
                bar.update(len(chunk))
        seconds = time.perf_counter() - start
        first_row += len(rows)
        n_tokens = sum(map(len, completions))
        total_tokens, total_seconds = total_tokens + n_tokens, total_seconds + seconds

        for j, i in enumerate(members):
            ids = completions[j * k : (j + 1) * k]
            texts = [tokenizer.decode(c, skip_special_tokens=True) for c in ids]
            verdicts = [_verdict(reward_fn, t, examples[i].answer) for t in texts]
            results[i] = ProblemResult(
                index=i,
                group=name,
                answer=examples[i].answer,
                correct=[v.correct for v in verdicts],
                statuses=[v.status for v in verdicts],
                completion_tokens=[len(c) for c in ids],
                truncated=[len(c) >= max_new_tokens and (not c or c[-1] != eos) for c in ids],
                completions=texts if keep_completions else None,
            )
        group_metrics[name] = _metrics([results[i] for i in members], k, pass_ks, n_tokens, seconds)
    bar.close()

    problems = [r for r in results if r is not None]
    return EvalReport(
        k=k,
        pass_ks=pass_ks,
        groups=group_metrics,
        overall=_metrics(problems, k, pass_ks, total_tokens, total_seconds),
        problems=problems,
        settings={
            "k": k,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "batch_size": batch_size,
            "reward": getattr(reward_fn, "__name__", type(reward_fn).__name__),
            "n_problems": len(examples),
        },
    )
