"""What a resume checks beyond the config (issue 24): that it continues the same run on the same inputs,
from sound weights, and that ``--resume auto`` always has a way forward.

- :func:`fingerprint`: the training data (every kept row's prompt, answer and expert solutions), the
  rewards and the expert-solution key, stored in each checkpoint; :func:`fingerprint_differences` lists
  what changed, as :func:`~trapo.trainer.safety.config_differences` does for the config.
- :func:`nonfinite_weights`: a checkpoint whose weights hold NaN/inf is not resumed from (the one before
  is), and weights that are NaN/inf are never saved over (nor pruning) a good checkpoint.
- :func:`set_aside`: ``--resume auto`` on a directory with no complete checkpoint (a run killed before
  its first one) moves the earlier files into ``previous-<time>/`` and starts fresh.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


class NoUsableCheckpoint(ValueError):
    """Every checkpoint of the directory is unreadable or unsound (the message lists why)."""


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(examples: Sequence[Any], rewards: str, expert_keys: dict[str, str | None] | None) -> dict[str, Any]:
    """What the run trains on: a digest of the rows (prompt, answer, expert solutions, source, in order),
    their number, the rewards (:func:`trapo.rewards.reward_identity`) and the expert key(s) read."""
    rows = [[ex.prompt, ex.answer, list(ex.expert_solutions), ex.data_source] for ex in examples]
    keys = sorted({k for k in (expert_keys or {}).values() if k}) or None
    return {"data": _digest(rows), "data_rows": len(rows), "rewards": rewards, "expert_key": keys}


def fingerprint_differences(stored: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """``"what: stored -> current"`` for each part of the fingerprint that changed (none for a checkpoint
    written before fingerprints were stored)."""
    if not stored:
        return []
    out = []
    if stored.get("data") != current["data"]:
        rows = f"{stored.get('data_rows')} -> {current['data_rows']} rows"
        out.append(f"training data: the rows changed ({rows}; digest {stored.get('data')} -> {current['data']})")
    for name, label in (("rewards", "--reward"), ("expert_key", "--expert-key")):
        if stored.get(name) != current[name]:
            out.append(f"{label}: {stored.get(name)!r} -> {current[name]!r}")
    return out


def nonfinite_weights(model: torch.nn.Module, limit: int = 3) -> list[str]:
    """Names of (up to ``limit``) parameters holding NaN/inf; empty when every weight is finite."""
    bad = []
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p.detach()).all()):
            bad.append(name)
            if len(bad) >= limit:
                break
    return bad


def set_aside(output_dir: Path, names: Sequence[str]) -> Path | None:
    """Move ``names`` (files and folders of ``output_dir``) into a new ``output_dir/previous-<time>/``."""
    if not names:
        return None
    aside = output_dir / time.strftime("previous-%Y%m%d-%H%M%S")
    while aside.exists():
        aside = aside.with_name(aside.name + "x")
    aside.mkdir()
    for name in names:
        (output_dir / name).rename(aside / name)
    return aside


def start_afresh(accelerator: Any, output_dir: Path, why: str, is_main: bool) -> None:
    """``--resume auto`` with no usable checkpoint (a run killed before its first one, or only corrupt
    ones): the directory's earlier run files are set aside (:func:`set_aside`) and the run starts fresh,
    so that a requeued job always has a way forward."""
    from trapo.trainer.safety import run_files

    accelerator.wait_for_everyone()
    existing = run_files(output_dir)
    accelerator.wait_for_everyone()
    aside = set_aside(output_dir, existing) if is_main else None
    accelerator.wait_for_everyone()
    kept = f"; the earlier files ({', '.join(existing[:6])}) are kept in {aside}" if aside else ""
    accelerator.print(f"--resume auto: {why}; starting fresh{kept}")
