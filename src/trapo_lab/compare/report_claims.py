"""The Markdown sections of a comparison report that carry its verdicts: the claims table with intervals (and
other comparisons' verdicts beside them), the claims at matched settings, the second readings (late gains,
leakage-robust averages, equal time from the step-cost benchmark, every sweep run's in-domain and retained
accuracy), and which code made the runs and evaluations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .provenance import code_label
from .stats import NEAR


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table (and a blank line)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return [*lines, *("| " + " | ".join(str(c) for c in row) + " |" for row in rows), ""]


def points(value: float | None, signed: bool = False) -> str:
    """A fraction in points, one decimal (``–`` for None)."""
    if value is None:
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def interval(ci: Sequence[float] | None) -> str:
    return "–" if ci is None else f"[{points(ci[0], True)}, {points(ci[1], True)}]"


def part_text(p: dict[str, Any]) -> str:
    """``measure vs other: d [low, high] (per-seed d ...) verdict``."""
    lower = " (lower is better: d = other − TRAPO)" if p["lower_is_better"] else ""
    seeds = ", ".join(points(v, True) for v in p["per_seed"].values())
    bound = p["rule"].split("±" if p["rule"].startswith(NEAR) else "+")[-1]
    rule = f"−{bound} < d < +{bound}" if p["rule"].startswith(NEAR) else f"d > {bound}"
    return (
        f"{p['what']} vs {p['against']}{lower}: d {points(p['d'], True)} {interval(p['ci95'])} "
        f"(per seed {seeds}; needs {rule}) → {p['verdict']}"
    )


def beside_entry(label: str, summary: dict[str, Any], source: str) -> dict[str, Any]:
    """Another comparison's answer to each claim, to read beside this one's: ``{"label", "source",
    "seeds", "claims": {"1": {"verdict", "ci95"}, ...}}`` (its stored ``claims``, else computed from it)."""
    from .claims import claims_table

    claims = summary["claims"] if "claims" in summary else claims_table(summary)
    return {
        "label": label,
        "source": source,
        "seeds": list(summary.get("spec", {}).get("seeds", [])),
        "claims": {str(c["claim"]): {"verdict": c["verdict"], "ci95": c.get("ci95")} for c in claims},
    }


def read_beside(item: str) -> dict[str, Any]:
    """:func:`beside_entry` of a ``--beside LABEL=PATH`` item (PATH: another comparison's results.json)."""
    label, sep, path = item.partition("=")
    if not sep or not label.strip() or not path:
        raise ValueError(f"--beside {item!r}: expected LABEL=PATH, e.g. 'second base=runs/base1/report/results.json'")
    try:
        summary = json.loads(Path(path).read_text())
    except OSError as err:
        raise ValueError(f"--beside {item!r}: cannot read {path}: {err.strerror}") from None
    except ValueError as err:
        raise ValueError(f"--beside {item!r}: {path} is not JSON ({err})") from None
    if not isinstance(summary, dict) or not ("claims" in summary or "outcomes" in summary):
        raise ValueError(f"--beside {item!r}: {path} is not a comparison's results.json (no 'claims' or 'outcomes')")
    return beside_entry(label.strip(), summary, path)


def beside_cell(entry: dict[str, Any], claim: int) -> str:
    """``verdict [low, high]`` of ``claim`` in another comparison (``–`` where it has no such claim)."""
    other = entry["claims"].get(str(claim))
    return "–" if other is None else f"{other['verdict']} {interval(other['ci95'])}"


def claims_markdown(claims: Sequence[dict[str, Any]], beside: Sequence[dict[str, Any]] = ()) -> list[str]:
    """The claims table (:func:`~trapo_lab.compare.claims.claims_table`) as Markdown lines (none if empty),
    with one column per other comparison in ``beside`` (:func:`beside_entry`): its verdict and interval."""
    if not claims:
        return []
    seeds = sorted({s for c in claims for s in c.get("seeds", [])}, key=str)
    out = [
        "## The paper's claims",
        "",
        "Each part is a paired difference d in points, positive favouring TRAPO (TRAPO − other; other − TRAPO "
        "for lower-is-better measures), with a 95% bootstrap interval over test problems (resampled within "
        f"each tier or skill) and seeds ({', '.join(map(str, seeds))}; seeds that played no part in choosing "
        "learning rates). Verdict: **holds** when the interval lies on the claimed side of the claim's "
        'boundary (0; −2..+2 for "near"; +5 for "well above"), **fails** when it lies wholly on the other '
        "side, **within noise** otherwise (an interval touching the boundary, exact ties included). A claim of "
        "several parts holds when all hold and fails when any fails; the interval shown is its deciding part's.",
        "",
    ]
    if beside:
        seeds = [f" (seeds {', '.join(map(str, b['seeds']))})" if b["seeds"] else "" for b in beside]
        sources = [f"**{b['label']}** from `{b['source']}`{s}" for b, s in zip(beside, seeds, strict=True)]
        out += [
            "Beside them, the same claims answered by other comparisons (verdict and deciding interval): "
            f"{'; '.join(sources)}.",
            "",
        ]
    rows = [
        [
            str(c["claim"]),
            c["text"],
            c.get("deciding") or "–",
            interval(c.get("ci95")),
            "<br>".join(part_text(p) for p in c.get("parts", [])) or "–",
            f"**{c['verdict']}**",
            *(beside_cell(b, c["claim"]) for b in beside),
        ]
        for c in claims
    ]
    head = ["#", "claim", "deciding part", "95% interval", "every part", "verdict", *(b["label"] for b in beside)]
    return out + table(head, rows)


def provenance_markdown(provenance: dict[str, Any] | None) -> list[str]:
    """Which code made the runs and evaluations (:mod:`~trapo_lab.compare.provenance`)."""
    if not provenance or not provenance.get("by_code"):
        return []
    out = [
        "## Which code made these numbers",
        "",
        "Runs by the commit of the code that trained them (`A → B`: started by A, finished by B), evaluations "
        "by the commit that computed them; `+dirty`: uncommitted changes; `unrecorded`: made before the code "
        "was recorded.",
        "",
    ]
    if provenance.get("this_invocation"):
        out[-2] += f" This report was written by {code_label(provenance['this_invocation'])}."
    rows = [[label, n["runs"], n["evaluations"]] for label, n in provenance["by_code"].items()]
    return out + table(["code", "runs", "evaluations"], rows)


def matched_markdown(matched: dict[str, Any]) -> list[str]:
    """Claims 2 and 3 at a matched learning rate and at a matched in-domain level."""
    if not matched or not (matched.get("matched_lr") or matched.get("matched_in_domain")):
        return []
    out = [
        "## Claims 2 and 3 at matched settings",
        "",
        "The claims above compare each method at its own chosen learning rate (the paper's reading). Here the "
        "retained-skill difference is read at the same learning rate (sweep runs, validation split, one seed: "
        "interval over problems only) and at the same in-domain level (each method's trade-off curve over its "
        "learning rates and checkpoints, upper frontier, interpolated; no interval).",
        "",
    ]
    rows = [
        [m["claim"], m["against"], m["lr"], points(m["d"], True), interval(m["ci95"]), m["verdict"]]
        for m in matched.get("matched_lr", [])
    ]
    out += table(["claim", "TRAPO vs", "learning rate", "retained d", "95% interval", "verdict"], rows)
    rows = [
        [m["claim"], m["against"], points(m["level"]), points(m["trapo"]), points(m["other"]), points(m["d"], True)]
        for m in matched.get("matched_in_domain", [])
    ]
    return out + table(["claim", "TRAPO vs", "in-domain level (val)", "TRAPO retained", "other retained", "d"], rows)


def readings_markdown(summary: dict[str, Any]) -> list[str]:
    """Late gains, leakage-robust averages, the benchmark equal-time view and the sweep's retained column."""
    out: list[str] = []
    gains = summary.get("late_gain") or {}
    if gains:
        out += ["## Still learning?", "", "In-domain validation gain (points) over the last 20% of steps:", ""]
        rows = [
            [m, "–" if g is None else f"{g['from_step']}→{g['to_step']}", "–" if g is None else points(g["gain"], True)]
            for m, g in gains.items()
        ]
        out += table(["method", "steps", "gain"], rows)
    leak = summary.get("leakage") or {}
    if leak.get("per_seed"):
        from .aggregate import mean_std

        out += [
            "## Leakage-robust in-domain averages",
            "",
            f"Test split, mean over seeds: tiers 2–5 (tier 1's steps are all drilled in pre-training), and tiers "
            f"2–5 with tier 2 cut to the {leak['tier2_problems'] - len(leak['tier2_chain_prefixes'])} of "
            f"{leak['tier2_problems']} problems whose chain is not the start of a post-training chain.",
            "",
        ]
        rows = []
        for m, per_seed in leak["per_seed"].items():
            cells = [mean_std(r[c] for r in per_seed.values())["mean"] for c in ("no_t1", "no_t1_clean_t2", "t2_clean")]
            rows.append([m, *(points(v) for v in cells)])
        out += table(["method", "tiers 2–5", "tiers 2–5, tier 2 clean", "tier 2 clean"], rows)
    out += _benchmark_markdown(summary.get("equal_time_benchmark"))
    return out + _sweep_markdown(summary.get("lr_selection") or {})


def _benchmark_markdown(view: dict[str, Any] | None) -> list[str]:
    if not view:
        return []
    out = ["## Equal time from the step-cost benchmark", "", f"From `{view['source']}` ({view['machine']}). "]
    out[-1] += f"Rule: {view['rule']}."
    out.append("")
    rows = []
    for m, v in view["methods"].items():
        if v["step"] is None:
            rows.append([m, "not benchmarked", "–", "–", "–"])
            continue
        s = v["summary"]
        rows.append([m, f"{v['ratio']:.2f}", v["step"], points(s["in_domain"]["mean"]), points(s["retained"]["mean"])])
    return out + table(["method", "step cost / reference", "step used", "in-domain", "retained"], rows)


def _sweep_markdown(selection: dict[str, Any]) -> list[str]:
    if not any("retained" in v for v in selection.values()):
        return []
    out = ["## Every sweep run on validation", "", "In-domain / retained (%) of each learning rate's final model "]
    out[-1] += "at the sweep seed; * the chosen rate; rates after + were added because the best was at an edge."
    out.append("")
    rows = []
    for m, v in selection.items():
        cells = []
        for lr, score in v["scores"].items():
            mark = "*" if lr == v["chosen"] else ""
            extra = "+" if lr in v.get("added", []) else ""
            cells.append(f"{extra}{lr}{mark}: {points(score)} / {points(v['retained'].get(lr))}")
        rows.append([m, "; ".join(cells), "yes" if v.get("at_edge") else "no"])
    return out + table(["method", "rate: in-domain / retained", "chosen at an edge"], rows)
