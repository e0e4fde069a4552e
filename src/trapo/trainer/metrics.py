"""A step's metrics: sums and counts reduced over processes, and the run's ``metrics.jsonl``."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator


class Metrics:
    """Sums and counts per name, reduced over processes at the end of a step.

    A mean metric is sum / count over every process; a total (``add_total``: a loss whose mini-batch
    parts are already normalised to the batch) is the sum over mini-batches, averaged over processes
    (as the gradients are).
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, float] = defaultdict(float)
        self.totals: set[str] = set()

    def add(self, name: str, value: float, count: float = 1.0) -> None:
        """Add ``value`` as a sum over ``count`` items (the metric is sum / count)."""
        self.sums[name] += float(value)
        self.counts[name] += float(count)

    def add_total(self, name: str, value: float) -> None:
        self.totals.add(name)
        self.sums[name] += float(value)
        self.counts[name] = 1.0  # one per process: the reduced metric is the mean over processes

    def reduce(self, accelerator: Accelerator) -> dict[str, float]:
        names = sorted(self.sums)
        if accelerator.num_processes > 1:
            t = torch.tensor(
                [[self.sums[n], self.counts[n]] for n in names], dtype=torch.float64, device=accelerator.device
            )
            t = accelerator.reduce(t, reduction="sum").cpu()
            pairs = {n: (float(t[i, 0]), float(t[i, 1])) for i, n in enumerate(names)}
        else:
            pairs = {n: (self.sums[n], self.counts[n]) for n in names}
        return {n: (s / c if c else 0.0) for n, (s, c) in pairs.items()}


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` to ``path``, one JSON object a line."""
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _jsonl_rows(path: Path) -> list[tuple[str, Any]]:
    """(line, parsed) for each line of ``path`` that parses; a line cut off by a kill is skipped."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append((line, json.loads(line)))
        except ValueError:
            continue
    return rows


def truncate_jsonl(path: Path, step: int) -> None:
    """Drop lines logged after ``step`` (a resumed run logs them again) and a line cut off by a kill."""
    if not path.is_file():
        return
    keep = [line for line, row in _jsonl_rows(path) if isinstance(row, dict) and row.get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (one per logged step; empty when the run logged none)."""
    path = Path(output_dir) / "metrics.jsonl"
    return [row for _, row in _jsonl_rows(path)] if path.is_file() else []
