"""The claims table: verdict rules and each claim against a hand-made summary."""

from __future__ import annotations

import pytest

from trapo_lab.compare.aggregate import mean_std
from trapo_lab.compare.claims import FAILS, HOLDS, MISSING, NOISE, claims_table, combine, verdict
from trapo_lab.compare.report import claims_markdown


@pytest.mark.parametrize(
    ("diffs", "margin", "expected"),
    [
        ([0.01, 0.02, 0.03], 0.0, HOLDS),
        ([-0.01, -0.02, -0.03], 0.0, FAILS),
        ([0.05, -0.01, 0.02], 0.0, NOISE),
        ([0.0, 0.01, 0.02], 0.0, NOISE),  # a tie is not "on the claimed side"
        ([-0.01, -0.015, 0.0], 0.02, HOLDS),  # within the margin on every seed
        ([-0.03, -0.05, -0.021], 0.02, FAILS),
        ([], 0.0, MISSING),
    ],
)
def test_verdict_is_a_sign_rule_over_seeds(diffs, margin, expected):
    assert verdict(diffs, margin) == expected


def test_combine():
    assert combine([HOLDS, HOLDS]) == HOLDS
    assert combine([HOLDS, NOISE]) == NOISE
    assert combine([HOLDS, FAILS, NOISE]) == FAILS
    assert combine([HOLDS, MISSING]) == MISSING


def _entry(rows: dict[int, dict[str, float]]) -> dict:
    columns = {c for r in rows.values() for c in r}
    return {
        "per_seed": {str(s): r for s, r in rows.items()},
        "summary": {c: mean_std(r[c] for r in rows.values()) for c in columns},
    }


def _row(in_domain, retained, degenerate=0.0, expert_style=0.5):
    return {"in_domain": in_domain, "retained": retained, "degenerate": degenerate, "expert_style": expert_style}


def _summary():
    # seeds 0, 1, 2; TRAPO beats grpo on every seed in-domain, ties-or-loses against sft-then-grpo on one seed
    steps = {
        "trapo": _entry(
            {0: _row(0.60, 0.80, 0.01, 0.9), 1: _row(0.62, 0.82, 0.02, 0.9), 2: _row(0.58, 0.78, 0.0, 0.9)}
        ),
        "trapo-sft": _entry(
            {0: _row(0.55, 0.50, 0.05, 0.99), 1: _row(0.57, 0.52, 0.04, 0.98), 2: _row(0.56, 0.49, 0.03, 0.97)}
        ),
        "grpo": _entry({0: _row(0.40, 0.81), 1: _row(0.41, 0.83), 2: _row(0.39, 0.79)}),
        "sft": _entry({0: _row(0.55, 0.30), 1: _row(0.50, 0.35), 2: _row(0.52, 0.33)}),
        "sft-then-grpo": _entry({0: _row(0.61, 0.60), 1: _row(0.60, 0.61), 2: _row(0.57, 0.62)}),
    }
    ks = [1, 2, 4]
    passk = {
        "trapo": {
            "k": ks,
            "mean": [0.6, 0.7, 0.8],
            "per_seed": {"0": [0.6, 0.7, 0.8], "1": [0.62, 0.7, 0.8], "2": [0.58, 0.7, 0.8]},
        },
        "grpo": {
            "k": ks,
            "mean": [0.4, 0.6, 0.85],
            "per_seed": {"0": [0.4, 0.6, 0.85], "1": [0.41, 0.6, 0.86], "2": [0.39, 0.6, 0.84]},
        },
        "sft": {"k": ks, "mean": [0.5, 0.6, 0.7], "per_seed": {s: [0.5, 0.6, 0.7] for s in "012"}},
        "sft-then-grpo": {"k": ks, "mean": [0.5, 0.6, 0.7], "per_seed": {s: [0.5, 0.6, 0.7] for s in "012"}},
    }
    return {"equal_steps": steps, "passk": passk, "retained": ["reverse", "sort"]}


def test_claims_against_a_hand_made_summary():
    claims = claims_table(_summary())
    assert [c["verdict"] for c in claims] == [NOISE, HOLDS, HOLDS, FAILS]
    # 1: d vs sft-then-grpo per seed = -0.01, +0.02, +0.01 -> within noise; best baseline named
    assert "best baseline sft-then-grpo 59.3 ± 2.1" in claims[0]["evidence"]
    assert "d vs grpo: +20.0 ± 1.0 (3/3 seeds)" in claims[0]["evidence"]
    # 2: d vs GRPO = -0.01, -0.01, -0.01 (within 2 points), d vs SFT = +0.5, +0.47, +0.45
    assert "d vs GRPO -1.0 ± 0.0 (0/3 seeds)" in claims[1]["evidence"]
    # 3: lower degenerate and expert-style shares, higher retained than trapo-sft on every seed
    assert claims[2]["evidence"].count("(holds)") == 3
    # 4: grpo is above TRAPO at k = 4 on every seed
    assert "grpo: mean curve below TRAPO's at 2/3 k" in claims[3]["evidence"]


def test_claims_need_trapo_and_a_baseline():
    summary = _summary()
    assert claims_table({"equal_steps": {"trapo": summary["equal_steps"]["trapo"]}}) == []
    del summary["equal_steps"]["trapo-sft"]
    assert claims_table(summary)[2]["verdict"] == MISSING


def test_claims_markdown_is_a_table_with_every_verdict():
    lines = claims_markdown(claims_table(_summary()))
    assert lines[0] == "## The paper's claims"
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| #")]
    assert len(rows) == 4 and rows[3].endswith("| **fails** |")
    assert claims_markdown([]) == []


def test_demo_line_reads_the_published_comparison(tmp_path):
    import json

    from trapo_lab.cli.demo import comparison_line

    path = tmp_path / "results.json"
    assert "trapo compare" in comparison_line(path)  # nothing published: a pointer, no numbers
    path.write_text(json.dumps({**_summary(), "command": "trapo compare --publish"}))
    line = comparison_line(path)
    assert "reproduce: `trapo compare --publish`" in line
    assert line.endswith(": within noise (TRAPO 60.0 ± 2.0, best baseline sft-then-grpo 59.3 ± 2.1).")
