"""Tables and plots of a comparison (:mod:`trapo_lab.compare`): ``results.md``, ``results.json``, PNG figures.

:func:`write_report` writes, into one directory:

- ``results.md`` — the tables: equal optimizer steps (the paper's protocol), equal wall-clock, the paired
  comparison per seed against TRAPO, the learning-rate selection, training time and mechanism measures;
- ``results.json`` — the same numbers (and the spec that produced them), machine-readable;
- ``dynamics.json`` — per method and step, the training metrics' mean and std over seeds;
- ``dynamics.png`` — unguided reward, completion length, entropy and the share of prefix tokens below
  alpha over steps (the paper's Figure 4), smoothed, mean over seeds with a ±1 std band;
- ``guidance.png`` — share of trajectories at each guidance level over steps (stacked), per guided method;
- ``curves.png`` — validation accuracy (in-domain and retained) against steps and against training time;
- ``passk.png`` — pass@k for k = 1..K on the test subset, per method.

Numbers are percentages with one decimal; ``a ± b`` is the mean and sample std (n - 1) over seeds.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DYNAMICS_PANELS = (
    ("reward/unguided", "unguided reward (training)"),
    ("length/completion", "completion length (tokens)"),
    ("entropy", "entropy of model tokens"),
    ("trust/prefix_below_alpha", "prefix tokens with p < alpha"),
)
MECHANISM_COLUMNS = ("degenerate", "expert_style")
GUIDED_METHODS = ("trapo", "trapo-sft", "trapo-fixed", "luffy")
LEVEL_COLORS = ("#4c72b0", "#55a868", "#dd8452", "#c44e52")


# ---------------------------------------------------------------------------------------------- formatting


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.{digits}f}"


def cell(stats: dict[str, Any] | None, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` of a :func:`trapo_lab.compare.mean_std` dict (std left out for one seed)."""
    if not stats or stats.get("mean") is None:
        return "–"
    text = f"{scale * stats['mean']:.{digits}f}"
    if stats.get("std") is not None:
        text += f" ± {scale * stats['std']:.{digits}f}"
    return text


def _signed(value: float | None, scale: float = 100.0) -> str:
    return "–" if value is None else f"{scale * value:+.1f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return [*lines, *("| " + " | ".join(str(c) for c in row) + " |" for row in rows), ""]


def _column_title(name: str) -> str:
    return {"in_domain": "**in-domain avg**", "retained": "**retained avg**", "degenerate": "no \\boxed"}.get(
        name, name.replace("arith-", ""))


def _methods(summary: dict[str, Any]) -> list[str]:
    return list(summary["spec"]["methods"])


# ---------------------------------------------------------------------------------------------- markdown


