"""Load problems from verl parquet or JSONL into :class:`Example` records, validating every row.

Input: one file, a directory (every ``*.parquet`` and ``*.jsonl`` in it, sorted by name) or several of
either. JSONL rows have the same nesting as verl's parquet rows (see :mod:`trapo.data.schema`). Fields are
addressed with dotted keys (``reward_model.ground_truth`` is ``row["reward_model"]["ground_truth"]``; a
top-level column literally named with a dot wins).

What each field may be:

- prompt (``prompt_key``): chat messages ``[{"role", "content"}, ...]`` with at least one user message (the
  problem is the last user message), or a plain string (one user message).
- answer (``answer_key``): a string; a number (``42`` in JSONL) is turned into its string.
- expert solutions (``expert_key``, optional): a list of strings, one string, or chat messages (the
  assistant messages' contents are taken: LUFFY's ``target`` column holds ``[{"role": "assistant", ...}]``).
- ``data_source`` (the file name's stem when absent), ``extra_info`` → :attr:`Example.meta` (null fields and
  the expert solutions themselves are left out).

Aliases, used only while the key is left at its default and the default column is absent: prompt →
``question``, ``problem``; answer → ``answer``, ``ground_truth``; expert solutions → ``target`` (LUFFY),
``expert_solutions``, ``solutions``, ``extra_info.answer_list`` (the TRAPO authors' layout: a list, the
first is the expert solution, the second the one used by the last micro-group; each ``<think>…</think>``
+ final text, see ``TRAPOConfig.expert_think``).

Besides files, a directory written by ``datasets.Dataset.save_to_disk`` is read (needs the ``hf`` extra),
and :func:`examples_from_rows` converts rows already in memory (a ``datasets.Dataset``, a list of dicts).
Each example keeps its row's other columns (:attr:`Example.columns`, for TRL-style rewards) and where it
came from (:attr:`Example.origin`, ``file:row``).

Rows with a missing/empty answer or an empty/malformed prompt are skipped and listed in
:attr:`LoadResult.skipped` (``strict=True`` turns the first one into a ``ValueError`` naming file, row and
field). Rows are numbered from 0 in parquet files and by line number (from 1) in JSONL files. A column that
no row has at all is an error naming the file, the column and the columns found.

Reading files is :mod:`trapo.data.files`, one row's fields :mod:`trapo.data.fields`; this module turns rows
into examples and reports what it skipped.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trapo.data import fields
from trapo.data.fields import ALIASES, DEFAULT_ANSWER_KEY, DEFAULT_EXPERT_KEY, DEFAULT_PROMPT_KEY
from trapo.data.files import expand_paths, read_rows, write_examples
from trapo.data.schema import Example

__all__ = [
    "ALIASES",
    "DEFAULT_ANSWER_KEY",
    "DEFAULT_EXPERT_KEY",
    "DEFAULT_PROMPT_KEY",
    "LoadResult",
    "SkippedRow",
    "examples_from_rows",
    "load_examples",
    "write_examples",
]


@dataclass(frozen=True)
class SkippedRow:
    """A row that was not loaded, and why."""

    file: str
    row: int  # from 0 in parquet files, the line number (from 1) in JSONL files
    field: str
    reason: str

    def __str__(self) -> str:
        where = "line" if self.file.endswith(".jsonl") else "row"
        return f"{self.file}: {where} {self.row}: field {self.field!r}: {self.reason}"


@dataclass
class LoadResult:
    """What :func:`load_examples` read: the examples, the skipped rows and where they came from."""

    examples: list[Example]
    skipped: list[SkippedRow] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    n_rows: int = 0  # rows read, before skipping and de-duplication
    n_merged: int = 0  # rows folded into an earlier identical one by dedupe=True
    origins: list[tuple[str, int]] = field(default_factory=list)  # (file, row) of each example (before dedupe)
    notes: list[str] = field(default_factory=list)  # what directory expansion left out, and why
    expert_key: str | None = None  # the expert-solution key asked for
    expert_keys: dict[str, str | None] = field(default_factory=dict)  # file -> key read (None: no such column)
    columns: dict[str, list[str]] = field(default_factory=dict)  # file -> columns found

    def where(self, index: int) -> str:
        """``file: line N`` / ``file: row N`` of example ``index`` (as in skipped rows)."""
        if index >= len(self.origins):
            return f"example {index}"
        file, row = self.origins[index]
        return f"{Path(file).name}: {'line' if file.endswith('.jsonl') else 'row'} {row}"

    @property
    def without_expert(self) -> int:
        """Examples without an expert solution (guided methods train them RL-only)."""
        return sum(not ex.expert_solutions for ex in self.examples)

    def expert_problem(self) -> str | None:
        """Why no example has an expert solution (the key tried, the columns found), or None when some do."""
        if any(ex.expert_solutions for ex in self.examples):
            return None
        key = self.expert_key
        tried = f"{key!r}" + (f" (and its aliases {', '.join(ALIASES[key])})" if key in ALIASES else "")
        found = list(dict.fromkeys(c for cols in self.columns.values() for c in cols))
        read = {k for k in self.expert_keys.values() if k}
        if read:
            return (
                f"no row has an expert solution: column(s) {', '.join(sorted(read))} are empty in every row "
                f"(tried {tried})"
            )
        return (
            f"no row has an expert solution: no column {tried} in {', '.join(self.files) or 'the data'}; "
            f"columns found: {', '.join(found) or 'none'}. Name the column with --expert-key "
            f"(the TRAPO authors' data: --expert-key extra_info.answer_list)"
        )

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self):
        return iter(self.examples)

    def summary(self, max_rows: int = 5) -> str:
        """One paragraph: how many examples from how many rows and files, and what was skipped (first rows)."""
        text = f"loaded {len(self.examples)} examples from {self.n_rows} rows in {len(self.files)} file(s)"
        if self.notes:
            text += " (" + "; ".join(self.notes) + ")"
        text += f"; {self.without_expert} without an expert solution"
        read = sorted({k for k in self.expert_keys.values() if k})
        if read:
            text += f" (expert solutions from {', '.join(map(repr, read))})"
        if self.n_merged:
            text += f"; merged {self.n_merged} repeated rows (same prompt and answer)"
        if not self.skipped:
            return text + "; skipped none"
        reasons = Counter((s.field, s.reason) for s in self.skipped)
        parts = []
        for (fld, reason), count in reasons.items():
            rows = [s for s in self.skipped if (s.field, s.reason) == (fld, reason)]
            shown = ", ".join(f"{Path(s.file).name}:{s.row}" for s in rows[:max_rows])
            more = ", ..." if len(rows) > max_rows else ""
            parts.append(f"{count} with {fld!r} {reason} ({shown}{more})")
        return f"{text}; skipped {len(self.skipped)} rows: " + "; ".join(parts)


Converted = tuple[list[Example], list[SkippedRow], int, "str | None", list[str], list[tuple[str, int]]]


class _Rows:
    """The rows of one file being converted, and the rows skipped so far (``strict``: the first is an error)."""

    def __init__(self, file: str, strict: bool):
        self.file, self.strict = file, strict
        self.skipped: list[SkippedRow] = []

    def skip(self, row: int, fld: str, reason: str) -> None:
        entry = SkippedRow(self.file, row, fld, reason)
        if self.strict:
            raise ValueError(str(entry))
        self.skipped.append(entry)

    def objects(self, raw: Sequence[tuple[int, Any]]) -> list[tuple[int, dict]]:
        """The rows that are JSON objects; the others skipped."""
        rows = []
        for number, row in raw:
            if isinstance(row, json.JSONDecodeError):
                self.skip(number, "<row>", f"is not valid JSON ({row.msg})")
            elif not isinstance(row, dict):
                self.skip(number, "<row>", f"is a JSON {type(row).__name__}, not an object")
            else:
                rows.append((number, row))
        return rows


def _keys(dicts: Sequence[dict], file: str, prompt_key: str, answer_key: str | None, expert_key: str | None):
    """The (prompt, answer, expert) keys to read from these rows (defaults fall back to their aliases)."""
    p_key = fields.resolve_key(dicts, prompt_key, DEFAULT_PROMPT_KEY, file, required=True)
    a_key = (
        fields.resolve_key(dicts, answer_key, DEFAULT_ANSWER_KEY, file, required=True)
        if answer_key
        else fields.resolve_key(dicts, DEFAULT_ANSWER_KEY, DEFAULT_ANSWER_KEY, file, required=False)
    )
    e_key = fields.resolve_key(dicts, expert_key, DEFAULT_EXPERT_KEY, file, required=False) if expert_key else None
    return p_key, a_key, e_key


def _example(
    rows: _Rows, number: int, row: dict, keys: tuple[str, str | None, str | None], answer_required: bool, stem: str
) -> Example | None:
    """One row as an :class:`Example`, or None (the row is skipped, with the field and the reason)."""
    p_key, a_key, e_key = keys
    prompt, why = fields.prompt(fields.get(row, p_key))
    if prompt is None:
        return rows.skip(number, p_key, why)
    answer, why = fields.answer(fields.get(row, a_key)) if a_key else ("", "")
    if answer is None:
        if answer_required:
            return rows.skip(number, a_key, why)
        answer = ""
    experts, why = fields.experts(fields.get(row, e_key)) if e_key else ((), "")
    if experts is None:
        return rows.skip(number, e_key, why)
    source = row.get("data_source")
    return Example(
        prompt=prompt,
        answer=answer,
        expert_solutions=experts,
        data_source=source if isinstance(source, str) and source else stem,
        meta=fields.meta(row, e_key),
        columns={k: v for k, v in row.items() if k != p_key.split(".")[0]},
        origin=f"{rows.file}:{number}",
    )


def _convert(
    raw: Sequence[tuple[int, Any]],
    file: str,
    stem: str,
    prompt_key: str,
    answer_key: str | None,
    expert_key: str | None,
    strict: bool,
) -> Converted:
    """Rows (numbered) to examples: (examples, skipped, rows read, expert key read, columns found, origins).
    ``answer_key=None``: the answer is optional (a TRL data set whose reward reads its own columns)."""
    rows = _Rows(file, strict)
    objects = rows.objects(raw)
    if not objects:
        return [], rows.skipped, len(raw), None, [], []
    dicts = [r for _, r in objects]
    keys = _keys(dicts, file, prompt_key, answer_key, expert_key)
    examples, origins = [], []
    for number, row in objects:
        example = _example(rows, number, row, keys, bool(answer_key), stem)
        if example is not None:
            examples.append(example)
            origins.append((file, number))
    return examples, rows.skipped, len(raw), keys[2], fields.column_names(dicts), origins


def examples_from_rows(
    rows: Iterable[dict],
    *,
    prompt_key: str = DEFAULT_PROMPT_KEY,
    answer_key: str | None = None,
    expert_key: str | None = DEFAULT_EXPERT_KEY,
    strict: bool = False,
    name: str = "train_dataset",
) -> LoadResult:
    """Examples from rows in memory (a ``datasets.Dataset``, a list of dicts) by the rules of the module
    docstring. TRL's flat rows work as they are: ``prompt`` (a string or chat messages), the expert
    solutions in ``expert_solutions`` (a string or a list of strings; the default key's alias), and the
    reward's own columns, kept in :attr:`Example.columns`. ``answer_key=None`` (the default here) makes the
    answer optional: ``reward_model.ground_truth`` or an alias where present, else ``""``."""
    raw = list(enumerate(rows.to_list() if hasattr(rows, "to_list") else rows))
    examples, skipped, n_rows, e_key, columns, origins = _convert(
        raw, name, name, prompt_key, answer_key, expert_key, strict
    )
    result = LoadResult(
        examples,
        skipped,
        [name],
        n_rows,
        origins=origins,
        expert_key=expert_key,
        expert_keys={name: e_key},
        columns={name: columns},
    )
    if not result.examples:
        raise ValueError(f"no usable examples in {name}: {result.summary()}")
    return result


def _dedupe(examples: list[Example]) -> tuple[list[Example], int]:
    """Merge examples with the same data source, prompt and answer; ``meta["repeats"]`` counts the rows."""
    merged: dict[tuple, Example] = {}
    counts: Counter = Counter()
    for ex in examples:
        key = (ex.data_source, json.dumps(ex.prompt, sort_keys=True), ex.answer)
        counts[key] += 1
        if key not in merged:
            merged[key] = ex
        else:
            first = merged[key]
            experts = tuple(dict.fromkeys(first.expert_solutions + ex.expert_solutions))
            merged[key] = replace(first, expert_solutions=experts)
    out = [replace(ex, meta={**ex.meta, "repeats": counts[key]}) for key, ex in merged.items()]
    return out, len(examples) - len(out)


def load_examples(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    prompt_key: str = DEFAULT_PROMPT_KEY,
    answer_key: str = DEFAULT_ANSWER_KEY,
    expert_key: str | None = DEFAULT_EXPERT_KEY,
    strict: bool = False,
    dedupe: bool = False,
    split: str | None = None,
) -> LoadResult:
    """Read problems from verl parquet / JSONL files or directories (the rules are in the module docstring).

    Args:
        paths: a file, a directory, or several of either.
        prompt_key, answer_key, expert_key: dotted keys of the prompt, the ground-truth answer and the
            expert solutions (``expert_key=None``: don't read expert solutions).
        strict: raise ``ValueError`` on the first bad row instead of skipping it.
        dedupe: merge rows with the same data source, prompt and answer (AIME and AMC are stored 32 times
            each for avg@32), recording the number of rows in ``meta["repeats"]``.
        split: for directories whose file names name splits (``train``, ``val``, ``test`` ...), read only
            this split's files (``trapo train`` passes ``"train"``); a directory without one is an error.
            Either way, a JSONL file with the same name as a parquet file in the directory is skipped.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: an unreadable file, a column no row has, a bad row under ``strict``, or no examples at all.
    """
    result = LoadResult(examples=[], expert_key=expert_key)
    for path in expand_paths(paths, split, result.notes):
        examples, skipped, n_rows, e_key, columns, origins = _convert(
            read_rows(path), str(path), path.stem, prompt_key, answer_key, expert_key, strict
        )
        result.expert_keys[str(path)] = e_key
        result.columns[str(path)] = columns
        result.examples.extend(examples)
        result.origins.extend(origins)
        result.skipped.extend(skipped)
        result.files.append(str(path))
        result.n_rows += n_rows
    if dedupe:
        result.examples, result.n_merged = _dedupe(result.examples)
    if not result.examples:
        raise ValueError(f"no usable examples in {', '.join(result.files)}: {result.summary()}")
    return result
