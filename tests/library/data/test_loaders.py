"""load_examples / write_examples: formats, keys, aliases, every bad-input case with file/row/field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trapo.data import Example, LoadResult, SkippedRow, examples_from_rows, load_examples, write_examples

BENCHMARKS = Path(__file__).resolve().parents[3] / ".." / "shared" / "benchmarks"


def row(question: str, answer, experts=None, source: str = "toy", **extra) -> dict:
    extra_info = {"index": extra.pop("index", 0), "split": "train", **extra}
    if experts is not None:
        extra_info["expert_solutions"] = experts
    return {
        "data_source": source,
        "prompt": [{"role": "user", "content": question}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": extra_info,
    }


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


GOOD = [row("1+1?", "2", ["1+1=2"], index=0), row("2+3?", "5", ["2+3=5", "3+2=5"], index=1)]


def test_jsonl_and_parquet_give_equal_examples(tmp_path):
    a = load_examples(write_jsonl(tmp_path / "a.jsonl", GOOD))
    b = load_examples(write_parquet(tmp_path / "b.parquet", GOOD))
    assert a.examples == b.examples
    assert a.examples[1] == Example(
        prompt=[{"role": "user", "content": "2+3?"}],
        answer="5",
        expert_solutions=("2+3=5", "3+2=5"),
        data_source="toy",
        meta={"index": 1, "split": "train"},
    )


def test_write_then_load_round_trips(tmp_path):
    examples = load_examples(write_jsonl(tmp_path / "a.jsonl", GOOD)).examples
    for name in ("out.parquet", "sub/out.jsonl"):
        path = write_examples(examples, tmp_path / name)
        assert load_examples(path).examples == examples
        assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # temp file renamed away
    with pytest.raises(ValueError, match=r"unsupported file type '\.csv'"):
        write_examples(examples, tmp_path / "out.csv")


def test_directory_and_several_files(tmp_path):
    write_jsonl(tmp_path / "one.jsonl", GOOD[:1])
    write_parquet(tmp_path / "two.parquet", GOOD[1:])
    (tmp_path / "notes.txt").write_text("ignored")
    from_dir = load_examples(tmp_path)
    assert [e.answer for e in from_dir] == ["2", "5"] and len(from_dir.files) == 2
    from_list = load_examples([tmp_path / "one.jsonl", tmp_path / "two.parquet"])
    assert from_list.examples == from_dir.examples


def test_plain_string_prompts_and_flat_keys(tmp_path):
    path = write_jsonl(tmp_path / "flat.jsonl", [{"question": "What is 6*7?", "final": 42, "sol": "6*7=42"}])
    result = load_examples(path, prompt_key="question", answer_key="final", expert_key="sol")
    ex = result.examples[0]
    assert ex.prompt == [{"role": "user", "content": "What is 6*7?"}]
    assert ex.answer == "42" and ex.expert_solutions == ("6*7=42",)
    assert ex.data_source == "flat"  # the file stem when there is no data_source column


def test_default_key_aliases_and_luffy_target(tmp_path):
    rows = [{"problem": "1+1?", "answer": "2", "target": [{"role": "assistant", "content": "1+1=2"}]}]
    ex = load_examples(write_jsonl(tmp_path / "luffy.jsonl", rows)).examples[0]
    assert (ex.prompt_text, ex.answer, ex.expert_solutions) == ("1+1?", "2", ("1+1=2",))


def test_dotted_keys_reach_nested_fields(tmp_path):
    rows = [{"q": {"text": "1+1?"}, "meta": {"gold": {"value": "2"}}}]
    ex = load_examples(
        write_jsonl(tmp_path / "n.jsonl", rows), prompt_key="q.text", answer_key="meta.gold.value"
    ).examples[0]
    assert ex.answer == "2" and ex.prompt_text == "1+1?"


def test_bad_rows_are_skipped_and_counted(tmp_path):
    rows = [
        GOOD[0],
        row("no answer", None),  # line 2
        row("", "3"),  # line 3: empty prompt
        "{not json",  # line 4
        row("empty answer", "  "),  # line 5
        {**GOOD[1], "prompt": [{"role": "user"}]},  # line 6: malformed message
        [1, 2],  # line 7
        GOOD[1],
    ]
    result = load_examples(write_jsonl(tmp_path / "bad.jsonl", rows))
    assert isinstance(result, LoadResult) and [e.answer for e in result] == ["2", "5"]
    file = str(tmp_path / "bad.jsonl")
    assert result.skipped == [
        SkippedRow(file, 4, "<row>", "is not valid JSON (Expecting property name enclosed in double quotes)"),
        SkippedRow(file, 7, "<row>", "is a JSON list, not an object"),
        SkippedRow(file, 2, "reward_model.ground_truth", "is missing"),
        SkippedRow(file, 3, "prompt", "is empty"),
        SkippedRow(file, 5, "reward_model.ground_truth", "is empty"),
        SkippedRow(file, 6, "prompt", "message 0 is not a {'role': str, 'content': str} dict"),
    ]
    summary = result.summary()
    assert "loaded 2 examples from 8 rows in 1 file(s)" in summary
    assert "2 with 'reward_model.ground_truth' is missing (bad.jsonl:2)" not in summary  # counted per reason
    assert "1 with 'reward_model.ground_truth' is missing (bad.jsonl:2)" in summary
    assert "skipped 6 rows" in summary


@pytest.mark.parametrize(
    ("fmt", "bad", "field", "reason"),
    [
        ("parquet", row("no answer", None), "reward_model.ground_truth", "is missing"),
        ("parquet", row("   ", "3"), "prompt", "is empty"),
        (
            "jsonl",
            row("list answer", ["1", "2"]),
            "reward_model.ground_truth",
            "must be a string or a number, got list",
        ),
        (
            "jsonl",
            row("bad experts", "1", experts=[1, 2]),
            "extra_info.expert_solutions",
            "item 0 is a int, not a string",
        ),
        (
            "jsonl",
            {"prompt": 7, "reward_model": {"ground_truth": "1"}},
            "prompt",
            "must be chat messages or a string, got int",
        ),
    ],
)
def test_strict_names_file_row_and_field(tmp_path, fmt, bad, field, reason):
    # the bad row comes second: row 1 in parquet (numbered from 0), line 2 in JSONL
    if fmt == "parquet":
        path, where = write_parquet(tmp_path / "strict.parquet", [GOOD[0], bad]), "row 1"
    else:
        path, where = write_jsonl(tmp_path / "strict.jsonl", [GOOD[0], bad]), "line 2"
    with pytest.raises(ValueError) as err:
        load_examples(path, strict=True)
    assert str(err.value) == f"{path}: {where}: field {field!r}: {reason}"
    assert len(load_examples(path).skipped) == 1  # not strict: skipped and counted


def test_missing_column_lists_the_columns_found(tmp_path):
    path = write_jsonl(tmp_path / "cols.jsonl", [{"query": "1+1?", "reward_model": {"gt": "2"}}])
    with pytest.raises(ValueError) as err:
        load_examples(path)
    message = str(err.value)
    assert message.startswith(f"{path}: no column 'prompt'")
    assert "columns found: query, reward_model, reward_model.gt" in message
    with pytest.raises(ValueError, match=r"no column 'answer_here'; columns found: query"):
        load_examples(path, prompt_key="query", answer_key="answer_here")


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.parquet"):
        load_examples(tmp_path / "missing.parquet")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"data\.csv: unsupported file type '\.csv'"):
        load_examples(tmp_path / "data.csv")
    (tmp_path / "corrupt.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"corrupt\.parquet: cannot read as parquet"):
        load_examples(tmp_path / "corrupt.parquet")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(ValueError, match=r"empty: directory has no"):
        load_examples(empty_dir)


def test_empty_result_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "none.jsonl", [row("q", None), row("q2", "")])
    with pytest.raises(ValueError, match=r"no usable examples in .*none\.jsonl.*skipped 2 rows"):
        load_examples(path)


def test_dedupe_merges_repeats_and_counts_them(tmp_path):
    rows = [row("1+1?", "2", index=i) for i in range(32)] + [GOOD[1], row("1+1?", "2", source="other")]
    result = load_examples(write_parquet(tmp_path / "rep.parquet", rows), dedupe=True)
    assert [(e.data_source, e.answer, e.meta["repeats"]) for e in result] == [
        ("toy", "2", 32),
        ("toy", "5", 1),
        ("other", "2", 1),
    ]
    assert result.examples[0].meta["index"] == 0 and result.n_merged == 31
    assert "merged 31 repeated rows" in result.summary()
    assert len(load_examples(tmp_path / "rep.parquet")) == 34


def test_real_benchmarks_load_and_dedupe():
    if not BENCHMARKS.is_dir():
        pytest.skip(f"the shared benchmarks are not at {BENCHMARKS}")
    result = load_examples(BENCHMARKS, dedupe=True)
    counts: dict[str, int] = {}
    for ex in result:
        counts[ex.data_source] = counts.get(ex.data_source, 0) + 1
    assert counts == {"aime": 30, "aime25": 30, "amc": 83, "math": 500, "minerva": 272, "olympiad_bench": 675}
    assert not result.skipped and result.n_rows == 6023
    aime = next(e for e in result if e.data_source == "aime")
    assert aime.meta["repeats"] == 32 and aime.prompt[0]["role"] == "system"


def test_several_candidate_expert_columns_stop_and_name_them(tmp_path):
    """LUFFY's `target` beside the authors' `extra_info.answer_list`: which one is the user's call."""
    rows = [{"prompt": "1+1", "answer": "2", "target": "t", "extra_info": {"answer_list": ["a"]}}]
    with pytest.raises(
        ValueError, match=r"several that may hold the expert solutions: target, extra_info\.answer_list"
    ):
        examples_from_rows(rows)
    chosen = examples_from_rows(rows, expert_key="extra_info.answer_list")
    assert chosen.examples[0].expert_solutions == ("a",) and "from 'extra_info.answer_list'" in chosen.summary()
    assert examples_from_rows(rows, expert_key="target").examples[0].expert_solutions == ("t",)


