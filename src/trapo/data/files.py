"""Data files on disk: which files a path names (directories, splits, ``save_to_disk`` directories), their
rows as read (numbered as :class:`~trapo.data.loaders.SkippedRow` reports them), and writing examples back.

Rows are numbered from 0 in parquet files and by line number (from 1) in JSONL files; a JSONL line that is not
valid JSON comes back as its ``json.JSONDecodeError`` for the converter to report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trapo.atomic import atomic_file
from trapo.data.schema import Example

HF_DATASET_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")
SUFFIXES = (".parquet", ".jsonl")


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


def expand_paths(
    paths: str | os.PathLike | Iterable[str | os.PathLike], split: str | None = None, notes: list[str] | None = None
) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    notes = [] if notes is None else notes
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if is_hf_disk(path):
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


def is_hf_disk(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in HF_DATASET_FILES)


def read_rows(path: Path) -> list[tuple[int, Any]]:
    """The numbered rows of one data file or ``save_to_disk`` directory."""
    if is_hf_disk(path):
        return _read_hf_disk(path)
    return _read_parquet(path) if path.suffix == ".parquet" else _read_jsonl(path)


def write_examples(examples: Iterable[Example], path: str | os.PathLike) -> Path:
    """Write examples as verl rows (:meth:`Example.to_verl_row`) to ``.parquet`` or ``.jsonl``, atomically
    (a temporary file in the same directory, then a rename). Returns the path."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r} (expected .parquet or .jsonl)")
    rows = [ex.to_verl_row() for ex in examples]
    with atomic_file(path) as tmp:
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), tmp)
        else:
            with tmp.open("w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
