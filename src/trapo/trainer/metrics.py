"""A step's metrics: sums and counts reduced over processes, and the run's ``metrics.jsonl``."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator

from trapo.rewards import FAILURE_KINDS
from trapo.trainer.trl_surface import group_reward_stats

if TYPE_CHECKING:
    from trapo.trainer.rollouts import RolloutBatch


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


def log_samples(batch: Any, tokenizer: Any, step: int, path: Path) -> None:
    """Append the first prompt's trajectories of ``batch`` (a ``RolloutBatch``; None: nothing) to ``path``
    (``samples.jsonl``), decoded: prompt, group, level, prefix, continuation, reward and what rewards logged."""
    if batch is None:
        return
    decode = tokenizer.decode
    rows = [
        {
            "step": step,
            "prompt": decode(t.prompt_ids, skip_special_tokens=True),
            "group": t.group,
            "level": t.level,
            "prefix": decode(t.prefix_ids, skip_special_tokens=True),
            "continuation": decode(t.completion_ids, skip_special_tokens=True),
            "reward": t.reward,
            **t.logged,
        }
        for t in batch.trajectories
        if t.prompt_index == 0
    ]
    append_jsonl(path, rows)


def record_batch(batch: RolloutBatch, metrics: Metrics, eos: int, n_levels: int) -> None:
    """A rollout batch's rewards (also under TRL's names), guidance levels, lengths and reward failures."""
    trajs = batch.trajectories
    rewards = torch.tensor([t.reward for t in trajs], dtype=torch.float32)
    guided = torch.tensor([t.guided for t in trajs])
    metrics.add("reward/mean", float(rewards.sum()), len(trajs))
    std_sum, groups, zero_std = group_reward_stats(rewards, torch.tensor([t.prompt_index for t in trajs]))
    metrics.add("reward_std", std_sum, groups)  # TRL's names
    metrics.add("frac_reward_zero_std", zero_std, groups)
    metrics.add("completions/clipped_ratio", sum(t.response_ids[-1:] != [eos] for t in trajs), len(trajs))
    metrics.add("perf/input_tokens", sum(len(t.prompt_ids) + len(t.response_ids) for t in trajs), 1)
    metrics.add("reward/unguided", float(rewards[~guided].sum()), float((~guided).sum()))
    metrics.add("reward/guided", float(rewards[guided].sum()), float(guided.sum()))
    for level in range(n_levels):
        metrics.add(f"guidance/level_{level}", sum(t.level == level for t in trajs), len(trajs))
    generating = [t for t in trajs if t.completion_ids]
    metrics.add("length/completion", sum(len(t.completion_ids) for t in generating), len(generating))
    metrics.add("length/response", sum(len(t.response_ids) for t in trajs), len(trajs))
    metrics.add("length/prefix", sum(len(t.prefix_ids) for t in trajs if t.guided), float(guided.sum()))
    metrics.add_total("reward/errors", batch.reward_errors)
    metrics.add("reward/failed", batch.reward_errors, len(trajs))
    for kind in FAILURE_KINDS:
        metrics.add(f"reward/failed_{kind}", batch.reward_failures.get(kind, 0), len(trajs))
