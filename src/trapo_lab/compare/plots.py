"""The figures of a comparison report: training dynamics, guidance levels, validation curves, pass@k (PNG).

Each ``plot_*`` function reads the summary or the condensed dynamics
(:func:`~trapo_lab.compare.aggregate.condense_dynamics`) and writes one PNG; matplotlib is imported only
when a figure is drawn (it is the lab extra).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trapo.methods import METHODS

DYNAMICS_PANELS = (
    ("reward/unguided", "unguided reward (training)"),
    ("length/completion", "completion length (tokens)"),
    ("entropy", "entropy of model tokens"),
    ("trust/prefix_below_alpha", "prefix tokens with p < alpha"),
)
# Methods that put expert prefixes in some trajectories (a guidance level with a prefix ratio above 0).
GUIDED_METHODS = tuple(name for name, method in METHODS.items() if any(r > 0 for r in method.schedule.ratios))
LEVEL_COLORS = ("#4c72b0", "#55a868", "#dd8452", "#c44e52")


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
    guided = [
        m
        for m in condensed
        if any(k.startswith("guidance/level_") and k != "guidance/level_0" for k in condensed[m]["metrics"])
        and m in GUIDED_METHODS
    ]
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
                ax.text(
                    wall["budget_seconds"],
                    0.98,
                    " equal-wall-clock budget",
                    transform=ax.get_xaxis_transform(),
                    va="top",
                    ha="left",
                    fontsize=8,
                    color="#555555",
                )
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
    labels = ("k (samples per problem)", "pass@k, in-domain tiers (%)", "Test-time scaling: pass@k (mean over seeds)")
    return _finish(fig, ax, labels, path, legend_size=8)


def _finish(fig, ax, labels: tuple[str, str, str], path: str | os.PathLike, legend_size: int = 8) -> Path:
    """Axis labels and title, grid and legend, then save (:func:`_save`)."""
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(labels[2])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_tradeoff(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """Retained against in-domain validation accuracy per method: its sweep runs (one point per learning
    rate, labelled) and the chosen rate's checkpoints (a line from the base model onward)."""
    plt = _pyplot()
    tradeoff = summary["tradeoff"]
    colors = method_colors(list(tradeoff))
    fig, ax = plt.subplots(figsize=(7, 5))
    for method, points in tradeoff.items():
        sweep = [p for p in points if p["step"] == "final"]
        curve = sorted((p for p in points if p["step"] != "final"), key=lambda p: p["step"])
        if curve:
            xs, ys = [100 * p["in_domain"] for p in curve], [100 * p["retained"] for p in curve]
            ax.plot(xs, ys, color=colors[method], lw=1.4, marker=".", label=f"{method} (chosen rate, checkpoints)")
        for p in sweep:
            x, y = 100 * p["in_domain"], 100 * p["retained"]
            ax.scatter([x], [y], color=colors[method], marker="s", s=22)
            ax.annotate(p["lr"], (x, y), fontsize=6, color=colors[method], xytext=(3, 2), textcoords="offset points")
    labels = (
        "in-domain accuracy, validation (%)",
        "retained skills, validation (%)",
        "Trade-off: squares = final model per learning rate (sweep seed)",
    )
    return _finish(fig, ax, labels, path, legend_size=7)
