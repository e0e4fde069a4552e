"""The claims table: each claim's verdict from hand-made per-problem outcomes, and the verdict recomputed from a
written results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trapo_lab.compare.claims import FAILS, HOLDS, MISSING, NOISE, claims_table, matched_readings
from trapo_lab.compare.report_claims import claims_markdown, interval, matched_markdown, read_beside

TIERS, SKILLS = ["arith-t1", "arith-t2"], ["reverse", "sort"]
SEEDS = ("1", "2", "3")
PUBLISHED = Path(__file__).parents[3] / "docs/results/compare/results.json"


def _outcome(correct: str, degenerate: str | None = None, style: str | None = None) -> dict[str, str]:
    zeros = " ".join("0" for _ in correct.split())
    return {"correct": correct, "degenerate": degenerate or zeros, "expert_style": style or zeros}


def _model(tiers: str, skills: str, degenerate: str | None = None, style: str | None = None) -> dict:
    """The same outcomes on every seed: every tier gets ``tiers``, every skill ``skills`` (10 problems each)."""
    per_group = {g: _outcome(tiers, degenerate, style) for g in TIERS} | {g: _outcome(skills) for g in SKILLS}
    return {s: per_group for s in SEEDS}


ALL, NONE = "1 1 1 1 1 1 1 1 1 1", "0 0 0 0 0 0 0 0 0 0"
HALF = "1 0 1 0 1 0 1 0 1 0"


def _summary() -> dict:
    test = {
        "trapo": _model(ALL, "1 1 1 1 1 1 1 1 1 0", degenerate=NONE, style=NONE),  # retained 90%
        "trapo-sft": _model(HALF, HALF, degenerate=ALL, style=ALL),
        "grpo": _model(HALF, "1 1 1 1 1 1 1 1 1 0"),  # same retained as TRAPO
        "sft": _model(ALL, NONE),  # ties TRAPO in-domain
        "sft-then-grpo": _model(HALF, HALF),
    }
    passk = {m: {s: {g: {"correct": "2 2 2 0"} for g in TIERS} for s in SEEDS} for m in test}
    passk["trapo"] = {s: {g: {"correct": "2 2 2 2"} for g in TIERS} for s in SEEDS}
    sweep = {m: {"1e-4": {g: {"correct": "1 1 0 0"} for g in SKILLS}} for m in ("trapo", "grpo", "sft", "trapo-sft")}
    tradeoff = {
        "trapo": [{"in_domain": 0.3, "retained": 0.9}, {"in_domain": 0.7, "retained": 0.6}],
        "grpo": [{"in_domain": 0.3, "retained": 0.9}, {"in_domain": 0.5, "retained": 0.8}],
    }
    return {
        "in_domain": TIERS,
        "retained": SKILLS,
        "outcomes": {"test": test, "passk": passk, "val_sweep": sweep},
        "outcome_counts": {"test": 1, "passk": 2, "val_sweep": 1},
        "tradeoff": tradeoff,
    }


def test_claims_from_hand_made_outcomes():
    claims = claims_table(_summary())
    assert [c["claim"] for c in claims] == [1, 2, 3, 4]
    # 1: TRAPO ties sft exactly (interval [0, 0]): within noise, decided by sft
    assert claims[0]["verdict"] == NOISE and claims[0]["ci95"] == [0.0, 0.0]
    assert claims[0]["deciding"] == "in-domain accuracy vs sft"
    by = {p["against"]: p for p in claims[0]["parts"]}
    assert by["grpo"]["verdict"] == HOLDS and by["grpo"]["d"] == pytest.approx(0.5)
    assert by["grpo"]["per_seed"] == {s: pytest.approx(0.5) for s in SEEDS}
    assert claims[0]["seeds"] == list(SEEDS) and claims[0]["problems"] == {"arith-t1": 10, "arith-t2": 10}
    # 2: near GRPO (identical: [0, 0] inside ±2) holds; well above SFT (+90 points on every problem) holds
    assert claims[1]["verdict"] == HOLDS
    assert [p["verdict"] for p in claims[1]["parts"]] == [HOLDS, HOLDS]
    # 3: degenerate and expert style lower (other − TRAPO = +1), retained higher: holds
    assert claims[2]["verdict"] == HOLDS and all(p["lower_is_better"] for p in claims[2]["parts"][:2])
    assert claims[2]["parts"][0]["d"] == pytest.approx(1.0)
    # 4: per-problem pass@k area of TRAPO 1.0 vs (1, 1, 1, 0) of every baseline: d = 0.25, but a bootstrap
    # draw misses the fourth problem in both tiers with chance (3/4)^8 = 10%: the interval reaches 0
    assert claims[3]["parts"][0]["d"] == pytest.approx(0.25)
    assert claims[3]["verdict"] == NOISE and claims[3]["ci95"][0] == pytest.approx(0.0)


def test_a_failing_part_fails_the_claim():
    summary = _summary()
    summary["outcomes"]["test"]["sft"] = _model(ALL, NONE)
    summary["outcomes"]["test"]["trapo"] = _model(NONE, ALL)
    assert claims_table(summary)[0]["verdict"] == FAILS


def test_claims_need_trapo_and_a_baseline():
    summary = _summary()
    assert claims_table({**summary, "outcomes": {"test": {"trapo": summary["outcomes"]["test"]["trapo"]}}}) == []
    del summary["outcomes"]["test"]["trapo-sft"]
    assert claims_table(summary)[2]["verdict"] == MISSING


def test_matched_readings():
    matched = matched_readings(_summary())
    # same outcomes at 1e-4 for every method: d = 0, [0, 0]; near GRPO holds, well above SFT fails, more
    # retained than trapo-sft is within noise
    assert [(m["against"], m["verdict"]) for m in matched["matched_lr"]] == [
        ("grpo", HOLDS),
        ("sft", FAILS),
        ("trapo-sft", NOISE),
    ]
    # highest in-domain level both curves reach: 0.5; TRAPO's frontier there: 0.9 + (0.6 − 0.9) * 0.5 = 0.75
    grpo = matched["matched_in_domain"][0]
    assert grpo["level"] == 0.5 and grpo["trapo"] == pytest.approx(0.75) and grpo["other"] == pytest.approx(0.8)
    assert grpo["d"] == pytest.approx(-0.05)
    lines = matched_markdown(matched)
    assert lines[0].startswith("## Claims 2 and 3") and any("| 2 | grpo | 1e-4 |" in line for line in lines)


def test_claims_markdown_is_a_table_with_every_verdict():
    lines = claims_markdown(claims_table(_summary()))
    assert lines[0] == "## The paper's claims"
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| #")]
    assert len(rows) == 4 and rows[0].endswith("| **within noise** |") and rows[1].endswith("| **holds** |")
    assert "[+0.0, +0.0]" in rows[0]
    assert claims_markdown([]) == []


def test_written_results_json_recomputes_its_verdicts(tmp_path):
    from trapo_lab.compare.report import claims_table as report_claims

    path = tmp_path / "results.json"
    summary = _summary()
    path.write_text(json.dumps({**summary, "claims": report_claims(summary)}))
    stored = json.loads(path.read_text())
    recomputed = claims_table(stored)
    assert [(c["verdict"], c["ci95"]) for c in recomputed] == [(c["verdict"], c["ci95"]) for c in stored["claims"]]


def test_published_claim_1_recomputes_from_its_stored_outcomes():
    summary = json.loads(PUBLISHED.read_text())
    if "claims" not in summary:
        pytest.skip(f"{PUBLISHED} predates per-problem outcomes (no claims with intervals yet)")
    stored = summary["claims"][0]
    recomputed = claims_table(summary)[0]
    assert recomputed["verdict"] == stored["verdict"] and recomputed["ci95"] == stored["ci95"]


def test_demo_line_reads_the_published_comparison(tmp_path):
    from trapo_lab.cli.demo import comparison_line

    path = tmp_path / "results.json"
    assert "trapo compare" in comparison_line(path)  # nothing published: a pointer, no numbers
    path.write_text(json.dumps({**_summary(), "command": "trapo compare --publish"}))
    line = comparison_line(path)
    assert "reproduce: `trapo compare --publish`" in line
    assert line.endswith(
        "claim 1 (TRAPO's in-domain average ≥ the best baseline's): within noise, d vs sft +0.0 [+0.0, +0.0]."
    )
    path.write_text(json.dumps({"command": "trapo compare --publish", "equal_steps": {}}))
    assert "per-problem outcomes" in comparison_line(path)


def test_other_comparisons_verdicts_stand_beside_the_claims(tmp_path):
    main = claims_table(_summary())
    # a second comparison where TRAPO is only GRPO's half in-domain (SFT gets all): no stored claims, computed on read
    other = _summary()
    other["outcomes"]["test"]["trapo"] = other["outcomes"]["test"]["grpo"]
    (tmp_path / "other.json").write_text(json.dumps({**other, "spec": {"seeds": [1, 2, 3]}}))
    # a third one with its claims stored (as write_report stores them), claim 4 left out
    stored = [{"claim": 1, "verdict": FAILS, "ci95": [-0.1, -0.05]}, {"claim": 2, "verdict": HOLDS, "ci95": None}]
    (tmp_path / "steps.json").write_text(json.dumps({"claims": stored, "spec": {"seeds": [1, 2]}}))
    beside = [read_beside(f"second base={tmp_path / 'other.json'}"), read_beside(f"400 steps={tmp_path}/steps.json")]
    expected = claims_table(other)[0]
    assert expected["verdict"] == FAILS and expected["ci95"][1] < 0
    assert beside[0]["claims"]["1"] == {"verdict": FAILS, "ci95": expected["ci95"]}
    assert beside[1]["seeds"] == [1, 2] and set(beside[1]["claims"]) == {"1", "2"}
    lines = claims_markdown(main, beside)
    head = next(line for line in lines if line.startswith("| #"))
    assert head.endswith("| verdict | second base | 400 steps |")
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| #")]
    assert rows[0].endswith(f"| fails {interval(expected['ci95'])} | fails [-10.0, -5.0] |")
    assert rows[1].endswith("| holds – |") and rows[3].endswith("| – |")  # no interval; no claim 4 there
    assert any("**400 steps** from" in line and "(seeds 1, 2)" in line for line in lines)
    del beside[1]["seeds"][:]  # a results.json without a spec names no seeds
    assert any(line.endswith(f"**400 steps** from `{tmp_path}/steps.json`.") for line in claims_markdown(main, beside))


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("no-label.json", "expected LABEL=PATH"),
        ("=x.json", "expected LABEL=PATH"),
        ("second base={dir}/missing.json", "cannot read"),
        ("second base={dir}/bad.json", "is not JSON"),
        ("second base={dir}/list.json", "not a comparison's results.json"),
    ],
)
def test_a_bad_beside_is_a_clear_error(tmp_path, item, message):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=message) as err:
        read_beside(item.format(dir=tmp_path))
    assert str(err.value).startswith("--beside ")
