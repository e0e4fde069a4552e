"""`trapo eval` end to end through trapo.cli.main on a tiny random model."""

from __future__ import annotations

import json

import pytest

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


def _eval(model, data, *extra) -> list[str]:
    return ["eval", "--model", str(model), "--data", str(data), "--max-tokens", "3", "--no-progress", *extra]


def test_eval_checks_its_output_before_generating(tiny_model_dir, tmp_path, capsys):
    """Issue 24 #9: no silent overwrite, no second writer, an unwritable path found before any work."""
    from trapo.locking import FileLock

    data = data_file(tmp_path)
    out = tmp_path / "eval.json"
    out.write_text('{"another": "run"}')
    assert main(_eval(tiny_model_dir, data, "--output", str(out))) == 2
    assert "already exists (another evaluation's result?); pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == '{"another": "run"}'
    with FileLock(tmp_path / ".eval.json.lock", "x"):  # another eval is writing it
        assert main(_eval(tiny_model_dir, data, "--output", str(out), "--overwrite")) == 2
    assert "is in use by another trapo process" in capsys.readouterr().err
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(_eval(tiny_model_dir, data, "--output", str(blocker / "eval.json"))) == 2
    err = capsys.readouterr().err
    assert "a_file" in err and "Traceback" not in err and "torch threads" not in err  # nothing generated
    assert main(_eval(tiny_model_dir, data, "--output", str(out), "--overwrite")) == 0
    assert json.loads(out.read_text())["k"] == 1
    assert not (tmp_path / ".eval.json.lock").exists()


def test_eval_reads_only_the_test_files_of_a_split_directory(tiny_model_dir, tmp_path, capsys):
    splits = tmp_path / "splits"
    splits.mkdir()
    for split, n in (("train", 5), ("val", 4), ("test", 2)):
        write_examples(
            [Example(prompt=[{"role": "user", "content": f"{split} {i}"}], answer="1") for i in range(n)],
            splits / f"{split}.jsonl",
        )
    assert main(_eval(tiny_model_dir, splits)) == 0
    captured = capsys.readouterr()
    assert "used the test file(s) of splits/ only" in captured.err and "| **all problems** | 2 |" in captured.out
    assert main(_eval(tiny_model_dir, splits, "--split", "val")) == 0
    assert "| **all problems** | 4 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--group-by", "data_sorce"], "--group-by 'data_sorce': no problem has it; choose one of data_source"),
        (["--device", "cuda"], "--device cuda: no CUDA GPU is available here"),
        (["--device", "gpu0"], "--device 'gpu0' is not a torch device"),
        (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--output", "."], "is a directory; name a file"),
    ],
    ids=["group_by_typo", "cuda_without_gpu", "device_garbled", "nan_temperature", "top_p_zero", "output_dir"],
)
def test_eval_refuses_bad_flags_before_generating(tiny_model_dir, tmp_path, capsys, flags, message):
    import torch

    if "cuda" in flags and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(_eval(tiny_model_dir, data_file(tmp_path), *flags)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