def results_markdown(summary: dict[str, Any], *, title: str = "Comparison", command: str | None = None,
                     wall_seconds: float | None = None, note: str | None = None) -> str:
    """The Markdown report of a comparison summary (:attr:`trapo_lab.compare.CompareResult.summary`)."""
    spec = summary["spec"]
    columns = [c for c in summary["columns"] if c not in MECHANISM_COLUMNS]  # shown in the mechanism table
    methods = _methods(summary)
    out = [f"# {title}", ""]
    if note:
        out += [note, ""]
    if command:
        out += ["Reproduce with:", "", "```", command, "```", ""]
    seeds = ", ".join(str(s) for s in spec["seeds"])
    sizes = summary["eval_sizes"]
    run_s = sum(t["train_seconds"]["mean"] * t["train_seconds"]["n"] for t in summary["timing"].values())
    facts = [
        f"- methods: {', '.join(methods)}; seeds {seeds}; {spec['max_steps']} optimizer steps each, "
        f"{spec['prompts_per_step']} prompts per step, responses up to {spec['max_completion_length']} tokens",
        f"- test: {spec['n_test_per_tier']} problems per tier, {spec['n_test_skill']} per retained skill "
        f"({sizes['test']} in all), avg@{spec['test_k']} at temperature {spec['temperature']}; validation "
        f"(learning-rate choice, curves): {spec['n_val_per_tier']} per tier, {spec['n_val_skill']} per skill; pass@k: "
        f"{spec['n_passk_per_tier']} test problems per tier × {spec['passk_max']} samples",
        f"- training time of the final runs: {run_s / 60:.1f} min in all (sum of logged step times)",
    ]
    if wall_seconds is not None:
        facts.append(f"- wall time of the command that wrote this report: {wall_seconds / 60:.1f} min "
                     "(runs already in the cache are not retrained)")
    base = summary.get("base_info") or {}
    if base:
        stats = base.get("expert_token_probability") or {}
        line = f"- base model: {base.get('parameters', 0):,} parameters"
        if stats:
            line += (f"; {100 * stats.get('share_below_0.1', 0):.0f}% of expert-solution tokens have base "
                     "probability < 0.1 (off-policy share)")
        facts.append(line)
    out += [*facts, ""]

    # equal optimizer steps
    out += ["## Equal optimizer steps (the paper's protocol)", "",
            f"Accuracy (%) on the test split, mean ± std over {len(spec['seeds'])} seed(s); the learning rate is "
            "the one chosen on the validation split.", ""]
    head = ["method", "lr", *(_column_title(c) for c in columns), "train time / run"]
    rows = []
    for name in ["base", *methods]:
        entry = summary["equal_steps"][name]
        timing = summary["timing"].get(name)
        rows.append([f"**{name}**" if name == "trapo" else name,
                     "–" if entry["lr"] is None else _lr(entry["lr"]),
                     *(cell(entry["summary"][c]) for c in columns),
                     "–" if timing is None else f"{cell(timing['train_seconds'], 1.0, 0)} s"])
    out += _table(head, rows)

    # equal wall-clock
    wall = summary.get("equal_wallclock")
    if wall:
        out += ["## Equal wall-clock", "",
                f"Budget: {wall['budget_seconds']:.0f} s of training. Rule: {wall['rule']}.", ""]
        head = ["method", "step used (per seed)", *(_column_title(c) for c in columns)]
        rows = []
        for name in ["base", *methods]:
            entry = wall["methods"][name]
            steps = ", ".join(str(v["step"]) for v in entry.get("checkpoints", {}).values()) or "0"
            rows.append([name, steps, *(cell(entry["summary"][c]) for c in columns)])
        out += _table(head, rows)

    # paired
    paired = summary.get("paired_vs_trapo") or {}
    if paired:
        out += ["## Paired comparison against TRAPO", "",
                "Per seed, d = TRAPO − method in accuracy points (positive: TRAPO better), then the mean ± std of "
                "d and the seeds TRAPO wins / loses / ties.", ""]
        head = ["view", "method", "in-domain d per seed", "in-domain mean ± std", "wins/losses/ties",
                "retained d per seed", "retained mean ± std", "wins/losses/ties"]
        rows = []
        for view, table in paired.items():
            for name, cols in table.items():
                row = [view.replace("_", " "), name]
                for col in ("in_domain", "retained"):
                    p = cols.get(col)
                    if p is None or not p["n"]:
                        row += ["–", "–", "–"]
                        continue
                    row += [", ".join(_signed(v) for v in p["diffs"].values()),
                            cell({"mean": p["mean"], "std": p["std"]}),
                            f"{p['wins']}/{p['losses']}/{p['ties']}"]
                rows.append(row)
        out += _table(head, rows)

    # learning rates
    out += ["## Learning-rate selection", "",
            "In-domain validation accuracy (%) of the final model at the first seed for each learning rate of the "
            "grid; the highest is chosen (ties: the smaller rate). The test split plays no part.", ""]
    grid = sorted({lr for v in summary["lr_selection"].values() for lr in v["scores"]}, key=float)
    rows = [[name, *(pct(summary["lr_selection"][name]["scores"].get(lr)) for lr in grid),
             summary["lr_selection"][name]["chosen"]] for name in methods]
    out += _table(["method", *grid, "chosen"], rows)

    # timing + mechanism
    out += ["## Cost and mechanism", "",
            "Training seconds per optimizer step (mean ± std over seeds, on this machine); share of expert-prefix "
            "tokens whose probability under the policy is below TrSFT's alpha, averaged over the first and the "
            "last 10% of steps (where the trust region attenuates the SFT gradient); share of in-domain test "
            "outputs without a final \\boxed answer (degenerate) and written in the expert's style "
            f"({summary.get('style_share', 'not measured')}).", ""]
    rows = []
    for name in ["base", *methods]:
        mech = summary["mechanism"].get(name, {})
        timing = summary["timing"].get(name)
        test = summary["equal_steps"][name]["summary"]
        rows.append([name, "–" if timing is None else cell(timing["step_seconds"], 1.0, 2),
                     cell(mech.get("prefix_below_alpha_early")), cell(mech.get("prefix_below_alpha_late")),
                     cell(test.get("degenerate")), cell(test.get("expert_style"))])
    out += _table(["method", "s / step", "prefix < alpha, early (%)", "prefix < alpha, late (%)",
                   "no \\boxed at test (%)", "expert style at test (%)"], rows)

    out += ["## Figures", "",
            "![training dynamics](dynamics.png)", "",
            "Training dynamics (the paper's Figure 4): smoothed, mean over seeds, band ±1 std. SFT steps have no "
            "rollouts, so `sft` has no reward/length/entropy curve and `sft-then-grpo` starts halfway.", "",
            "![guidance levels](guidance.png)", "",
            "Share of trajectories at each guidance level (0: none, 1: ~25% prefix, 2: ~50%, 3: whole expert "
            "solution) over steps.", "",
            "![validation curves](curves.png)", "",
            "Validation accuracy of the checkpoints against optimizer steps and against cumulative training time "
            "(where methods plateau; the equal-wall-clock view in a picture).", "",
            "![pass@k](passk.png)", "",
            "pass@k (unbiased estimator) on the pass@k test subset, in-domain tiers averaged.", ""]
    return "\n".join(out)


