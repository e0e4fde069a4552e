"""The comparison's arithmetic: pure functions from evaluations and training metrics to the summary's
tables (no files, no models). Accuracies are fractions; ``mean_std`` dicts carry the mean and the sample
standard deviation over seeds."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# The method every other method is paired against, seed by seed (d = its accuracy − the other's).
PAIRED_AGAINST = "trapo"
# The averages the paired comparison is made on.
PAIRED_COLUMNS = ("in_domain", "ood", "retained")
# Per-step training metrics kept for the dynamics plots (as logged by the trainer), besides guidance levels.
DYNAMICS_METRICS = (
    "reward/mean",
    "reward/unguided",
    "length/completion",
    "entropy",
    "trust/prefix_below_alpha",
    "loss/total",
    "grad_norm",
    "perf/step_s",
)


# ---------------------------------------------------------------------------------------------- rules


def mean_std(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1 in the denominator) of the values that are not None/NaN;
    ``std`` is None for fewer than two values, ``mean`` None for none."""
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    return {
        "mean": statistics.fmean(vals) if vals else None,
        "std": statistics.stdev(vals) if len(vals) > 1 else None,
        "n": len(vals),
    }


def paired_differences(reference: dict[int, float], other: dict[int, float]) -> dict[str, Any]:
    """Paired comparison over the seeds both have: ``d_s = reference_s - other_s`` (positive: the reference
    is better), mean ± std of the ``d_s``, and how many seeds the reference wins / loses / ties."""
    seeds = sorted(s for s in set(reference) & set(other) if reference[s] is not None and other[s] is not None)
    diffs = {s: reference[s] - other[s] for s in seeds}
    stats = mean_std(diffs.values())
    return {
        "diffs": {str(s): d for s, d in diffs.items()},
        "mean": stats["mean"],
        "std": stats["std"],
        "n": len(seeds),
        "wins": sum(d > 0 for d in diffs.values()),
        "losses": sum(d < 0 for d in diffs.values()),
        "ties": sum(d == 0 for d in diffs.values()),
    }


def select_lr(val_scores: dict[float, float | None]) -> float:
    """The learning rate with the highest validation score; ties (and None scores, treated as -inf) go to
    the smaller rate."""
    if not val_scores:
        raise ValueError("val_scores is empty: no learning rate to select")
    return max(sorted(val_scores), key=lambda lr: -math.inf if val_scores[lr] is None else val_scores[lr])


