"""Load problems from verl parquet or JSONL into :class:`Example` records, validating every row.

Input: one file, a directory (every ``*.parquet`` and ``*.jsonl`` in it, sorted by name) or several of
either. JSONL rows have the same nesting as verl's parquet rows (see :mod:`trapo.data.schema`). Fields are
addressed with dotted keys (``reward_model.ground_truth`` is ``row["reward_model"]["ground_truth"]``; a
top-level column literally named with a dot wins).

What each field may be:

- prompt (``prompt_key``): chat messages ``[{"role", "content"}, ...]`` or a plain string (one user message).
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
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trapo.data.columns import (
    ALIASES,
    DEFAULT_ANSWER_KEY,
    DEFAULT_EXPERT_KEY,
    DEFAULT_PROMPT_KEY,
)
from trapo.data.columns import (
    MISSING as _MISSING,
)
from trapo.data.columns import (
    column_names as _column_names,
)
from trapo.data.columns import (
    get_value as _get,
)
from trapo.data.columns import (
    resolve_key as _resolve_key,
)
from trapo.data.schema import Example

HF_DATASET_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")
SUFFIXES = (".parquet", ".jsonl")


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


def _read_parquet(path: Path) -> list[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:
        raise ValueError(f"{path}: cannot read as parquet: {err}") from err
    return list(enumerate(table.to_pylist()))


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read: {err}") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            rows.append((number, err))
    return rows


SPLIT_NAMES = ("train", "val", "validation", "valid", "dev", "test", "eval")


def _split_of(stem: str) -> str | None:
    """The split a file name says it holds (``train``, ``val_skills``, ``test-00000-of-00002`` ...), or None."""
    head = stem.lower().replace("-", "_").split("_")[0]
    return head if head in SPLIT_NAMES else None


def _directory_files(path: Path, split: str | None, notes: list[str]) -> list[Path]:
    """The data files of a directory: one format per name (parquet over JSONL: ``trapo data make`` writes
    both), and with ``split``, only the files of that split when the names say which split they hold."""
    found = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if not found:
        raise ValueError(f"{path}: directory has no *.parquet or *.jsonl files")
    stems = {p.stem for p in found if p.suffix == ".parquet"}
    twins = [p for p in found if p.suffix == ".jsonl" and p.stem in stems]
    if twins:
        notes.append(
            f"{len(twins)} JSONL file(s) in {path.name}/ skipped as copies of the parquet files of the same name"
        )
        found = [p for p in found if p not in twins]
    if split is None:
        return found
    splits = {p: _split_of(p.stem) for p in found}
    if not any(splits.values()):
        return found  # names say nothing about splits: every file is data
    chosen = [p for p in found if splits[p] == split]
    if not chosen:
        named = sorted({s for s in splits.values() if s})
        raise ValueError(
            f"{path}: directory has no {split} files (it has {', '.join(named)} splits: "
            f"{', '.join(p.name for p in found)}); pass the files to use"
        )
    others = [p.name for p in found if p not in chosen]
    if others:
        notes.append(f"used the {split} file(s) of {path.name}/ only, not {', '.join(others)}")
    return chosen


def _expand(
    paths: str | os.PathLike | Iterable[str | os.PathLike], split: str | None = None, notes: list[str] | None = None
) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    notes = [] if notes is None else notes
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if _is_hf_disk(path):
            files.append(path)
        elif path.is_dir():
            files.extend(_directory_files(path, split, notes))
        elif not path.exists():
            hub = (
                f"; {str(raw)!r} looks like a Hugging Face Hub data set id: trapo reads local data only. On a "
                'machine with internet, download it first: python -c "import datasets; '
                f"datasets.load_dataset('{raw}', split='train').save_to_disk('DIR')\" and pass DIR"
                if str(raw).count("/") == 1 and not str(raw).startswith((".", "/")) and not path.suffix
                else ""
            )
            raise FileNotFoundError(f"{path}: no such file or directory{hub}")
        elif path.suffix not in SUFFIXES:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r} (expected .parquet or .jsonl)")
        else:
            files.append(path)
    if not files:
        raise ValueError("no data files given")
    return files


def _prompt(value: Any) -> tuple[list[dict[str, str]] | None, str]:
    """(messages, "") or (None, why not)."""
    if value is None or value is _MISSING:
        return None, "is missing"
    if isinstance(value, str):
        return ([{"role": "user", "content": value}], "") if value.strip() else (None, "is empty")
    if not isinstance(value, (list, tuple)):
        return None, f"must be chat messages or a string, got {type(value).__name__}"
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return None, f"message {i} is not a {{'role': str, 'content': str}} dict"
        messages.append({"role": m["role"], "content": m["content"]})
    if not any(m["content"].strip() for m in messages):
        return None, "is empty"
    return messages, ""


def _answer(value: Any) -> tuple[str | None, str]:
    if value is None or value is _MISSING:
        return None, "is missing"
    if isinstance(value, bool):
        return None, "must be a string or a number, got bool"
    if isinstance(value, (int, float)):
        return (str(value), "") if math.isfinite(value) else (None, f"is not finite ({value})")
    if not isinstance(value, str):
        return None, f"must be a string or a number, got {type(value).__name__}"
    return (value, "") if value.strip() else (None, "is empty")


def _experts(value: Any) -> tuple[tuple[str, ...] | None, str]:
    if value is None or value is _MISSING:
        return (), ""
    if isinstance(value, str):
        return ((value,) if value.strip() else ()), ""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return None, f"must be a list of strings, a string or chat messages, got {type(value).__name__}"
    out = []
    for i, item in enumerate(value):
        if isinstance(item, dict):  # chat messages: keep the assistant's
            if item.get("role", "assistant") == "assistant" and isinstance(item.get("content"), str):
                out.append(item["content"])
        elif isinstance(item, str):
            out.append(item)
        else:
            return None, f"item {i} is a {type(item).__name__}, not a string"
    return tuple(s for s in out if s.strip()), ""


def _meta(row: dict, expert_key: str | None) -> dict[str, Any]:
    extra = row.get("extra_info")
    if not isinstance(extra, dict):
        return {}
    leaf = expert_key.split(".", 1)[1] if expert_key and expert_key.startswith("extra_info.") else None
    return {k: v for k, v in extra.items() if v is not None and k != leaf}


def _read_hf_disk(path: Path) -> list[tuple[int, Any]]:
    """Rows of a ``save_to_disk`` directory (a ``DatasetDict``: its ``train`` split, else its only one)."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"{path} was written by datasets.save_to_disk; reading it needs the `datasets` package: "
            "pip install 'trapo[hf]'"
        ) from err
    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        if "train" not in data and len(data) != 1:
            raise ValueError(
                f"{path}: a DatasetDict with splits {list(data)} and no 'train'; pass one split's directory"
            )
        data = data["train"] if "train" in data else next(iter(data.values()))
    return list(enumerate(data.to_list()))


