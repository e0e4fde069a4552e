"""`trapo compare` flags → the comparison spec and the report directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from trapo.cli import build_parser
from trapo_lab.cli.compare import report_dir, spec_from_args
from trapo_lab.compare import CompareSpec


def parse(*argv):
    return build_parser().parse_args(["compare", *argv])


def test_quick_flags_become_the_spec():
    spec = spec_from_args(
        parse(
            "--quick",
            "--methods",
            "trapo",
            "grpo",
            "--lrs",
            "2e-5",
            "--lr-for",
            "grpo=1e-5,5e-5",
            "--steps",
            "4",
            "--seeds",
            "3",
            "4",
            "5",
        )
    )
    assert spec.methods == ("trapo", "grpo")
    assert spec.lr_grid == {"trapo": (2e-5,), "grpo": (1e-5, 5e-5)}
    assert (spec.max_steps, spec.seeds, spec.checkpoint_steps) == (4, (3, 4, 5), [2, 4])
    full = spec_from_args(parse())
    assert full == CompareSpec() and len(full.methods) == 7
    sized = spec_from_args(
        parse("--test-per-skill", "7", "--test-per-ood-tier", "0", "--val-per-tier", "9", "--val-per-skill", "3")
    )
    assert (sized.n_test_skill, sized.n_test_ood, sized.n_val_per_tier, sized.n_val_skill) == (7, 0, 9, 3)


def test_sweep_flags_become_the_spec():
    spec = spec_from_args(parse("--sweep-seed", "7", "--lr-extensions", "0", "--seeds", "1", "2"))
    assert (spec.sweep_seed, spec.selection_seed, spec.lr_extensions, spec.seeds) == (7, 7, 0, (1, 2))
    shared = spec_from_args(parse("--sweep-seed", "-1", "--seeds", "4", "5"))
    assert shared.sweep_seed is None and shared.selection_seed == 4  # the first test seed also chooses
    assert parse("--sweep-only").sweep_only and parse("--step-cost", "none").step_cost == "none"


def test_bf16_flag_trains_other_runs(tmp_path):
    from trapo_lab.compare.cache import RunCache, RunKey

    fp32, bf16 = spec_from_args(parse()), spec_from_args(parse("--bf16"))
    assert fp32.config_overrides == {} and bf16.config_overrides == {"bf16": True}
    key = RunKey("trapo", 1e-4, 1)
    where = dict(base_dir=tmp_path / "base", base_identity="b", data_dir=tmp_path / "data", train_identity="d")
    caches = [RunCache(s, tmp_path, **where) for s in (fp32, bf16)]
    assert caches[1].config_for(key).bf16 and not caches[0].config_for(key).bf16
    assert caches[0].run_dir(key) != caches[1].run_dir(key)


def test_default_grids_bracket_sft_higher_than_rl():
    grid = CompareSpec().lr_grid
    assert grid["sft"] == grid["sft-then-grpo"] == (3e-5, 1e-4, 3e-4)
    assert grid["trapo"] == grid["grpo"] == grid["luffy"] == (1e-5, 3e-5, 1e-4)


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
    assert "(default: 1 2 3; quick: 0 1)" in text
    assert "(default: 1e-5 3e-5 1e-4 (sft, sft-then-grpo: 3e-5 1e-4 3e-4); quick: 3e-5 1e-4)" in text
    assert "(default: 200; quick: 6)" in text and "--publish" in text


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


def test_a_bad_beside_stops_the_command_before_anything_runs(tmp_path, capsys):
    from trapo.cli import main

    assert parse("--beside", "a=x.json", "--beside", "b=y.json").beside == ["a=x.json", "b=y.json"]
    missing = tmp_path / "missing.json"
    argv = ["compare", "--data", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs")]
    assert main([*argv, "--beside", f"second base={missing}"]) == 2
    assert f"--beside 'second base={missing}': cannot read {missing}" in capsys.readouterr().err
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()  # nothing was built or trained
