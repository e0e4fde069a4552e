"""The report of a comparison (:mod:`trapo_lab.compare`): ``results.md``, ``results.json``, ``dynamics.json``
and the figures of :mod:`trapo_lab.compare.plots`.

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
from pathlib import Path
from typing import Any

from .aggregate import PAIRED_COLUMNS, condense_dynamics
from .cache import format_lr
from .claims import claims_table, matched_readings
from .plots import plot_curves, plot_dynamics, plot_guidance, plot_passk, plot_tradeoff
from .report_claims import claims_markdown, matched_markdown, provenance_markdown, readings_markdown
from .report_claims import table as markdown_table

# Output shares shown in the cost-and-mechanism table rather than in the accuracy tables.
MECHANISM_TABLE_COLUMNS = ("degenerate", "expert_style")


# ---------------------------------------------------------------------------------------------- formatting


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage with ``digits`` decimals ("–" for None / NaN)."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.{digits}f}"


def mean_std_cell(stats: dict[str, Any] | None, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` of a :func:`~trapo_lab.compare.aggregate.mean_std` dict, times ``scale`` (std left out
    for one seed; "–" without a mean)."""
    if not stats or stats.get("mean") is None:
        return "–"
    text = f"{scale * stats['mean']:.{digits}f}"
    if stats.get("std") is not None:
        text += f" ± {scale * stats['std']:.{digits}f}"
    return text


def _signed_points(value: float | None, scale: float = 100.0) -> str:
    return "–" if value is None else f"{scale * value:+.1f}"


def _column_title(name: str) -> str:
    return {
        "in_domain": "**in-domain avg**",
        "ood": "**OOD avg**",
        "retained": "**retained avg**",
        "degenerate": "no \\boxed",
    }.get(name, name.replace("arith-", ""))


# ---------------------------------------------------------------------------------------------- markdown


