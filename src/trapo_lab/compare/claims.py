"""The paper's four claims, each answered from a finished comparison's per-problem outcomes with a 95%
interval and a verdict (pure functions of the summary).

The paper (TRAPO.md, "Claims") says, in our miniature's terms:

1. TRAPO's in-domain average is at least the best baseline's (SFT, GRPO, SFT-then-GRPO, LUFFY).
2. TRAPO keeps the retained skills near GRPO's (within ±2 points) and well above SFT's (by more than 5).
3. TrSFT vs plain SFT on the same prefixes (``trapo`` vs ``trapo-sft``): less collapse (fewer degenerate
   outputs), less style switching (fewer outputs in the expert's form), more retained skill.
4. TRAPO's pass@k curve lies above every baseline's: the area under the curve (pass@1..pass@K averaged,
   per problem) on every test problem of the in-domain tiers.

Every part is a paired difference ``d`` (TRAPO minus the other, or the other minus TRAPO for a
lower-is-better measure, so that positive always favours TRAPO) with a bootstrap 95% interval over problems
(within each tier or skill) and test seeds (:func:`~trapo_lab.compare.stats.paired_bootstrap`), judged by
the interval rule (:func:`~trapo_lab.compare.stats.interval_verdict`). A claim of several parts holds when
every part holds and fails when any part fails (:func:`~trapo_lab.compare.stats.combine`); its ``ci95`` is
the deciding part's (the one with the smallest margin among the parts that share the claim's verdict).

Claims 2 and 3 are also read at matched settings (:func:`matched_readings`): each pair at the same learning
rate (the sweep runs, validation split, one seed: interval over problems only), and retained skill at the
same in-domain level (read off each method's trade-off curve; no interval). The paper's claim is the first
reading (each method at its own best setting); the matched readings say how much of it is the method's
and how much its learning rate's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import readings
from .aggregate import PAIRED_AGAINST
from .stats import (
    ABOVE,
    FAILS,
    HOLDS,
    MISSING,
    NEAR,
    NOISE,
    combine,
    decode_counts,
    interval_margin,
    interval_verdict,
    paired_bootstrap,
    passk_area,
)

__all__ = ["FAILS", "HOLDS", "MISSING", "NOISE", "claims_table", "combine", "matched_readings"]

BASELINES = ("sft", "grpo", "sft-then-grpo", "luffy")
PLAIN_SFT_ABLATION = "trapo-sft"
NEAR_MARGIN = 0.02  # "near GRPO's" retained skill: |d| < 2 points
WELL_ABOVE = 0.05  # "well above SFT's": d > 5 points
CLAIMS = {
    1: "TRAPO's in-domain average ≥ the best baseline's",
    2: "TRAPO keeps the retained skills near GRPO's (±2 points) and well above SFT's (> +5)",
    3: "TrSFT vs plain SFT on prefixes (trapo vs trapo-sft): less collapse, less style switching, more retained",
    4: "TRAPO's pass@k curve above every baseline's (area under pass@1..K, all in-domain test problems)",
}


def scores(summary: dict[str, Any], split: str, method: str, groups: Sequence[str], measure: str = "correct"):
    """Per seed, per group, the per-problem scores of ``method`` in ``summary["outcomes"][split]``: counts
    divided by the samples per problem, or (``measure="passk_area"``) the area under the pass@k curve."""
    n = summary["outcome_counts"][split]
    out = {}
    for seed, per_group in summary["outcomes"][split].get(method, {}).items():
        if measure == "passk_area":
            out[seed] = {g: passk_area(decode_counts(per_group[g]["correct"]).astype(int), n) for g in groups}
        else:
            out[seed] = {g: decode_counts(per_group[g][measure]) / n for g in groups}
    return out


def part(
    summary: dict[str, Any],
    other: str,
    groups: Sequence[str],
    *,
    split: str = "test",
    measure: str = "correct",
    shape: str = ABOVE,
    bound: float = 0.0,
    lower_is_better: bool = False,
    what: str = "in-domain accuracy",
) -> dict[str, Any]:
    """One paired comparison of TRAPO against ``other`` on ``what`` (a label): d (positive favours TRAPO),
    its interval, verdict."""
    mine, theirs = (scores(summary, split, m, groups, measure) for m in (PAIRED_AGAINST, other))
    boot = paired_bootstrap(theirs, mine) if lower_is_better else paired_bootstrap(mine, theirs)
    verdict = interval_verdict(boot["ci95"], shape, bound)
    return {
        "against": other,
        "measure": measure if split != "passk" else "passk_area",
        "what": what,
        "lower_is_better": lower_is_better,
        "rule": f"{shape} {'±' if shape == NEAR else '+'}{100 * bound:g} points",
        **boot,
        "verdict": verdict,
        "margin": None if boot["ci95"] is None else interval_margin(boot["ci95"], shape, bound),
    }


def claim_entry(number: int, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """A claim's entry: its parts, the combined verdict, and the deciding part's interval."""
    verdict = combine([p["verdict"] for p in parts])
    same = [p for p in parts if p["verdict"] == verdict and p["margin"] is not None]
    deciding = min(same, key=lambda p: p["margin"]) if same else None
    return {
        "claim": number,
        "text": CLAIMS[number],
        "verdict": verdict,
        "ci95": None if deciding is None else deciding["ci95"],
        "d": None if deciding is None else deciding["d"],
        "deciding": None if deciding is None else f"{deciding['what']} vs {deciding['against']}",
        "seeds": sorted({s for p in parts for s in p["seeds"]}, key=str),
        "problems": {g: n for p in parts for g, n in p["problems"].items()},
        "parts": parts,
    }


def claims_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The four claims (module docstring), from a summary with per-problem ``outcomes``; a claim whose
    methods or outcomes are missing is ``not measured``. Empty without TRAPO or any baseline."""
    methods = set(summary.get("outcomes", {}).get("test", {}))
    baselines = [b for b in BASELINES if b in methods]
    if PAIRED_AGAINST not in methods or not baselines:
        return []
    tiers, skills = summary["in_domain"], summary.get("retained") or []
    out = [claim_entry(1, [part(summary, b, tiers) for b in baselines])]
    if {"grpo", "sft"} <= methods and skills:
        retained = dict(what="retained accuracy")
        near = part(summary, "grpo", skills, shape=NEAR, bound=NEAR_MARGIN, **retained)
        out.append(claim_entry(2, [near, part(summary, "sft", skills, bound=WELL_ABOVE, **retained)]))
    else:
        out.append({"claim": 2, "text": CLAIMS[2], "verdict": MISSING, "ci95": None, "parts": []})
    if PLAIN_SFT_ABLATION in methods:
        lower = dict(lower_is_better=True)
        trust = [
            part(summary, PLAIN_SFT_ABLATION, tiers, measure="degenerate", what="share without \\boxed", **lower),
            part(summary, PLAIN_SFT_ABLATION, tiers, measure="expert_style", what="expert-style share", **lower),
            *([part(summary, PLAIN_SFT_ABLATION, skills, what="retained accuracy")] if skills else []),
        ]
        out.append(claim_entry(3, trust))
    else:
        out.append({"claim": 3, "text": CLAIMS[3], "verdict": MISSING, "ci95": None, "parts": []})
    if summary.get("outcomes", {}).get("passk"):
        area = dict(split="passk", measure="passk_area", what="pass@k area")
        out.append(claim_entry(4, [part(summary, b, tiers, **area) for b in baselines]))
    return out