def test_prompt_text_is_the_last_user_message_whatever_follows_it(tmp_path):
    """A trailing system or assistant message is not the problem (issue 24 #4), in every prompt template."""
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an earlier answer"},
        {"role": "user", "content": "2+2"},
        {"role": "assistant", "content": "Let me think."},
    ]
    ex = Example(prompt=messages, answer="4")
    assert ex.prompt_text == "2+2"
    assert Example(prompt=[{"role": "system", "content": "x"}], answer="4").prompt_text == ""
    data = write_jsonl(tmp_path / "d.jsonl", [{**row("q", "4"), "prompt": messages}])
    assert load_examples(data).examples[0].prompt_text == "2+2"


def test_a_prompt_without_a_user_message_is_skipped_naming_the_roles(tmp_path):
    only_system = {**row("q", "4"), "prompt": [{"role": "system", "content": "you are helpful"}]}
    data = write_jsonl(tmp_path / "d.jsonl", [row("ok", "1"), only_system])
    loaded = load_examples(data)
    assert [ex.prompt_text for ex in loaded.examples] == ["ok"]
    (skip,) = loaded.skipped
    assert (skip.row, skip.field) == (2, "prompt")
    assert "no user message" in skip.reason and "system" in skip.reason
    with pytest.raises(ValueError, match=r"d.jsonl: line 2: field 'prompt': has no user message"):
        load_examples(data, strict=True)