def _lr(lr: float | str) -> str:
    if isinstance(lr, str):
        return lr
    mantissa, exponent = f"{lr:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


# ---------------------------------------------------------------------------------------------- dynamics


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
            metrics[name] = {"mean": _list(mean), "std": _list(std)}
        out[method] = {"lr": entry.get("lr"), "n_seeds": len(seeds), "steps": steps, "metrics": metrics}
    return out


def _list(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(f"{v:.5g}") for v in values]


def smooth(values: Sequence[float | None], window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points, ignoring missing values (NaN where none)."""
    y = np.array([np.nan if v is None else v for v in values], dtype=float)
    if window <= 1 or y.size == 0:
        return y
    valid = np.isfinite(y)
    sums = np.convolve(np.where(valid, y, 0.0), np.ones(window))[: y.size]
    counts = np.convolve(valid.astype(float), np.ones(window))[: y.size]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sums / counts
    out[~valid] = np.nan  # keep gaps (steps without the metric) visible
    return out


# ---------------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    palette = ("#c44e52", "#4c72b0", "#55a868", "#8172b3", "#dd8452", "#937860", "#da8bc3", "#8c8c8c")
    colors = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    colors["base"] = "#222222"
    return colors


def plot_dynamics(condensed: dict[str, Any], path: str | os.PathLike, *, window: int | None = None) -> Path:
    """Figure 4 of the paper for every method: one panel per metric of :data:`DYNAMICS_PANELS`."""
    plt = _pyplot()
    methods = list(condensed)
    colors = method_colors(methods)
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    for ax, (metric, label) in zip(axes.flat, DYNAMICS_PANELS, strict=True):
        for method in methods:
            entry = condensed[method]
            data = entry["metrics"].get(metric)
            if data is None or all(v is None for v in data["mean"]):
                continue
            if metric == "trust/prefix_below_alpha" and method not in GUIDED_METHODS:
                continue
            steps = np.array(entry["steps"])
            w = window or max(1, len(steps) // 25)
            mean = smooth(data["mean"], w)
            ax.plot(steps, mean, color=colors[method], label=method, lw=1.6)
            std = smooth(data["std"], w)
            if np.isfinite(std).any():
                ax.fill_between(steps, mean - std, mean + std, color=colors[method], alpha=0.15, lw=0)
        ax.set_title(label)
        ax.set_xlabel("optimizer step")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if labels:  # a comparison of rollout-free methods (sft only) has no curve here
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), frameon=False)
    fig.suptitle("Training dynamics (smoothed; mean over seeds, band ±1 std)")
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return _save(fig, path)


def plot_guidance(condensed: dict[str, Any], path: str | os.PathLike, *, window: int | None = None) -> Path:
    """Stacked shares of guidance levels over steps, one panel per guided method."""
    plt = _pyplot()
    guided = [m for m in condensed if any(k.startswith("guidance/level_") and k != "guidance/level_0"
                                          for k in condensed[m]["metrics"]) and m in GUIDED_METHODS]
    guided = guided or [m for m in condensed if m in GUIDED_METHODS]
    fig, axes = plt.subplots(1, max(1, len(guided)), figsize=(4.2 * max(1, len(guided)), 3.8), squeeze=False)
    for ax, method in zip(axes.flat, guided, strict=False):
        entry = condensed[method]
        steps = np.array(entry["steps"])
        w = window or max(1, len(steps) // 25)
        levels = sorted(k for k in entry["metrics"] if k.startswith("guidance/level_"))
        shares = [np.nan_to_num(smooth(entry["metrics"][k]["mean"], w)) for k in levels]
        labels = [f"level {k.rsplit('_', 1)[1]}" for k in levels]
        ax.stackplot(steps, *shares, labels=labels, colors=LEVEL_COLORS[: len(levels)], alpha=0.85)
        ax.set_ylim(0, 1)
        ax.set_xlim(steps.min() if steps.size else 0, steps.max() if steps.size else 1)
        ax.set_title(f"{method}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("share of trajectories")
        ax.legend(loc="lower left", fontsize=8, framealpha=0.8)
    if not guided:
        axes.flat[0].text(0.5, 0.5, "no guided method in this comparison", ha="center", va="center")
        axes.flat[0].set_axis_off()
    fig.suptitle("Guidance levels over training (smoothed, mean over seeds)")
    fig.tight_layout()
    return _save(fig, path)


def plot_curves(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """Validation accuracy of the checkpoints vs steps and vs training time (in-domain and retained)."""
    plt = _pyplot()
    curves = summary["curves"]
    colors = method_colors(list(curves))
    has_retained = bool(summary.get("retained"))
    rows = 2 if has_retained else 1
    fig, axes = plt.subplots(rows, 2, figsize=(12, 4.2 * rows), squeeze=False)
    for r, (key, label) in enumerate((("val_in_domain", "in-domain"), ("val_retained", "retained skills"))[:rows]):
        for c, xkey in enumerate(("steps", "seconds")):
            ax = axes[r, c]
            for method, entry in curves.items():
                x = np.array(entry[xkey], dtype=float)
                mean = np.array([np.nan if p["mean"] is None else 100 * p["mean"] for p in entry[key]])
                std = np.array([np.nan if p["std"] is None else 100 * p["std"] for p in entry[key]])
                ax.plot(x, mean, marker="o", ms=3.5, color=colors[method], label=method, lw=1.6)
                if np.isfinite(std).any():
                    ax.fill_between(x, mean - std, mean + std, color=colors[method], alpha=0.12, lw=0)
            wall = summary.get("equal_wallclock")
            if xkey == "seconds" and wall:
                ax.axvline(wall["budget_seconds"], color="#555555", ls="--", lw=1)
                ax.text(wall["budget_seconds"], 0.98, " equal-wall-clock budget", transform=ax.get_xaxis_transform(),
                        va="top", ha="left", fontsize=8, color="#555555")
            ax.set_xlabel("optimizer step" if xkey == "steps" else "training time (s)")
            ax.set_ylabel(f"validation accuracy, {label} (%)")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, ncol=2)
    fig.suptitle("Validation accuracy during training (mean over seeds, band ±1 std)")
    fig.tight_layout()
    return _save(fig, path)


def plot_passk(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """pass@k against k (log2 axis) per method, the base model dashed."""
    plt = _pyplot()
    passk = summary["passk"]
    colors = method_colors([m for m in passk if m != "base"])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for method, entry in passk.items():
        k = np.array(entry["k"])
        mean = np.array([np.nan if v is None else 100 * v for v in entry["mean"]])
        style = {"ls": "--", "lw": 1.4} if method == "base" else {"lw": 1.8}
        ax.plot(k, mean, marker="o", ms=3, color=colors[method], label=method, **style)
        if entry.get("std"):
            std = np.array([np.nan if v is None else 100 * v for v in entry["std"]])
            if np.isfinite(std).any():
                ax.fill_between(k, mean - std, mean + std, color=colors[method], alpha=0.12, lw=0)
    ax.set_xscale("log", base=2)
    ticks = [t for t in (1, 2, 4, 8, 16, 32, 64) if t <= max(len(e["k"]) for e in passk.values())]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("pass@k, in-domain tiers (%)")
    ax.set_title("Test-time scaling: pass@k (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- writer


def write_report(summary: dict[str, Any], dynamics: dict[str, Any], out_dir: str | os.PathLike, *,
                 title: str | None = None, command: str | None = None, wall_seconds: float | None = None,
                 note: str | None = None) -> dict[str, Path]:
    """Write ``results.md``, ``results.json``, ``dynamics.json`` and the four PNGs into ``out_dir``;
    return their paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    condensed = condense_dynamics(dynamics)
    meta = {"command": command, "wall_seconds": None if wall_seconds is None else round(wall_seconds, 1)}
    paths = {
        "results.md": out / "results.md",
        "results.json": out / "results.json",
        "dynamics.json": out / "dynamics.json",
    }
    paths["results.md"].write_text(results_markdown(summary, title=title or f"Comparison: {out.name}",
                                                    command=command, wall_seconds=wall_seconds, note=note) + "\n")
    paths["results.json"].write_text(json.dumps({**meta, **summary}, indent=1, default=str) + "\n")
    paths["dynamics.json"].write_text(json.dumps(condensed, separators=(",", ":")) + "\n")
    paths["dynamics.png"] = plot_dynamics(condensed, out / "dynamics.png")
    paths["guidance.png"] = plot_guidance(condensed, out / "guidance.png")
    paths["curves.png"] = plot_curves(summary, out / "curves.png")
    paths["passk.png"] = plot_passk(summary, out / "passk.png")
    return paths