def ladder_rate(lr: float, direction: int) -> float:
    """The next learning rate above (``direction`` +1) or below (-1) ``lr`` on the half-decade ladder
    1, 3, 10, 30, ... × 10^e: ``1e-4`` → ``3e-4`` (up) or ``3e-5`` (down); ``3e-4`` → ``1e-3`` (up)."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    exponent = math.floor(math.log10(lr)) - 1
    ladder = [float(f"{m}e{e}") for e in range(exponent - 1, exponent + 3) for m in (1, 3)]
    if direction > 0:
        return min(r for r in ladder if r > lr * (1 + 1e-9))
    return max(r for r in ladder if r < lr * (1 - 1e-9))


def grid_extension(scores: dict[float, float | None]) -> float | None:
    """The rate to add to a learning-rate grid so that the chosen rate (:func:`select_lr`) can become
    interior: one rung above when the top rate is chosen, one below when the bottom is (a grid of one rate
    extends upward); None when the chosen rate is already interior."""
    rates = sorted(scores)
    chosen = select_lr(scores)
    if chosen == rates[-1]:
        return ladder_rate(chosen, 1)
    if chosen == rates[0]:
        return ladder_rate(chosen, -1)
    return None


def cumulative_seconds(step_seconds: dict[int, float], steps: Iterable[int]) -> dict[int, float]:
    """Training time up to and including each of ``steps``: the sum of ``step_seconds[t]`` for t <= step."""
    out, total, wanted = {}, 0.0, sorted(set(steps))
    ordered = sorted(step_seconds.items())
    i = 0
    for step in wanted:
        while i < len(ordered) and ordered[i][0] <= step:
            total += ordered[i][1]
            i += 1
        out[step] = total
    return out


def wallclock_step(cumulative: dict[int, float], budget: float) -> int:
    """The equal-wall-clock rule: the largest step whose cumulative training time is <= ``budget``
    (step 0, the untrained model, costs nothing and is always allowed)."""
    allowed = [step for step, seconds in cumulative.items() if seconds <= budget]
    return max([0, *allowed])


def group_average(groups: dict[str, dict[str, Any]], names: Sequence[str], key: str = "acc") -> float | None:
    """Unweighted mean of ``groups[name][key]`` over ``names`` (each tier or skill weighs the same); None
    unless every name has a value."""
    vals = [groups[n][key] for n in names if n in groups and groups[n].get(key) is not None]
    return statistics.fmean(vals) if vals and len(vals) == len(names) else None


# ---------------------------------------------------------------------------------------------- tables


def table_columns(in_domain: Sequence[str], retained: Sequence[str], ood: Sequence[str] = ()) -> list[str]:
    """The columns of a result table: each tier, their average, each out-of-distribution tier, theirs, each
    retained skill, theirs, and the two output shares (degenerate, expert style)."""
    return [
        *in_domain,
        "in_domain",
        *ood,
        *(["ood"] if ood else []),
        *retained,
        *(["retained"] if retained else []),
        "degenerate",
        "expert_style",
    ]


def table_row(
    groups: dict[str, dict[str, Any]], in_domain: Sequence[str], retained: Sequence[str], ood: Sequence[str] = ()
) -> dict[str, Any]:
    """One model's table row from an evaluation's groups: per-group accuracy, the averages (in-domain, OOD,
    retained), and the in-domain shares of degenerate and expert-style outputs."""
    row: dict[str, Any] = {g: groups[g]["acc"] for g in [*in_domain, *ood, *retained] if g in groups}
    row["in_domain"] = group_average(groups, in_domain)
    if ood:
        row["ood"] = group_average(groups, ood)
    row["retained"] = group_average(groups, retained) if retained else None
    row["degenerate"] = group_average(groups, in_domain, "degenerate")
    row["expert_style"] = group_average(groups, in_domain, "expert_style")
    return row


def summarize_rows(rows_per_seed: dict[Any, dict[str, Any]], columns: Sequence[str]) -> dict[str, Any]:
    """Per column, the :func:`mean_std` over seeds of the rows."""
    return {col: mean_std(row.get(col) for row in rows_per_seed.values()) for col in columns}


def paired_table(
    table: dict[str, Any], methods: Sequence[str], columns: Sequence[str], against: str = PAIRED_AGAINST
) -> dict[str, Any]:
    """Per method other than ``against``: :func:`paired_differences` of ``against`` minus it, seed by seed,
    on the in-domain, OOD and retained averages (``table[method]["per_seed"]`` are the rows by seed)."""
    ref = table[against]["per_seed"]
    return {
        m: {
            col: paired_differences(
                {int(s): r[col] for s, r in ref.items()}, {int(s): r[col] for s, r in table[m]["per_seed"].items()}
            )
            for col in PAIRED_COLUMNS
            if col in columns
        }
        for m in methods
        if m != against
    }


def passk_curve(groups: dict[str, dict[str, Any]], in_domain: Sequence[str], ks: Sequence[int]) -> list[float | None]:
    """pass@k for each k of ``ks``, averaged over the in-domain tiers, from a pass@k evaluation's groups."""
    return [group_average({g: {"v": v["pass@k"].get(str(k))} for g, v in groups.items()}, in_domain, "v") for k in ks]


def passk_summary(ks: Sequence[int], curves_per_seed: dict[int, Sequence[float | None]]) -> dict[str, Any]:
    """Mean and std over seeds of the pass@k curves, k by k, and the curves by seed."""
    stats = [mean_std(curve[i] for curve in curves_per_seed.values()) for i in range(len(ks))]
    return {
        "k": list(ks),
        "mean": [s["mean"] for s in stats],
        "std": [s["std"] for s in stats],
        "per_seed": {str(s): list(c) for s, c in curves_per_seed.items()},
    }


def timing_summary(train_seconds_per_seed: dict[int, float], max_steps: int) -> dict[str, Any]:
    """Training time of a method's runs: per run, per optimizer step, and by seed."""
    return {
        "train_seconds": mean_std(train_seconds_per_seed.values()),
        "step_seconds": mean_std(v / max_steps for v in train_seconds_per_seed.values()),
        "per_seed": {str(s): v for s, v in train_seconds_per_seed.items()},
    }


