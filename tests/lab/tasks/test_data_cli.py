"""`trapo data make | show` end to end through the real argparse entry point."""

from __future__ import annotations

import json

import pytest

from trapo.cli import main

SMALL = [
    "--n-train",
    "40",
    "--n-val-per-tier",
    "3",
    "--n-test-per-tier",
    "4",
    "--n-skill-val",
    "2",
    "--n-skill-test",
    "2",
]


def test_data_make_and_show(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["data", "make", "--output", str(out), "--seed", "1", *SMALL]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 1 and manifest["config"]["n_train"] == 40
    assert manifest["counts"]["test"] == {f"arith-t{t}": 4 for t in range(1, 6)}
    printed = capsys.readouterr().out
    assert "train.parquet" in printed and "arith-t3" in printed
    assert main(["data", "show", "--output", str(out), "--examples", "1"]) == 0
    assert "expert 1:" in capsys.readouterr().out
    native = tmp_path / "native"
    assert main(["data", "make", "-o", str(native), *SMALL, "--task", "place-value", "--expert-style", "native"]) == 0
    config = json.loads((native / "manifest.json").read_text())["config"]
    assert config["expert_style"] == "native" and config["task"] == "place-value"
    assert main(["data", "make", "-o", str(tmp_path / "bad"), *SMALL, "--expert-style", "native"]) == 2
    assert "expert_style" in capsys.readouterr().err  # the shortcut task has one expert style


def test_data_make_default_is_the_shortcut_task_with_an_ood_column(tmp_path):
    out = tmp_path / "data"
    assert main(["data", "make", "-o", str(out), *SMALL]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["task"] == "shortcut"
    assert manifest["counts"]["val_ood"] == {"ood-t6": 3, "ood-t7": 3}
    assert manifest["counts"]["test_ood"] == {"ood-t6": 4, "ood-t7": 4}
    assert all((out / f"{name}.parquet").is_file() for name in ("val_ood", "test_ood"))
    old = tmp_path / "old"
    assert main(["data", "make", "-o", str(old), *SMALL, "--task", "place-value"]) == 0
    assert not (old / "val_ood.parquet").exists()


def test_data_make_tier_weights_and_errors(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["data", "make", "-o", str(out), *SMALL, "--train-tier-weights", "0", "0", "1", "1", "0"]) == 0
    counts = json.loads((out / "manifest.json").read_text())["counts"]["train"]
    assert counts == {"arith-t3": 20, "arith-t4": 20}
    # different options into the same directory: a clear error naming it, exit status 2
    assert main(["data", "make", "-o", str(out), *SMALL, "--seed", "5"]) == 2
    assert str(out) in capsys.readouterr().err
    assert main(["data", "make", "-o", str(out), *SMALL, "--seed", "5", "--force"]) == 0
    assert main(["data", "make", "-o", str(tmp_path / "x"), "--n-train", "0"]) == 2
    assert "n_train" in capsys.readouterr().err
    assert main(["data", "show", "-o", str(tmp_path / "missing")]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_data_help_explains_outputs(capsys):
    with pytest.raises(SystemExit):
        main(["data", "make", "--help"])
    text = capsys.readouterr().out
    assert "parquet" in text and "expert_solutions" in text and "--force" in text
