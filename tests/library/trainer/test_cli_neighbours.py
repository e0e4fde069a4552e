"""`trapo train` behaves like its neighbours: defaults in --help, both flag spellings, bare bool switches,
negative numbers, errors that name the typed flag, and clear messages for what is missing."""

from __future__ import annotations

import pytest

from trapo.cli import build_parser, main
from trapo.config import config_fields
from trapo.data import Example, write_examples


def _train_parser():
    return next(a for a in build_parser()._actions if a.dest == "command").choices["train"]


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in config_fields():
        flag = f"--{name}"
        assert flag in out
    assert out.count("(default: ") >= len(config_fields())
    assert "(the paper used 8192). (default: 256)" in out


def test_both_spellings_bare_bools_and_negative_numbers():
    parser = _train_parser()
    args = parser.parse_args(
        [
            "--model",
            "m",
            "--data",
            "d",
            "--prompt_key",
            "q",
            "--answer-key",
            "a",
            "--expert_key",
            "e",
            "--max-steps",
            "3",
            "--learning_rate",
            "-1e-3",
            "--warmup_steps",
            "-1",
            "--bf16",
            "--strict",
            "--scale_rewards",
            "--prefix-boundary-strict",
        ]
    )
    assert (args.prompt_key, args.answer_key, args.expert_key, args.max_steps) == ("q", "a", "e", 3)
    assert args.learning_rate == -1e-3 and args.warmup_steps == -1
    assert args.bf16 is True and args.strict is True and args.prefix_boundary_strict is True
    assert args.scale_rewards == "group"
    assert parser.parse_args(["--model", "m", "--data", "d", "--scale-rewards", "batch"]).scale_rewards == "batch"


@pytest.fixture
def data(tmp_path):
    return write_examples([Example([{"role": "user", "content": "1+1"}], "2", ("1+1=2",))], tmp_path / "t.jsonl")


def test_errors_name_the_flag_as_typed(tmp_path, data, capsys):
    assert main(["train", "--model", "m", "--data", str(data), "--max-steps", "0"]) == 2
    assert "argument --max-steps: --max-steps must be >= 1 (or -1, TRL's default" in capsys.readouterr().err
    assert main(["train", "--model", "m", "--data", str(data), "--learning_rate", "-1e-3"]) == 2
    assert "argument --learning_rate: --learning_rate must be > 0, got -0.001" in capsys.readouterr().err


def test_a_hub_id_is_told_how_to_download(tmp_path, data, capsys):
    assert main(["train", "--model", "Qwen/Qwen2.5-Math-7B", "--data", str(data), "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "'Qwen/Qwen2.5-Math-7B' is not a local directory" in err and "hf download Qwen/Qwen2.5-Math-7B" in err
    assert main(["train", "--model", str(tmp_path), "--data", "org/some-dataset"]) == 2
    assert "looks like a Hugging Face Hub data set id" in capsys.readouterr().err


def test_prompts_longer_than_the_context_are_reported_with_file_and_row(tmp_path, tokenizer, model):
    from trapo.config import TRAPOConfig
    from trapo.data import load_examples
    from trapo.trainer import TRAPOTrainer

    path = write_examples(
        [
            Example([{"role": "user", "content": "1+1"}], "2", ("1+1=2",)),
            Example([{"role": "user", "content": "1+1+1+1+1+1+1+1+1+1"}], "10", ("10",)),
        ],
        tmp_path / "t.jsonl",
    )
    model.config.max_position_embeddings = 12
    cfg = TRAPOConfig(output_dir=str(tmp_path / "r"), max_completion_length=8)
    report = TRAPOTrainer(model, processing_class=tokenizer, train_dataset=load_examples(path), args=cfg).data_report
    assert report.over_context == [1]
    summary = report.summary()
    assert f"1 skipped as longer than the model's context of 12 tokens ({path}:2)" in summary
    assert f"prompt + max_completion_length exceed the model's context of 12 tokens ({path}:1)" in summary
    with pytest.raises(ValueError, match=f"{path}:2: prompt has .* tokens, the model's context is 12"):
        TRAPOTrainer(
            model,
            processing_class=tokenizer,
            train_dataset=load_examples(path),
            args=TRAPOConfig(output_dir=str(tmp_path / "s"), strict=True),
        )


def test_a_missing_extra_is_named(tmp_path, tokenizer, model, monkeypatch):
    import sys

    from trapo.config import TRAPOConfig
    from trapo.trainer import TRAPOTrainer

    monkeypatch.setitem(sys.modules, "peft", None)
    rows = [Example([{"role": "user", "content": "1+1"}], "2", ("1+1=2",))]
    with pytest.raises(ImportError, match=r"needs peft: pip install 'trapo\[lora\]'"):
        TRAPOTrainer(
            model,
            processing_class=tokenizer,
            train_dataset=rows,
            args=TRAPOConfig(output_dir=str(tmp_path / "r"), lora_r=4),
        )


def test_several_rewards_on_the_command_line_are_weighted_and_logged_each(tmp_path, tokenizer, model):
    import json

    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = write_examples([Example([{"role": "user", "content": "1+1"}], "2", ("1+1=2",))], tmp_path / "t.jsonl")
    (tmp_path / "rw.py").write_text(
        "def one(completions, **kw):\n    return [1.0] * len(completions)\n\n"
        "def two(completion, ground_truth):\n    return 2.0\n"
    )
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--model",
            str(model_dir),
            "--data",
            str(data),
            "--output",
            str(out),
            "--method",
            "grpo",
            "--max_steps",
            "1",
            "--prompts_per_step",
            "1",
            "--max_completion_length",
            "8",
            "--reward",
            f"{tmp_path}/rw.py:one",
            f"{tmp_path}/rw.py:two",
            "--reward_weights",
            "1",
            "0.25",
        ]
    )
    assert rc == 0
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["rewards/one"] == 1.0 and metrics["rewards/two"] == 2.0 and metrics["reward/mean"] == 1.5
