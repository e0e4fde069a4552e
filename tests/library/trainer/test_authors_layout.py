"""The TRAPO authors' data as it is: a verl parquet with the expert solutions in ``extra_info.answer_list``
(``<think>…</think>`` + final text), their prompt template, and a clear stop when no row has an expert."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trapo.cli import main
from trapo.config import TRAPOConfig
from trapo.data import AUTHORS_TEMPLATE, Example, encode_prompt, encode_response, expert_text, load_examples
from trapo.trainer import TRAPOTrainer


def authors_rows(n: int = 4, with_experts: bool = True) -> list[dict]:
    """Rows with exactly the columns and nesting of the authors' training parquet."""
    rows = []
    for i in range(n):
        a, b = 3 + i, 4 + 2 * i
        extra = {"index": i, "split": "train"}
        if with_experts:
            extra["answer_list"] = [
                f"<think>\n{a}+{b}={a + b}\n\nso {a + b}\n\n</think>\n\nThe answer is \\boxed{{{a + b}}}",
                f"<think>{b}+{a}={a + b}</think>\\boxed{{{a + b}}}",
            ]
        rows.append(
            {
                "data_source": "openr1",
                "prompt": [{"role": "user", "content": f"{a}+{b}"}],
                "ability": "math",
                "reward_model": {"ground_truth": str(a + b), "style": "rule"},
                "extra_info": extra,
            }
        )
    return rows


def write_parquet(rows: list[dict], path):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_expert_text_extracts_the_think_block_as_the_authors_do():
    assert expert_text("<think>\n a \n</think>b", "extract") == "a"
    assert expert_text("  no block  ", "extract") == "no block"
    assert expert_text("<think>a</think>b", "keep") == "<think>a</think>b"
    with pytest.raises(ValueError, match="expert_think"):
        expert_text("x", "drop")


def test_answer_list_is_read_with_the_flag_and_as_an_alias(tmp_path):
    path = write_parquet(authors_rows(), tmp_path / "train.parquet")
    for kwargs in ({"expert_key": "extra_info.answer_list"}, {}):
        data = load_examples(path, **kwargs)
        assert [len(ex.expert_solutions) for ex in data.examples] == [2, 2, 2, 2]
        assert data.examples[0].expert_solutions[0].startswith("<think>")
        assert "answer_list" not in data.examples[0].meta  # the solutions are not repeated in meta
        assert data.examples[1].origin == f"{path}:1"
        assert "0 without an expert solution" in data.summary()


