"""Hugging Face ``datasets`` as training data (the ``hf`` extra): a Dataset in memory and a ``save_to_disk``
directory given to ``--data``; a Hub id gets a message saying how to download it first."""

from __future__ import annotations

import pytest

from trapo.data import examples_from_rows, load_examples

ROWS = [
    {"prompt": "1+1", "solution": "2", "expert_solutions": ["1+1=2"]},
    {"prompt": [{"role": "user", "content": "2+2"}], "solution": "4", "expert_solutions": "2+2=4"},
]


def test_a_dataset_in_memory_and_a_save_to_disk_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    flat = [ROWS[0], {**ROWS[0], "prompt": "3+3", "expert_solutions": ["3+3=6", "6"]}]
    data = datasets.Dataset.from_list(flat)
    examples = examples_from_rows(data).examples
    assert [ex.expert_solutions for ex in examples] == [("1+1=2",), ("3+3=6", "6")]
    assert examples[0].columns["solution"] == "2" and examples[0].answer == ""
    data.save_to_disk(str(tmp_path / "ds"))
    loaded = load_examples(tmp_path / "ds", answer_key="solution")
    assert [ex.answer for ex in loaded.examples] == ["2", "2"] and loaded.files == [str(tmp_path / "ds")]
    datasets.DatasetDict({"train": data}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_examples(tmp_path / "dd", answer_key="solution")) == 2


def test_flat_rows_take_a_string_or_a_list_and_chat_or_text_prompts():
    examples = examples_from_rows(ROWS).examples
    assert [ex.expert_solutions for ex in examples] == [("1+1=2",), ("2+2=4",)]
    assert examples[0].prompt == [{"role": "user", "content": "1+1"}] and examples[1].prompt_text == "2+2"


def test_a_hub_id_is_not_fetched():
    with pytest.raises(FileNotFoundError, match="looks like a Hugging Face Hub data set id"):
        load_examples("open-r1/OpenR1-Math-220k")
