"""Statistics that carry a verdict: per-problem outcomes, a paired bootstrap over problems and seeds, and the
interval rule (pure functions, numpy only).

Outcomes. Every evaluation keeps, per data source, one count per problem (how many of its ``k`` samples were
correct, degenerate, or in the expert's style), in the order of the evaluated problems
(:func:`encode_counts` stores them as a short string). Every model of a comparison is evaluated on the same
problems, so two models' outcomes pair problem by problem, and the same seed pairs runs.

The paired bootstrap (:func:`paired_bootstrap`). The difference of two methods on a measure is
``d = mean over seeds s of [ mean over sources g of ( mean over problems i of a[s,g,i] - b[s,g,i] ) ]``
(each source weighs the same, as in the tables). One bootstrap replicate draws the seeds with replacement
and, independently per source, the problems with replacement (the same draw for both methods and every
seed: paired), and recomputes ``d``; the 95% interval is the 2.5th and 97.5th percentiles of the
replicates. The generator is seeded, so the interval is reproducible.

The interval rule (:func:`interval_verdict`): a claim is **holds** when the whole interval lies on the claimed
side of its boundary, **fails** when it lies wholly on the other side, **within noise** otherwise; an
interval that touches the boundary is within noise, so an exact tie (every paired difference 0, interval
[0, 0]) never holds a strict claim.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

HOLDS, FAILS, NOISE, MISSING = "holds", "fails", "within noise", "not measured"
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
# Claim shapes of :func:`interval_verdict`.
ABOVE, NEAR = "above", "near"


def encode_counts(counts: Sequence[int]) -> str:
    """Per-problem counts as one string: ``[0, 1, 12]`` → ``"0 1 12"`` (compact in JSON)."""
    return " ".join(str(int(c)) for c in counts)


def problem_outcomes(problems: Sequence[Any], extract_boxed: Callable, solution_style: Callable) -> dict[str, Any]:
    """Per group, per problem (in evaluation order) the counts of correct, degenerate (no ``\\boxed``) and
    expert-style samples, each list as one string (:func:`~trapo_lab.compare.stats.encode_counts`)."""
    by_group: dict[str, dict[str, list[int]]] = {}
    for p in sorted(problems, key=lambda p: p.index):
        entry = by_group.setdefault(p.group, {"correct": [], "degenerate": [], "expert_style": []})
        completions = p.completions or []
        entry["correct"].append(sum(bool(c) for c in p.correct))
        entry["degenerate"].append(sum(extract_boxed(c) is None for c in completions))
        entry["expert_style"].append(sum(solution_style(c) == "expert" for c in completions))
    return {g: {name: encode_counts(v) for name, v in e.items()} for g, e in by_group.items()}


def decode_counts(text: str) -> np.ndarray:
    """The inverse of :func:`encode_counts` (an empty string is no problems)."""
    return np.array([int(c) for c in text.split()], dtype=float)


def passk_area(counts: Sequence[int], n: int) -> np.ndarray:
    """Per problem, the area under its pass@k curve for k = 1..n, normalised to [0, 1] (the mean of the
    unbiased pass@1..pass@n, :func:`trapo.evaluate.pass_at_k`): 0 when no sample is correct, 1 when all are."""
    from trapo.evaluate import pass_at_k

    table = np.array([[pass_at_k(n, c, k) for k in range(1, n + 1)] for c in range(n + 1)]).mean(axis=1)
    return table[np.asarray(counts, dtype=int)]


def paired_bootstrap(
    a: Mapping[Any, Mapping[str, np.ndarray]],
    b: Mapping[Any, Mapping[str, np.ndarray]],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """The paired difference ``a - b`` (module docstring) with its bootstrap 95% interval.

    Args:
        a, b: per seed, per source, the per-problem scores of each method (same problems in the same order
            for both and for every seed). Seeds and sources used: those both have.

    Returns ``d``, ``ci95`` ([low, high]), the ``per_seed`` differences, ``seeds`` and ``problems`` (per
    source); ``d`` and ``ci95`` are None without a common seed and source.
    """
    seeds = sorted(set(a) & set(b), key=str)
    sources = sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds))) if seeds else []
    if not seeds or not sources:
        return {"d": None, "ci95": None, "per_seed": {}, "seeds": [], "problems": {}}
    diffs = {}
    for g in sources:
        rows = [np.asarray(a[s][g], dtype=float) - np.asarray(b[s][g], dtype=float) for s in seeds]
        if len({len(r) for r in rows}) != 1 or len(rows[0]) == 0:
            raise ValueError(f"{g}: every seed needs the same, non-empty problems (got {[len(r) for r in rows]})")
        diffs[g] = np.stack(rows)  # seeds x problems
    per_seed = np.mean([d.mean(axis=1) for d in diffs.values()], axis=0)
    rng = np.random.default_rng(seed)
    n_seeds = len(seeds)
    seed_weights = rng.multinomial(n_seeds, [1 / n_seeds] * n_seeds, size=samples) / n_seeds
    replicates = np.zeros(samples)
    for d in diffs.values():
        n = d.shape[1]
        problem_weights = rng.multinomial(n, [1 / n] * n, size=samples) / n
        replicates += np.einsum("bs,si,bi->b", seed_weights, d, problem_weights)
    replicates /= len(diffs)
    low, high = np.percentile(replicates, [2.5, 97.5])
    return {
        "d": float(per_seed.mean()),
        "ci95": [float(low), float(high)],
        "per_seed": {str(s): float(v) for s, v in zip(seeds, per_seed, strict=True)},
        "seeds": [s if isinstance(s, int) else str(s) for s in seeds],
        "problems": {g: int(d.shape[1]) for g, d in diffs.items()},
    }


def interval_verdict(ci95: Sequence[float] | None, shape: str = ABOVE, bound: float = 0.0) -> str:
    """The interval rule for a paired difference ``d`` (oriented so that the claim says "large d is good").

    - ``shape="above"``: the claim is ``d > bound`` (``bound`` 0: "better"; 0.05: "well above", 5 points).
      **holds** if ``low > bound``, **fails** if ``high < bound``, else **within noise**.
    - ``shape="near"``: the claim is ``|d| < bound``. **holds** if ``-bound < low`` and ``high < bound``,
      **fails** if the interval lies wholly outside (``low > bound`` or ``high < -bound``), else within noise.

    An interval touching a boundary is within noise (so [0, 0], an exact tie, never holds "better").
    Examples: [0.01, 0.04] above 0 holds; [-0.03, 0.02] within noise; [-0.05, -0.01] fails; [0.02, 0.09]
    above 0.05 within noise; [-0.015, 0.01] near 0.02 holds; [-0.06, -0.03] near 0.02 fails.
    """
    if ci95 is None:
        return MISSING
    low, high = ci95
    if shape == ABOVE:
        return HOLDS if low > bound else FAILS if high < bound else NOISE
    if shape == NEAR:
        if -bound < low and high < bound:
            return HOLDS
        return FAILS if low > bound or high < -bound else NOISE
    raise ValueError(f"shape must be {ABOVE!r} or {NEAR!r}, got {shape!r}")


def interval_margin(ci95: Sequence[float], shape: str = ABOVE, bound: float = 0.0) -> float:
    """How far inside the claimed region the interval lies (negative: partly or wholly outside); the part of
    a many-part claim with the smallest margin is the one that decides it."""
    low, high = ci95
    return low - bound if shape == ABOVE else min(low + bound, bound - high)


def combine(verdicts: Sequence[str]) -> str:
    """One verdict for a claim of several parts: fails if any part fails, holds if all hold, else noise."""
    if not verdicts or MISSING in verdicts:
        return MISSING
    if FAILS in verdicts:
        return FAILS
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    return NOISE