def results_markdown(  # noqa: C901 (one branch per optional report section)
    summary: dict[str, Any],
    *,
    title: str = "Comparison",
    command: str | None = None,
    wall_seconds: float | None = None,
    note: str | None = None,
) -> str:
    """The Markdown report of a comparison summary (:attr:`~trapo_lab.compare.CompareResult.summary`)."""
    spec = summary["spec"]
    columns = [c for c in summary["columns"] if c not in MECHANISM_TABLE_COLUMNS]  # shown in the mechanism table
    methods = list(spec["methods"])
    out = [f"# {title}", ""]
    if note:
        out += [note, ""]
    out += claims_markdown(
        summary["claims"] if "claims" in summary else claims_table(summary), summary.get("beside", ())
    )
    if command:
        out += ["Reproduce with:", "", "```", command, "```", ""]
    seeds = ", ".join(str(s) for s in spec["seeds"])
    sizes = summary["eval_sizes"]
    run_s = sum(t["train_seconds"]["mean"] * t["train_seconds"]["n"] for t in summary["timing"].values())
    facts = [
        f"- methods: {', '.join(methods)}; seeds {seeds}; {spec['max_steps']} optimizer steps each, "
        f"{spec['prompts_per_step']} prompts per step, responses up to {spec['max_completion_length']} tokens",
        f"- test: {spec['n_test_per_tier']} problems per tier, {spec['n_test_skill']} per retained skill, "
        f"{spec.get('n_test_ood', 0) if summary.get('ood') else 0} per out-of-distribution tier "
        f"({sizes['test']} in all), avg@{spec['test_k']} at temperature {spec['temperature']}; validation "
        f"(learning-rate choice, curves): {spec['n_val_per_tier']} per tier, {spec['n_val_skill']} per skill; pass@k: "
        f"{spec['n_passk_per_tier']} test problems per tier × {spec['passk_max']} samples",
        f"- training time of the final runs: {run_s / 60:.1f} min in all (sum of logged step times)",
    ]
    if wall_seconds is not None:
        facts.append(
            f"- wall time of the command that wrote this report: {wall_seconds / 60:.1f} min "
            "(runs already in the cache are not retrained)"
        )
    base = summary.get("base_info") or {}
    if base:
        stats = base.get("expert_token_probability") or {}
        line = f"- base model: {base.get('parameters', 0):,} parameters"
        if stats:
            line += (
                f"; {100 * stats.get('share_below_0.1', 0):.0f}% of expert-solution tokens have base "
                "probability < 0.1 (off-policy share)"
            )
        facts.append(line)
    out += [*facts, ""]
    out += matched_markdown(summary["claims_matched"] if "claims_matched" in summary else matched_readings(summary))

    # equal optimizer steps
    out += [
        "## Equal optimizer steps (the paper's protocol)",
        "",
        f"Accuracy (%) on the test split, mean ± std over {len(spec['seeds'])} seed(s); the learning rate is "
        "the one chosen on the validation split.",
        "",
    ]
    head = ["method", "lr", *(_column_title(c) for c in columns), "train time / run"]
    rows = []
    for name in ["base", *methods]:
        entry = summary["equal_steps"][name]
        timing = summary["timing"].get(name)
        rows.append(
            [
                f"**{name}**" if name == "trapo" else name,
                "–" if entry["lr"] is None else _lr(entry["lr"]),
                *(mean_std_cell(entry["summary"][c]) for c in columns),
                "–" if timing is None else f"{mean_std_cell(timing['train_seconds'], 1.0, 0)} s",
            ]
        )
    out += markdown_table(head, rows)

    # equal wall-clock
    wall = summary.get("equal_wallclock")
    if wall:
        out += [
            "## Equal wall-clock",
            "",
            f"Budget: {wall['budget_seconds']:.0f} s of training. Rule: {wall['rule']}.",
            "",
        ]
        head = ["method", "step used (per seed)", *(_column_title(c) for c in columns)]
        rows = []
        for name in ["base", *methods]:
            entry = wall["methods"][name]
            steps = ", ".join(str(v["step"]) for v in entry.get("checkpoints", {}).values()) or "0"
            rows.append([name, steps, *(mean_std_cell(entry["summary"][c]) for c in columns)])
        out += markdown_table(head, rows)

    # paired
    paired = summary.get("paired_vs_trapo") or {}
    if paired:
        out += [
            "## Paired comparison against TRAPO",
            "",
            "Per seed, d = TRAPO − method in accuracy points (positive: TRAPO better), then the mean ± std of "
            "d and the seeds TRAPO wins / loses / ties.",
            "",
        ]
        paired_columns = [c for c in PAIRED_COLUMNS if c in summary["columns"]]
        head = ["view", "method"]
        for col in paired_columns:
            label = {"in_domain": "in-domain", "ood": "OOD"}.get(col, col)
            head += [f"{label} d per seed", f"{label} mean ± std", "wins/losses/ties"]
        rows = []
        for view, table in paired.items():
            for name, cols in table.items():
                row = [view.replace("_", " "), name]
                for col in paired_columns:
                    p = cols.get(col)
                    if p is None or not p["n"]:
                        row += ["–", "–", "–"]
                        continue
                    row += [
                        ", ".join(_signed_points(v) for v in p["diffs"].values()),
                        mean_std_cell({"mean": p["mean"], "std": p["std"]}),
                        f"{p['wins']}/{p['losses']}/{p['ties']}",
                    ]
                rows.append(row)
        out += markdown_table(head, rows)

    out += readings_markdown(summary)
    out += provenance_markdown(summary.get("provenance"))

    # learning rates
    out += [
        "## Learning-rate selection",
        "",
        "In-domain validation accuracy (%) of the final model at the first seed for each learning rate of the "
        "grid; the highest is chosen (ties: the smaller rate). The test split plays no part.",
        "",
    ]
    grid = sorted({lr for v in summary["lr_selection"].values() for lr in v["scores"]}, key=float)
    rows = [
        [
            name,
            *(pct(summary["lr_selection"][name]["scores"].get(lr)) for lr in grid),
            summary["lr_selection"][name]["chosen"],
        ]
        for name in methods
    ]
    out += markdown_table(["method", *grid, "chosen"], rows)

    # timing + mechanism
    out += [
        "## Cost and mechanism",
        "",
        "Training seconds per optimizer step (mean ± std over seeds, on this machine); share of expert-prefix "
        "tokens whose probability under the policy is below TrSFT's alpha, averaged over the first and the "
        "last 10% of steps (where the trust region attenuates the SFT gradient); share of in-domain test "
        "outputs without a final \\boxed answer (degenerate) and written in the expert's style "
        f"({summary.get('style_share', 'not measured')}).",
        "",
    ]
    rows = []
    for name in ["base", *methods]:
        mech = summary["mechanism"].get(name, {})
        timing = summary["timing"].get(name)
        test = summary["equal_steps"][name]["summary"]
        rows.append(
            [
                name,
                "–" if timing is None else mean_std_cell(timing["step_seconds"], 1.0, 2),
                mean_std_cell(mech.get("prefix_below_alpha_early")),
                mean_std_cell(mech.get("prefix_below_alpha_late")),
                mean_std_cell(test.get("degenerate")),
                mean_std_cell(test.get("expert_style")),
            ]
        )
    out += markdown_table(
        [
            "method",
            "s / step",
            "prefix < alpha, early (%)",
            "prefix < alpha, late (%)",
            "no \\boxed at test (%)",
            "expert style at test (%)",
        ],
        rows,
    )

    out += [
        "## Figures",
        "",
        "![training dynamics](dynamics.png)",
        "",
        "Training dynamics (the paper's Figure 4): smoothed, mean over seeds, band ±1 std. SFT steps have no "
        "rollouts, so `sft` has no reward/length/entropy curve and `sft-then-grpo` starts halfway.",
        "",
        "![guidance levels](guidance.png)",
        "",
        "Share of trajectories at each guidance level (0: none, 1: ~25% prefix, 2: ~50%, 3: whole expert "
        "solution) over steps.",
        "",
        "![validation curves](curves.png)",
        "",
        "Validation accuracy of the checkpoints against optimizer steps and against cumulative training time "
        "(where methods plateau; the equal-wall-clock view in a picture).",
        "",
        "![pass@k](passk.png)",
        "",
        "pass@k (unbiased estimator) on the pass@k test subset, in-domain tiers averaged.",
        "",
        *(
            [
                "![trade-off](tradeoff.png)",
                "",
                "Retained against in-domain accuracy (validation) for every method over its learning rates "
                "(sweep runs, final models) and the chosen rate's checkpoints (mean over test seeds).",
                "",
            ]
            if summary.get("tradeoff")
            else []
        ),
    ]
    return "\n".join(out)


