"""Preparing the training set: rows to tokenized prompts and expert solutions, and a report of what was kept."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trapo.config import TRAPOConfig
from trapo.data import (
    Example,
    LoadResult,
    encode_prompt,
    encode_response,
    examples_from_rows,
    expert_text,
    load_examples,
)
from trapo.data.loaders import DEFAULT_EXPERT_KEY
from trapo.rewards.math_answers import ground_truth_problem
from trapo.trainer.rollouts import PreparedExample


@dataclass
class DataReport:
    """What preparing the training set kept and skipped."""

    rows: int = 0
    kept: int = 0
    without_expert: int = 0
    too_long: list[int] = field(default_factory=list)
    expert_truncated: int = 0
    origins: dict[int, str] = field(default_factory=dict)  # row -> "file:row" where known
    over_context: list[int] = field(default_factory=list)  # prompt alone fills the model's context: skipped
    near_context: list[int] = field(default_factory=list)  # prompt + max_completion_length exceeds it
    context: int | None = None
    think_kept: int = 0  # expert solutions with a <think> block used whole (expert_think="keep")
    unverifiable: dict[int, str] = field(default_factory=dict)  # row -> why the reward cannot check its answer
    expert_keys: list[str] = field(default_factory=list)  # the columns expert solutions were read from

    def _where(self, rows: list[int]) -> str:
        shown = ", ".join(self.origins.get(r, f"row {r}") for r in rows[:5])
        return shown + (", ..." if len(rows) > 5 else "")

    def summary(self) -> str:
        text = f"{self.kept}/{self.rows} rows kept; {self.without_expert} without an expert solution (RL only)"
        if self.expert_keys:
            text += f"; expert solutions from {', '.join(map(repr, self.expert_keys))}"
        if self.too_long:
            text += f"; {len(self.too_long)} skipped as longer than max_prompt_length ({self._where(self.too_long)})"
        if self.over_context:
            text += (
                f"; {len(self.over_context)} skipped as longer than the model's context of {self.context} "
                f"tokens ({self._where(self.over_context)})"
            )
        if self.near_context:
            text += (
                f"; {len(self.near_context)} whose prompt + max_completion_length exceed the model's context "
                f"of {self.context} tokens ({self._where(self.near_context)})"
            )
        if self.expert_truncated:
            text += f"; {self.expert_truncated} expert solutions truncated to max_completion_length"
        if self.think_kept:
            text += (
                f"; {self.think_kept} expert solutions hold <think>...</think> and are used whole "
                "(the authors train on the text inside: expert_think='extract')"
            )
        if self.unverifiable:
            rows = sorted(self.unverifiable)
            text += (
                f"; {len(rows)} with a ground truth the math reward cannot verify (rows {rows[:5]}"
                f"{', ...' if len(rows) > 5 else ''})"
            )
        return text


def _encode_experts(example: Example, tokenizer: Any, cfg: TRAPOConfig, report: DataReport) -> list[list[int]]:
    """The example's expert solutions tokenized, each cut to ``max_completion_length``."""
    experts = []
    for solution in example.expert_solutions:
        if cfg.expert_think == "keep" and "<think>" in solution and "</think>" in solution:
            report.think_kept += 1
        ids = encode_response(tokenizer, expert_text(solution, cfg.expert_think))
        if len(ids) > cfg.max_completion_length:
            report.expert_truncated += 1
            ids = ids[: cfg.max_completion_length]
        experts.append(ids)
    return experts


def _prompt_fits(row: int, where: str, n: int, cfg: TRAPOConfig, report: DataReport) -> bool:
    """Whether a prompt of ``n`` tokens is kept (or, with ``strict``, an error naming the row)."""
    context = report.context
    if context is not None and n >= context:
        if cfg.strict:
            raise ValueError(f"{where}: prompt has {n} tokens, the model's context is {context}")
        report.over_context.append(row)
        return False
    if n > cfg.max_prompt_length:
        if cfg.strict:
            raise ValueError(f"{where}: prompt has {n} tokens, more than max_prompt_length={cfg.max_prompt_length}")
        report.too_long.append(row)
        return False
    if context is not None and n + cfg.max_completion_length > context:
        report.near_context.append(row)
    return True


def prepare_examples(
    dataset: Sequence[Example],
    tokenizer: Any,
    cfg: TRAPOConfig,
    context: int | None = None,
    check_ground_truths: bool = False,
) -> tuple[list[PreparedExample], DataReport]:
    """Tokenize each row's prompt and expert solutions; skip (or, with ``cfg.strict``, refuse) rows that do
    not fit. ``check_ground_truths``: list the rows whose ground truth the built-in math reward cannot verify."""
    report, items = DataReport(rows=len(dataset), context=context), []
    for row, example in enumerate(dataset):
        if example.origin:
            report.origins[row] = example.origin
        where = example.origin or f"training row {row}"
        try:
            prompt_ids = encode_prompt(tokenizer, example, cfg.prompt_template)
        except Exception as err:  # e.g. jinja's TemplateError for a chat role the template does not know
            raise ValueError(
                f"{where}: the tokenizer's chat template cannot render the prompt ({type(err).__name__}: {err})"
            ) from err
        if not _prompt_fits(row, where, len(prompt_ids), cfg, report):
            continue
        experts = _encode_experts(example, tokenizer, cfg, report)
        report.without_expert += not experts
        items.append(PreparedExample(example, prompt_ids, experts))
    report.kept = len(items)
    if check_ground_truths:  # checked up front, and cached for training
        for row, example in enumerate(dataset):
            problem = ground_truth_problem(example.answer)
            if problem:
                report.unverifiable[row] = problem
    if not items:
        raise ValueError(f"no usable training rows: {report.summary()}")
    return items, report


def as_examples(
    dataset: Any, strict: bool = False, expert_key: str | None = None
) -> tuple[list[Example], LoadResult | None, bool]:
    """(examples, the load result where this loaded them, whether rewards get chat messages as TRL would);
    ``expert_key``: the expert-solution column (default: :data:`DEFAULT_EXPERT_KEY` or its one alias present)."""
    expert_key = expert_key or DEFAULT_EXPERT_KEY
    if isinstance(dataset, (str, os.PathLike)):
        loaded = load_examples(dataset, strict=strict, expert_key=expert_key)
        return loaded.examples, loaded, False
    if isinstance(dataset, LoadResult):
        return dataset.examples, dataset, False
    if hasattr(dataset, "keys") and not hasattr(dataset, "to_list"):
        raise ValueError(
            f"train_dataset is a mapping of splits ({', '.join(map(str, dataset.keys()))}); "
            "pass one split, e.g. dataset['train']"
        )
    if not hasattr(dataset, "__len__"):
        raise ValueError(
            "train_dataset must have a length (a datasets.Dataset, a list, or a path); "
            "an IterableDataset is not supported"
        )
    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    if rows and all(isinstance(r, Example) for r in rows):
        return rows, None, False
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError("train_dataset must hold dict rows (or trapo.data.Example records)")
    loaded = examples_from_rows(rows, strict=strict, expert_key=expert_key)
    first = rows[0].get("prompt")
    return loaded.examples, loaded, isinstance(first, list)


def tokenizer_of(model: torch.nn.Module):
    """The tokenizer saved beside ``model`` (TRL loads it from the model's name or path)."""
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    if not name or not Path(name).is_dir():
        raise ValueError("pass the tokenizer as processing_class= (the model's directory is not known)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, local_files_only=True)


def context_length(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None