def validation_curves(
    points: Sequence[int],
    cumulative_per_seed: dict[int, dict[int, float]],
    val_rows_per_seed: dict[int, dict[int, dict[str, Any]]],
) -> dict[str, Any]:
    """Validation accuracy of a method's checkpoints at ``points`` (steps), with their mean cumulative
    training time, mean ± std over seeds."""
    seeds = list(val_rows_per_seed)
    return {
        "steps": list(points),
        "seconds": [mean_std(cumulative_per_seed[s][p] for s in seeds)["mean"] for p in points],
        "val_in_domain": [mean_std(val_rows_per_seed[s][p]["in_domain"] for s in seeds) for p in points],
        "val_retained": [mean_std(val_rows_per_seed[s][p]["retained"] for s in seeds) for p in points],
    }


# ---------------------------------------------------------------------------------------------- training metrics


def step_seconds(metric_rows: Sequence[dict[str, Any]]) -> dict[int, float]:
    """Logged training seconds of each optimizer step (``perf/step_s``; 0 where missing)."""
    return {int(r["step"]): float(r.get("perf/step_s", 0.0)) for r in metric_rows}


def guidance_level_keys(row: dict[str, Any]) -> list[str]:
    """The metric names of the guidance-level shares in a metrics row (``guidance/level_<n>``)."""
    return sorted(k for k in row if k.startswith("guidance/level_"))


def dynamics_series(metric_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The metrics rows cut down to the step, :data:`DYNAMICS_METRICS` and the guidance-level shares."""
    return [{k: r.get(k) for k in ("step", *DYNAMICS_METRICS, *guidance_level_keys(r))} for r in metric_rows]


def prefix_below_alpha_shares(dynamics: dict[str, Any]) -> dict[str, Any]:
    """Share of prefix tokens below alpha (TrSFT's trust region) early (first 10% of steps) and late (last
    10%), mean over seeds; None for methods without prefix tokens (no trajectory at a guidance level > 0)."""
    early, late = [], []
    for rows in dynamics["seeds"].values():
        vals = [(r["step"], r.get("trust/prefix_below_alpha")) for r in rows]
        vals = [(s, v) for s, v in vals if v is not None]
        has_prefix = [
            r for r in rows if sum(r.get(k) or 0 for k in guidance_level_keys(r) if k != "guidance/level_0") > 0
        ]
        if not vals or not has_prefix:
            continue
        n = max(1, len(vals) // 10)
        early.append(statistics.fmean(v for _, v in vals[:n]))
        late.append(statistics.fmean(v for _, v in vals[-n:]))
    return {"prefix_below_alpha_early": mean_std(early), "prefix_below_alpha_late": mean_std(late)}


def condense_dynamics(dynamics: dict[str, Any]) -> dict[str, Any]:
    """Per method: ``steps`` and, per metric, the ``mean`` / ``std`` over seeds at each step (None where a
    step has no value, e.g. the SFT steps of ``sft-then-grpo`` for rollout metrics)."""
    out: dict[str, Any] = {}
    for method, entry in dynamics.items():
        seeds = list(entry["seeds"].values())
        steps = sorted({int(r["step"]) for rows in seeds for r in rows})
        names = sorted({k for rows in seeds for r in rows for k in r if k != "step"})
        index = {s: i for i, s in enumerate(steps)}
        metrics = {}
        for name in names:
            grid = np.full((len(seeds), len(steps)), np.nan)
            for i, rows in enumerate(seeds):
                for r in rows:
                    if r.get(name) is not None:
                        grid[i, index[int(r["step"])]] = float(r[name])
            with warnings.catch_warnings():  # all-NaN columns (steps without the metric) are expected
                warnings.simplefilter("ignore", category=RuntimeWarning)
                mean = np.nanmean(grid, axis=0)
                std = np.nanstd(grid, axis=0, ddof=1) if len(seeds) > 1 else np.full(len(steps), np.nan)
            metrics[name] = {"mean": _finite_or_none(mean), "std": _finite_or_none(std)}
        out[method] = {"lr": entry.get("lr"), "n_seeds": len(seeds), "steps": steps, "metrics": metrics}
    return out


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    """The values to 5 significant digits, None where not finite (JSON has no NaN)."""
    return [None if not np.isfinite(v) else float(f"{v:.5g}") for v in values]
