"""`trapo compare` flags → the comparison spec and the report directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from trapo.cli import build_parser
from trapo_lab.cli.compare import report_dir, spec_from_args


def parse(*argv):
    return build_parser().parse_args(["compare", *argv])


def test_quick_flags_become_the_spec():
    spec = spec_from_args(parse("--quick", "--methods", "trapo", "grpo", "--lrs", "2e-5", "--lr-for",
                                "grpo=1e-5,5e-5", "--steps", "4", "--seeds", "3", "4", "5"))
    assert spec.methods == ("trapo", "grpo")
    assert spec.lr_grid == {"trapo": (2e-5,), "grpo": (1e-5, 5e-5)}
    assert (spec.max_steps, spec.seeds, spec.checkpoint_steps) == (4, (3, 4, 5), [2, 4])
    full = spec_from_args(parse())
    assert full.max_steps == 300 and full.n_test_per_tier == 500 and len(full.methods) == 7


@pytest.mark.parametrize("item", ["grpo", "ppo=1e-5", "grpo=fast"])
def test_bad_lr_for_is_a_clear_error(item):
    with pytest.raises(ValueError, match="--lr-for"):
        spec_from_args(parse("--lr-for", item))


def test_help_says_what_it_runs_and_that_it_resumes(capsys):
    with pytest.raises(SystemExit):
        parse("--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "validation" in text.lower() and "resum" in text.lower() and "--quick" in text
    # the defaults in the help are the spec's
    assert "(default: 0 1 2; quick: 0 1)" in text and "(default: 1e-5 3e-5 1e-4; quick: 3e-5 1e-4)" in text
    assert "(default: 300; quick: 6)" in text and "--publish" in text


def test_the_report_goes_to_the_runs_directory_unless_published():
    assert report_dir(parse()) == Path("runs/compare/report")
    assert report_dir(parse("--quick", "--runs-dir", "my-runs")) == Path("my-runs/report-quick")
    assert report_dir(parse("--publish")) == Path("docs/results/compare")
    assert report_dir(parse("--quick", "--publish")) == Path("docs/results/compare_quick")
    assert report_dir(parse("--quick", "--out", "elsewhere")) == Path("elsewhere")


def test_out_and_publish_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        parse("--publish", "--out", "elsewhere")
    assert "not allowed with" in capsys.readouterr().err
