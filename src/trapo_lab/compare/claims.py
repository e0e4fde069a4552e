"""The paper's four claims, each answered from a finished comparison's summary with a verdict (pure functions).

The paper (TRAPO.md, "Claims") says, in our miniature's terms:

1. TRAPO's in-domain average is at least the best baseline's (SFT, GRPO, SFT-then-GRPO, LUFFY).
2. TRAPO keeps the retained skills near GRPO's and well above SFT's (imitation costs general ability; the
   trust region and RL on the model's own tokens are what keep it).
3. TrSFT vs plain SFT on the same prefixes (``trapo`` vs ``trapo-sft``): less collapse (fewer degenerate
   outputs), less style switching (fewer outputs in the expert's form), more retained skill.
4. TRAPO's pass@k curve lies above every baseline's.

A verdict comes from the per-seed paired differences ``d_s`` (TRAPO minus the other, same seed), with the
same rule everywhere (:func:`verdict`): **holds** when ``d_s`` is on the claimed side on every seed,
**fails** when it is on the other side on every seed, **within noise** otherwise. With three seeds this is a
sign test of the crudest kind; the numbers beside each verdict say how large the differences are. A claim
with several parts holds when every part holds, fails when any part fails, and is within noise otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .aggregate import PAIRED_AGAINST, paired_differences

BASELINES = ("sft", "grpo", "sft-then-grpo", "luffy")
PLAIN_SFT_ABLATION = "trapo-sft"
# "Near GRPO's" retained skill (claim 2): TRAPO may be this far below GRPO (a fraction: 2 accuracy points).
NEAR_MARGIN = 0.02

HOLDS, FAILS, NOISE, MISSING = "holds", "fails", "within noise", "not measured"


def verdict(diffs: Iterable[float], margin: float = 0.0) -> str:
    """``holds`` if ``d + margin > 0`` for every per-seed difference ``d``, ``fails`` if ``d + margin < 0`` for
    every one, ``within noise`` otherwise (and ``not measured`` without differences)."""
    shifted = [d + margin for d in diffs]
    if not shifted:
        return MISSING
    if all(d > 0 for d in shifted):
        return HOLDS
    if all(d < 0 for d in shifted):
        return FAILS
    return NOISE


def combine(verdicts: Sequence[str]) -> str:
    """One verdict for a claim of several parts: fails if any part fails, holds if all hold, else noise."""
    if not verdicts or MISSING in verdicts:
        return MISSING
    if FAILS in verdicts:
        return FAILS
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    return NOISE


def _per_seed(summary: dict[str, Any], method: str, column: str) -> dict[int, float]:
    rows = summary["equal_steps"][method]["per_seed"]
    return {int(s): r[column] for s, r in rows.items() if r.get(column) is not None}


def _paired(
    summary: dict[str, Any], better: str, worse: str, column: str, *, lower_is_better: bool = False
) -> dict[str, Any]:
    """Paired differences on ``column`` oriented so that positive means ``better`` is better."""
    a, b = _per_seed(summary, better, column), _per_seed(summary, worse, column)
    return paired_differences(b, a) if lower_is_better else paired_differences(a, b)


def _points(stats: dict[str, Any]) -> str:
    """``mean ± std`` of a fraction, in points."""
    if stats.get("mean") is None:
        return "–"
    std = "" if stats.get("std") is None else f" ± {100 * stats['std']:.1f}"
    return f"{100 * stats['mean']:.1f}{std}"


def _delta(p: dict[str, Any]) -> str:
    if not p["n"]:
        return "–"
    std = "" if p["std"] is None else f" ± {100 * p['std']:.1f}"
    return f"{100 * p['mean']:+.1f}{std} ({p['wins']}/{p['n']} seeds)"


def _claim_in_domain(summary: dict[str, Any], baselines: Sequence[str]) -> dict[str, Any]:
    steps = summary["equal_steps"]
    pairs = {b: _paired(summary, PAIRED_AGAINST, b, "in_domain") for b in baselines}
    best = max(baselines, key=lambda b: steps[b]["summary"]["in_domain"]["mean"] or -1.0)
    parts = [
        f"TRAPO {_points(steps[PAIRED_AGAINST]['summary']['in_domain'])}, best baseline {best} "
        f"{_points(steps[best]['summary']['in_domain'])}"
    ]
    parts += [f"d vs {b}: {_delta(p)}" for b, p in pairs.items()]
    return {
        "claim": "TRAPO's in-domain average ≥ the best baseline's",
        "evidence": "; ".join(parts),
        "verdict": combine([verdict(p["diffs"].values()) for p in pairs.values()]),
    }


def _claim_retained(summary: dict[str, Any]) -> dict[str, Any]:
    steps = summary["equal_steps"]
    have = [m for m in ("grpo", "sft") if m in steps]
    if len(have) < 2 or not summary.get("retained"):
        return {
            "claim": "TRAPO keeps the retained skills near GRPO's and well above SFT's",
            "evidence": "needs grpo, sft and the retained skills",
            "verdict": MISSING,
        }
    near = _paired(summary, PAIRED_AGAINST, "grpo", "retained")
    above = _paired(summary, PAIRED_AGAINST, "sft", "retained")
    retained = {m: _points(steps[m]["summary"]["retained"]) for m in (PAIRED_AGAINST, "grpo", "sft")}
    evidence = (
        f"retained: TRAPO {retained[PAIRED_AGAINST]}, GRPO {retained['grpo']}, SFT {retained['sft']}; "
        f"d vs GRPO {_delta(near)} (near: d > −{100 * NEAR_MARGIN:.0f} on every seed); "
        f"d vs SFT {_delta(above)}"
    )
    return {
        "claim": "TRAPO keeps the retained skills near GRPO's and well above SFT's",
        "evidence": evidence,
        "verdict": combine([verdict(near["diffs"].values(), NEAR_MARGIN), verdict(above["diffs"].values())]),
    }


def _claim_trust_region(summary: dict[str, Any]) -> dict[str, Any]:
    claim = "TrSFT vs plain SFT on prefixes (trapo vs trapo-sft): less collapse, less style switching, more retained"
    if PLAIN_SFT_ABLATION not in summary["equal_steps"]:
        return {"claim": claim, "evidence": f"needs {PLAIN_SFT_ABLATION}", "verdict": MISSING}
    steps = summary["equal_steps"]
    measures = [
        ("degenerate", "no \\boxed (collapse)", True),
        ("expert_style", "expert-style outputs", True),
        ("retained", "retained", False),
    ]
    parts, verdicts = [], []
    for column, label, lower in measures:
        p = _paired(summary, PAIRED_AGAINST, PLAIN_SFT_ABLATION, column, lower_is_better=lower)
        verdicts.append(verdict(p["diffs"].values()))
        parts.append(
            f"{label}: {_points(steps[PAIRED_AGAINST]['summary'][column])} vs "
            f"{_points(steps[PLAIN_SFT_ABLATION]['summary'][column])} ({verdicts[-1]})"
        )
    return {"claim": claim, "evidence": "; ".join(parts), "verdict": combine(verdicts)}


def _claim_passk(summary: dict[str, Any], baselines: Sequence[str]) -> dict[str, Any]:
    claim = "TRAPO's pass@k curve above every baseline's"
    passk = summary.get("passk", {})
    if PAIRED_AGAINST not in passk or "per_seed" not in passk[PAIRED_AGAINST]:
        return {"claim": claim, "evidence": "no per-seed pass@k curves", "verdict": MISSING}
    ks = passk[PAIRED_AGAINST]["k"]
    ends = sorted({0, len(ks) - 1})  # pass@1 and pass@k_max
    parts, verdicts = [], []
    for b in baselines:
        for i in ends:
            ref = {int(s): c[i] for s, c in passk[PAIRED_AGAINST]["per_seed"].items() if c[i] is not None}
            other = {int(s): c[i] for s, c in passk[b]["per_seed"].items() if c[i] is not None}
            p = paired_differences(ref, other)
            verdicts.append(verdict(p["diffs"].values()))
        crossing = [
            k
            for k, t, o in zip(ks, passk[PAIRED_AGAINST]["mean"], passk[b]["mean"], strict=True)
            if t is not None and o is not None and t < o
        ]
        parts.append(f"{b}: mean curve below TRAPO's at {len(ks) - len(crossing)}/{len(ks)} k")
    t = passk[PAIRED_AGAINST]["mean"]
    head = f"TRAPO pass@1 {100 * t[0]:.1f}, pass@{ks[-1]} {100 * t[-1]:.1f}" if None not in (t[0], t[-1]) else ""
    return {
        "claim": claim,
        "evidence": "; ".join([head, *parts]).strip("; "),
        "verdict": combine(verdicts),
        "rule": "paired per seed at k = 1 and k = max, against every baseline",
    }


def claims_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The four claims with their evidence and verdict, from a comparison summary (needs TRAPO and at least
    one baseline; a claim whose methods were not run is ``not measured``)."""
    steps = summary["equal_steps"]
    baselines = [b for b in BASELINES if b in steps]
    if PAIRED_AGAINST not in steps or not baselines:
        return []
    return [
        _claim_in_domain(summary, baselines),
        _claim_retained(summary),
        _claim_trust_region(summary),
        _claim_passk(summary, baselines),
    ]