def _is_hf_disk(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in HF_DATASET_FILES)


def _load_file(
    path: Path, prompt_key: str, answer_key: str, expert_key: str | None, strict: bool
) -> tuple[list[Example], list[SkippedRow], int, str | None, list[str], list[tuple[str, int]]]:
    if _is_hf_disk(path):
        raw = _read_hf_disk(path)
    else:
        raw = _read_parquet(path) if path.suffix == ".parquet" else _read_jsonl(path)
    return _convert(raw, str(path), path.stem, prompt_key, answer_key, expert_key, strict)


def _convert(
    raw: Sequence[tuple[int, Any]],
    file: str,
    stem: str,
    prompt_key: str,
    answer_key: str | None,
    expert_key: str | None,
    strict: bool,
) -> tuple[list[Example], list[SkippedRow], int, str | None, list[str], list[tuple[str, int]]]:
    """Rows (numbered) to examples: (examples, skipped, rows read, expert key read, columns found).
    ``answer_key=None``: the answer is optional (a TRL data set whose reward reads its own columns)."""
    skipped: list[SkippedRow] = []

    def skip(row: int, fld: str, reason: str) -> None:
        entry = SkippedRow(file, row, fld, reason)
        if strict:
            raise ValueError(str(entry))
        skipped.append(entry)

    rows: list[tuple[int, dict]] = []
    for number, row in raw:
        if isinstance(row, json.JSONDecodeError):
            skip(number, "<row>", f"is not valid JSON ({row.msg})")
        elif not isinstance(row, dict):
            skip(number, "<row>", f"is a JSON {type(row).__name__}, not an object")
        else:
            rows.append((number, row))
    if not rows:
        return [], skipped, len(raw), None, [], []
    dicts = [r for _, r in rows]
    p_key = _resolve_key(dicts, prompt_key, DEFAULT_PROMPT_KEY, file, required=True)
    a_key = (
        _resolve_key(dicts, answer_key, DEFAULT_ANSWER_KEY, file, required=True)
        if answer_key
        else _resolve_key(dicts, DEFAULT_ANSWER_KEY, DEFAULT_ANSWER_KEY, file, required=False)
    )
    e_key = _resolve_key(dicts, expert_key, DEFAULT_EXPERT_KEY, file, required=False) if expert_key else None

    examples, origins = [], []
    for number, row in rows:
        prompt, why = _prompt(_get(row, p_key))
        if prompt is None:
            skip(number, p_key, why)
            continue
        answer, why = _answer(_get(row, a_key)) if a_key else ("", "")
        if answer is None:
            if answer_key:
                skip(number, a_key, why)
                continue
            answer = ""
        experts, why = _experts(_get(row, e_key)) if e_key else ((), "")
        if experts is None:
            skip(number, e_key, why)
            continue
        source = row.get("data_source")
        examples.append(
            Example(
                prompt=prompt,
                answer=answer,
                expert_solutions=experts,
                data_source=source if isinstance(source, str) and source else stem,
                meta=_meta(row, e_key),
                columns={k: v for k, v in row.items() if k != p_key.split(".")[0]},
                origin=f"{file}:{number}",
            )
        )
        origins.append((file, number))
    return examples, skipped, len(raw), e_key, _column_names(dicts), origins


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
    for path in _expand(paths, split, result.notes):
        examples, skipped, n_rows, e_key, columns, origins = _load_file(
            path, prompt_key, answer_key, expert_key, strict
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


def write_examples(examples: Iterable[Example], path: str | os.PathLike) -> Path:
    """Write examples as verl rows (:meth:`Example.to_verl_row`) to ``.parquet`` or ``.jsonl``, atomically
    (a temporary file in the same directory, then a rename). Returns the path."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r} (expected .parquet or .jsonl)")
    rows = [ex.to_verl_row() for ex in examples]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            os.close(fd)
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
