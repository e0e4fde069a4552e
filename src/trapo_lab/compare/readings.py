"""Second readings of a comparison, each a guard against one way its headline could mislead (pure functions):

- :func:`late_gain` — how much validation accuracy still rose over the last 20% of steps (not converged?);
- :func:`benchmark_step` — the equal-time view read from an interleaved step-cost benchmark's ratios
  rather than from the runs' own step times (which shared cores with other runs);
- :func:`chain_prefix_indices` and :func:`leakage_rows` — the in-domain average without tier 1, and tier 2
  without the problems whose whole chain is the start of a post-training chain (its every step is written
  out in expert solutions);
- :func:`tradeoff_points` and :func:`at_matched_level` — retained against in-domain over learning rates and
  checkpoints, and a method's retained skill read at another method's in-domain level.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .stats import decode_counts

CHAIN_OPERATORS = "+-*"


def late_gain(steps: Sequence[int], values: Sequence[float | None], share: float = 0.2) -> dict[str, Any] | None:
    """Validation gain over the last ``share`` of training: ``values`` at the last step minus at the latest
    step ``<= (1 - share) * last step`` (None without both values)."""
    if not steps:
        return None
    last = steps[-1]
    earlier = [i for i, s in enumerate(steps) if s <= (1 - share) * last]
    if not earlier or values[-1] is None or values[earlier[-1]] is None:
        return None
    i = earlier[-1]
    return {"from_step": steps[i], "to_step": last, "gain": values[-1] - values[i]}


def benchmark_ratio(ratios: Mapping[str, float], method: str, rollout_mode: str = "sequential") -> float | None:
    """A method's step cost relative to the reference, from a benchmark's ratios keyed by method or by
    ``"<method> (<rollout_mode> rollouts)"`` (as ``benchmarks/step_cost.py`` writes them); None if absent."""
    for key in (method, f"{method} ({rollout_mode} rollouts)"):
        if ratios.get(key):
            return float(ratios[key])
    return None


def benchmark_step(ratio: float | None, max_steps: int, checkpoints: Sequence[int]) -> int | None:
    """Equal time from step costs: the reference's ``max_steps`` steps buy ``max_steps / ratio`` steps of a
    method whose step costs ``ratio`` times as much; the run is read at its latest checkpoint within that
    (step 0, the base, if none), never past ``max_steps``. None when the ratio is unknown."""
    if ratio is None:
        return None
    allowed = max_steps / ratio
    return max([0, *(s for s in checkpoints if s <= allowed + 1e-9 and s <= max_steps)])


def chain_prefix_indices(prompts: Sequence[str], train_prompts: Sequence[str]) -> list[int]:
    """Positions of the ``prompts`` whose chain is the start of a post-training chain: a training prompt
    that begins with the prompt and continues with another operation (``12+3`` of ``12+3*2``)."""
    starts = set()
    for q in train_prompts:
        for i, ch in enumerate(q):
            if ch in CHAIN_OPERATORS and i > 0:
                starts.add(q[:i])
    return [i for i, p in enumerate(prompts) if p in starts]


def _accuracy(counts: str, k: int, drop: Sequence[int] = ()) -> float | None:
    values = np.delete(decode_counts(counts), list(drop))
    return float(values.mean() / k) if values.size else None


def leakage_rows(
    outcomes: Mapping[str, Mapping[str, Any]], in_domain: Sequence[str], k: int, tier2_prefixes: Sequence[int]
) -> dict[str, float | None]:
    """One model's leakage-robust in-domain averages from its test outcomes (per group ``correct`` counts of
    ``k`` samples): without tier 1 (``no_t1``), and without tier 1 and tier 2's chain-prefix problems
    (``no_t1_clean_t2``); tier 2 alone without them (``t2_clean``). Each tier weighs the same."""
    rest = [g for g in in_domain[1:] if g in outcomes]
    if not rest or len(rest) != len(in_domain) - 1:
        return {"no_t1": None, "no_t1_clean_t2": None, "t2_clean": None}
    plain = {g: _accuracy(outcomes[g]["correct"], k) for g in rest}
    clean = {**plain, rest[0]: _accuracy(outcomes[rest[0]]["correct"], k, tier2_prefixes)}
    mean = lambda d: None if None in d.values() else statistics.fmean(d.values())  # noqa: E731
    return {"no_t1": mean(plain), "no_t1_clean_t2": mean(clean), "t2_clean": clean[rest[0]]}


def tradeoff_points(
    sweep: Mapping[str, Mapping[str, Any]], curves: Mapping[str, Any], sweep_seed: int
) -> dict[str, list[dict[str, Any]]]:
    """Per method, (in-domain, retained) validation points: every sweep run's final model (one per learning
    rate, at the sweep seed) and every checkpoint of the chosen rate's runs (mean over test seeds)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for method, selection in sweep.items():
        points = [
            {"lr": lr, "step": "final", "seed": sweep_seed, "in_domain": v, "retained": selection["retained"][lr]}
            for lr, v in selection["scores"].items()
        ]
        curve = curves.get(method)
        if curve:
            for step, a, b in zip(curve["steps"], curve["val_in_domain"], curve["val_retained"], strict=True):
                point = {"lr": selection["chosen"], "step": step, "seed": "mean"}
                points.append({**point, "in_domain": a["mean"], "retained": b["mean"]})
        out[method] = [p for p in points if p["in_domain"] is not None and p["retained"] is not None]
    return out


def at_matched_level(points: Sequence[Mapping[str, Any]], level: float) -> float | None:
    """Retained accuracy read off a method's trade-off curve at in-domain ``level``: the upper frontier of
    its points (best retained at or above each in-domain level), linearly interpolated; None when
    ``level`` is outside the points' in-domain range."""
    if not points:
        return None
    xs = sorted({p["in_domain"] for p in points})
    if not xs[0] <= level <= xs[-1]:
        return None
    frontier = [max(p["retained"] for p in points if p["in_domain"] >= x) for x in xs]
    return float(np.interp(level, xs, frontier))