def matched_readings(summary: dict[str, Any]) -> dict[str, Any]:
    """Claims 2 and 3 at matched settings: per common learning rate (sweep runs, validation), the retained
    differences with their intervals and verdicts; and retained skill at a matched in-domain level."""
    sweep = summary.get("outcomes", {}).get("val_sweep", {})
    skills = summary.get("retained") or []
    pairs = [("grpo", NEAR, NEAR_MARGIN, 2), ("sft", ABOVE, WELL_ABOVE, 2), (PLAIN_SFT_ABLATION, ABOVE, 0.0, 3)]
    by_lr, by_level = [], []
    for other, shape, bound, claim in pairs:
        if PAIRED_AGAINST not in sweep or other not in sweep or not skills:
            continue
        for lr in sorted(set(sweep[PAIRED_AGAINST]) & set(sweep[other]), key=float):
            mine = {0: {g: decode_counts(sweep[PAIRED_AGAINST][lr][g]["correct"]) for g in skills}}
            theirs = {0: {g: decode_counts(sweep[other][lr][g]["correct"]) for g in skills}}
            boot = paired_bootstrap(mine, theirs)
            verdict = interval_verdict(boot["ci95"], shape, bound)
            by_lr.append({"claim": claim, "against": other, "lr": lr, "verdict": verdict, **_interval(boot)})
        by_level.append({"claim": claim, "against": other, **_matched_level(summary.get("tradeoff", {}), other)})
    return {"matched_lr": by_lr, "matched_in_domain": by_level}


def _interval(boot: dict[str, Any]) -> dict[str, Any]:
    return {"d": boot["d"], "ci95": boot["ci95"]}


def _matched_level(tradeoff: dict[str, Any], other: str) -> dict[str, Any]:
    """Retained of TRAPO and ``other`` at the highest in-domain validation level both trade-off curves reach."""
    a, b = tradeoff.get(PAIRED_AGAINST, []), tradeoff.get(other, [])
    if not a or not b:
        return {"level": None, "trapo": None, "other": None, "d": None}
    level = min(max(p["in_domain"] for p in a), max(p["in_domain"] for p in b))
    mine, theirs = readings.at_matched_level(a, level), readings.at_matched_level(b, level)
    d = None if mine is None or theirs is None else mine - theirs
    return {"level": level, "trapo": mine, "other": theirs, "d": None if d is None else float(np.round(d, 6))}
