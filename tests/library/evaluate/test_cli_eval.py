"""`trapo eval` end to end through trapo.cli.main on a tiny random model."""

from __future__ import annotations

import json

from trapo.cli import main
from trapo.data import Example, write_examples


def data_file(tmp_path):
    examples = [
        Example(prompt=[{"role": "user", "content": f"What is {i}+1?"}], answer=str(i + 1), data_source="toy")
        for i in range(3)
    ]
    # each problem stored 4 times, as AIME is stored 32 times: eval merges the repeats
    return write_examples([ex for ex in examples for _ in range(4)], tmp_path / "toy.jsonl")


def test_trapo_eval_end_to_end(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "results" / "eval.json"
    rc = main(
        [
            "eval",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(data_file(tmp_path)),
            "--k",
            "3",
            "--max-tokens",
            "5",
            "--limit",
            "2",
            "--output",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert "| toy | 2 |" in captured.out and "avg@3" in captured.out
    assert "merged 9 repeated rows" in captured.err
    result = json.loads(out.read_text())
    assert result["settings"]["model"] == str(tiny_model_dir) and result["k"] == 3
    assert result["overall"]["n_problems"] == 2 and len(result["problems"][0]["correct"]) == 3


def test_trapo_eval_reports_bad_input(tiny_model_dir, tmp_path, capsys):
    rc = main(["eval", "--model", str(tiny_model_dir), "--data", str(tmp_path / "missing.jsonl")])
    assert rc == 2 and "missing.jsonl" in capsys.readouterr().err
    rc = main(["eval", "--model", str(tmp_path / "no_model"), "--data", str(data_file(tmp_path))])
    assert rc == 2 and "no_model" in capsys.readouterr().err
    rc = main(["eval", "--model", str(tiny_model_dir), "--data", str(data_file(tmp_path)), "--k", "0"])
    assert rc == 2 and "--k must be >= 1" in capsys.readouterr().err


def test_trapo_eval_help_explains_the_metrics(capsys):
    try:
        main(["eval", "--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    text = capsys.readouterr().out
    assert "avg@k" in text and "pass@k" in text and "32" in text


def test_trapo_eval_sets_threads_and_shows_progress(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        rc = main(
            [
                "eval",
                "--model",
                str(tiny_model_dir),
                "--data",
                str(data_file(tmp_path)),
                "--k",
                "2",
                "--max-tokens",
                "4",
                "--device",
                "cpu",
                "--threads",
                "1",
            ]
        )
        assert rc == 0 and torch.get_num_threads() == 1
        err = capsys.readouterr().err
        assert "torch threads: 1" in err and "6/6" in err and "tokens" in err  # the bar: samples and tokens
    finally:
        torch.set_num_threads(before)


def test_threads_default_and_validation(monkeypatch):
    import pytest

    from trapo.cli.threads import DEFAULT_THREADS, resolve_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert resolve_threads(None) == DEFAULT_THREADS == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads(None) == 3 and resolve_threads(2) == 2 and resolve_threads(0) == 0
    with pytest.raises(ValueError, match="--threads"):
        resolve_threads(-1)