def test_authors_layout_trains_with_their_flags(tmp_path, model_dir, tokenizer, capsys):
    path = write_parquet(authors_rows(), tmp_path / "train.parquet")
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--model",
            str(model_dir),
            "--data",
            str(path),
            "--output",
            str(out),
            "--method",
            "trapo",
            "--expert-key",
            "extra_info.answer_list",
            "--expert_think",
            "extract",
            "--prompt-template",
            "trapo",
            "--max_steps",
            "1",
            "--prompts_per_step",
            "2",
            "--max-completion-length",
            "24",
            "--max_prompt_length",
            "200",
            "--prefix_boundary_match",
            "contains",
            "--prefix_boundary_strict",
            "--loss_constant",
            "8192",
            "--entropy_tokens",
            "all",
            "--weight_decay",
            "0.01",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "0 without an expert solution" in printed
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    # the untrained model never solves a problem: every guided level fires (no silent fall-back to pure RL)
    assert metrics["guidance/level_3"] == pytest.approx(1 / 8) and metrics["length/prefix"] > 0
    assert "entropy/response" in metrics  # the entropy bonus over every response token (--entropy_tokens all)
    saved = json.loads((out / "run_config.json").read_text())
    assert saved["loss_constant"] == 8192 and saved["prefix_boundary_strict"] is True

    data = load_examples(path, expert_key="extra_info.answer_list")
    cfg = TRAPOConfig(
        output_dir=str(tmp_path / "r2"),
        expert_think="extract",
        prompt_template="trapo",
        max_prompt_length=200,
        max_completion_length=64,
    )
    from transformers import AutoModelForCausalLM

    trainer = TRAPOTrainer(
        AutoModelForCausalLM.from_pretrained(model_dir),
        processing_class=tokenizer,
        train_dataset=data.examples,
        args=cfg,
    )
    item = trainer.items[0]
    assert item.expert_ids[0] == encode_response(tokenizer, "3+4=7\n\nso 7")  # inside <think>, stripped
    assert item.expert_ids[1] == encode_response(tokenizer, "4+3=7")
    text = AUTHORS_TEMPLATE.format(problem="3+4")
    assert item.prompt_ids == list(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert "system\nYou are a helpful assistant." in text and "within \\boxed{}." in text


def test_a_guided_method_without_expert_solutions_stops_before_any_work(tmp_path, capsys):
    path = write_parquet(authors_rows(with_experts=False), tmp_path / "train.parquet")
    for method in ("trapo", "luffy", "sft", "sft-then-grpo", "trapo-fixed"):
        # the model directory does not exist: the data is checked before the model is loaded
        rc = main(
            [
                "train",
                "--model",
                str(tmp_path / "no-model"),
                "--data",
                str(path),
                "--method",
                method,
                "--output",
                str(tmp_path / "r"),
            ]
        )
        err = capsys.readouterr().err
        assert rc == 2, err
        assert "no column 'extra_info.expert_solutions'" in err and "extra_info.answer_list" in err
        assert "columns found: data_source, prompt, ability, reward_model, reward_model.ground_truth" in err
    assert not (tmp_path / "r").exists()


def test_the_api_refuses_too_and_counts_rows_without_an_expert(tmp_path, tokenizer, model):
    rows = [Example([{"role": "user", "content": "1+1"}], "2")]
    with pytest.raises(ValueError, match="'trapo' trains on expert solutions, but no training row has an expert"):
        TRAPOTrainer(
            model, processing_class=tokenizer, train_dataset=rows, args=TRAPOConfig(output_dir=str(tmp_path / "r"))
        )
    TRAPOTrainer(
        model,
        processing_class=tokenizer,
        train_dataset=rows,
        args=TRAPOConfig(method="grpo", output_dir=str(tmp_path / "g")),
    )  # RL only: fine
    mixed = [*rows, Example([{"role": "user", "content": "2+2"}], "4", ("2+2=4",))]
    trainer = TRAPOTrainer(
        model, processing_class=tokenizer, train_dataset=mixed, args=TRAPOConfig(output_dir=str(tmp_path / "m"))
    )
    assert "1 without an expert solution" in trainer.data_report.summary()


def test_prompt_templates(tmp_path, tokenizer):
    ex = Example([{"role": "system", "content": "S"}, {"role": "user", "content": "2+2"}], "4")
    plain = list(tokenizer("2+2", add_special_tokens=False)["input_ids"])
    assert encode_prompt(tokenizer, ex, "none") == plain
    assert encode_prompt(tokenizer, ex, "chat") != plain  # the tokenizer's chat template
    template = tmp_path / "t.txt"
    template.write_text("Q: {problem}\nA:")
    assert encode_prompt(tokenizer, ex, str(template)) == list(
        tokenizer("Q: 2+2\nA:", add_special_tokens=False)["input_ids"]
    )
    template.write_text("no placeholder")
    with pytest.raises(ValueError, match="no \\{problem\\} placeholder"):
        encode_prompt(tokenizer, ex, str(template))
    with pytest.raises(ValueError, match="not one of chat, none, trapo and not a file"):
        encode_prompt(tokenizer, ex, "qwen")


def test_think_blocks_kept_whole_are_pointed_out(tmp_path, tokenizer, model):
    rows = [Example([{"role": "user", "content": "1+1"}], "2", ("<think>1+1=2</think>\\boxed{2}",))]
    trainer = TRAPOTrainer(
        model, processing_class=tokenizer, train_dataset=rows, args=TRAPOConfig(output_dir=str(tmp_path / "r"))
    )
    assert "1 expert solutions hold <think>...</think>" in trainer.data_report.summary()
