"""The parts of a comparison's summary that the verdicts and second readings need, gathered from a
:class:`~trapo_lab.compare.Comparison`'s cached evaluations: per-problem outcomes, leakage-robust averages,
trade-off points, late validation gains and the equal-time view from the step-cost benchmark (the
arithmetic itself is in :mod:`~trapo_lab.compare.readings`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import aggregate, readings
from .cache import RunKey, format_lr

if TYPE_CHECKING:
    from .runner import Comparison

BENCHMARK_RULE = (
    "equal time = the reference's max_steps steps; a method whose benchmarked step costs r times the "
    "reference's gets max_steps / r steps, read at its latest checkpoint within them (never past max_steps); "
    "ratios from the interleaved benchmark, measured from the base model"
)


def readings_summary(comparison: Comparison, selection: dict[str, dict[str, Any]], curves: dict[str, Any]) -> dict:
    """Per-problem outcomes of every final model (test, pass@k) and sweep run (validation), the
    leakage-robust averages, the trade-off points, the late validation gains and the benchmark view."""
    spec, data = comparison.spec, comparison.data
    runs = {m: {str(s): RunKey(m, selection[m]["chosen"], s) for s in spec.seeds} for m in spec.methods}
    outcomes: dict[str, Any] = {"test": {}, "passk": {}}
    for split in ("test", "passk"):
        outcomes[split]["base"] = {"-": comparison._outcomes(None, split, 0)}
        for method, keys in runs.items():
            outcomes[split][method] = {s: comparison._outcomes(k, split, spec.max_steps) for s, k in keys.items()}
    outcomes["val_sweep"] = {
        m: {
            lr: comparison._outcomes(RunKey(m, float(lr), spec.selection_seed), "val", spec.max_steps)
            for lr in selection[m]["scores"]
        }
        for m in spec.methods
    }
    tier2 = data.in_domain[1] if len(data.in_domain) > 1 else None
    t2 = [ex.prompt_text for ex in data.test if ex.data_source == tier2]
    prefixes = readings.chain_prefix_indices(t2, [ex.prompt_text for ex in data.train])
    leakage = {
        m: {s: readings.leakage_rows(o, data.in_domain, spec.test_k, prefixes) for s, o in per_seed.items()}
        for m, per_seed in outcomes["test"].items()
    }
    chosen = {m: {**v, "chosen": format_lr(v["chosen"])} for m, v in selection.items()}
    return {
        "outcomes": outcomes,
        "outcome_counts": {"test": spec.test_k, "passk": spec.passk_max, "val_sweep": 1},
        "leakage": {"tier2_chain_prefixes": prefixes, "tier2_problems": len(t2), "per_seed": leakage},
        "tradeoff": readings.tradeoff_points(chosen, curves, spec.selection_seed),
        "late_gain": {
            m: readings.late_gain(c["steps"], [v["mean"] for v in c["val_in_domain"]]) for m, c in curves.items()
        },
        "equal_time_benchmark": benchmark_view(comparison, runs),
    }


def benchmark_checkpoint(comparison: Comparison, method: str) -> int | None:
    """The checkpoint of ``method``'s runs at equal time by the step-cost benchmark (None: no ratio)."""
    spec = comparison.spec
    mode = spec.config_overrides.get("rollout_mode", "sequential")
    ratio = readings.benchmark_ratio(comparison.step_cost.get("step_time_ratio_to_grpo", {}), method, mode)
    return readings.benchmark_step(ratio, spec.max_steps, spec.checkpoint_steps)


def benchmark_view(comparison: Comparison, runs: dict[str, dict[str, RunKey]]) -> dict[str, Any] | None:
    """Test rows of every run at its equal-time checkpoint by the step-cost benchmark's ratios (None
    without a benchmark)."""
    if not comparison.step_cost:
        return None
    mode = comparison.spec.config_overrides.get("rollout_mode", "sequential")
    ratios = comparison.step_cost.get("step_time_ratio_to_grpo", {})
    methods = {}
    for method, keys in runs.items():
        step = benchmark_checkpoint(comparison, method)
        if step is None:
            methods[method] = {"ratio": None, "step": None}
            continue
        rows = {s: comparison._row(k if step else None, "test", step) for s, k in keys.items()}
        methods[method] = {
            "ratio": readings.benchmark_ratio(ratios, method, mode),
            "step": step,
            "per_seed": rows,
            "summary": aggregate.summarize_rows(rows, ["in_domain", "retained"]),
        }
    return {
        "source": comparison.step_cost_source,
        "machine": comparison.step_cost.get("machine"),
        "methods": methods,
        "rule": BENCHMARK_RULE,
    }


def wallclock_view(
    comparison: Comparison,
    selection: dict[str, dict[str, Any]],
    cumulative: dict[str, dict[int, dict[int, float]]],
    timing: dict[str, Any],
    base_row: dict[str, Any],
    columns: list[str],
) -> dict[str, Any] | None:
    """The equal-wall-clock table: each run at its latest checkpoint within the reference method's longest
    full-run training time (None when the reference method is not compared)."""
    spec = comparison.spec
    ref = spec.wallclock_reference
    if ref not in spec.methods:
        return None
    budget = max(timing[ref]["per_seed"].values())
    methods: dict[str, Any] = {
        "base": {"per_seed": {"-": base_row}, "summary": aggregate.summarize_rows({0: base_row}, columns)}
    }
    for method in spec.methods:
        lr = selection[method]["chosen"]
        rows, picked = {}, {}
        for seed in spec.seeds:
            step = aggregate.wallclock_step(cumulative[method][seed], budget)
            picked[str(seed)] = {"step": step, "seconds": cumulative[method][seed][step]}
            rows[seed] = comparison._row(None if step == 0 else RunKey(method, lr, seed), "test", step)
        methods[method] = {
            "lr": lr,
            "per_seed": {str(s): r for s, r in rows.items()},
            "summary": aggregate.summarize_rows(rows, columns),
            "checkpoints": picked,
        }
    return {
        "reference": ref,
        "budget_seconds": budget,
        "methods": methods,
        "rule": (
            f"budget = the longest full-run training time of {ref} over its seeds (sum of perf/step_s); "
            "each run is taken at its latest checkpoint (every "
            f"{spec.save_steps} steps) whose cumulative training time is <= the budget, or the base "
            "model if none is; runs are never extended past max_steps"
        ),
    }