def _lr(lr: float | str) -> str:
    return lr if isinstance(lr, str) else format_lr(lr)


# ---------------------------------------------------------------------------------------------- writer


def write_report(
    summary: dict[str, Any],
    dynamics: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    title: str | None = None,
    command: str | None = None,
    wall_seconds: float | None = None,
    note: str | None = None,
) -> dict[str, Path]:
    """Write ``results.md``, ``results.json``, ``dynamics.json`` and the four PNGs into ``out_dir``;
    return their paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    condensed = condense_dynamics(dynamics)
    summary = {**summary, "claims": claims_table(summary), "claims_matched": matched_readings(summary)}
    meta = {"command": command, "wall_seconds": None if wall_seconds is None else round(wall_seconds, 1)}
    paths = {
        "results.md": out / "results.md",
        "results.json": out / "results.json",
        "dynamics.json": out / "dynamics.json",
    }
    paths["results.md"].write_text(
        results_markdown(
            summary, title=title or f"Comparison: {out.name}", command=command, wall_seconds=wall_seconds, note=note
        )
        + "\n"
    )
    paths["results.json"].write_text(json.dumps({**meta, **summary}, indent=1, default=str) + "\n")
    paths["dynamics.json"].write_text(json.dumps(condensed, separators=(",", ":")) + "\n")
    paths["dynamics.png"] = plot_dynamics(condensed, out / "dynamics.png")
    paths["guidance.png"] = plot_guidance(condensed, out / "guidance.png")
    paths["curves.png"] = plot_curves(summary, out / "curves.png")
    paths["passk.png"] = plot_passk(summary, out / "passk.png")
    if summary.get("tradeoff"):
        paths["tradeoff.png"] = plot_tradeoff(summary, out / "tradeoff.png")
    return paths
