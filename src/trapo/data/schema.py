"""The one record every layer above data speaks: :class:`Example`.

On disk it is a row in verl's parquet layout (also written as JSONL with the same nesting)::

    data_source: str
    prompt: list[{"role": str, "content": str}]          # chat messages
    ability: str
    reward_model: {"style": "rule", "ground_truth": str}
    extra_info: {"index": int, "split": str, "expert_solutions": list[str], ...}

Expert solutions live in ``extra_info.expert_solutions`` (the first is used for guidance; a second,
where present, serves TRAPO's last micro-group).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """One training or evaluation problem."""

    prompt: list[dict[str, str]]
    answer: str
    expert_solutions: tuple[str, ...] = ()
    data_source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    # The row's own columns (all but the prompt), passed to TRL-style rewards as keyword arguments.
    columns: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # Where the row came from ("file:row"), for messages; "" when built in memory.
    origin: str = field(default="", compare=False)

    @property
    def prompt_text(self) -> str:
        """The last user message (what a plain-text model would be shown): a system or assistant message after
        it is not the problem. ``""`` when there is no user message (the loaders skip such rows)."""
        users = [m["content"] for m in self.prompt if m.get("role") == "user"]
        return users[-1] if users else ""

    def to_verl_row(self, index: int | None = None, split: str | None = None) -> dict[str, Any]:
        extra: dict[str, Any] = dict(self.meta)
        if index is not None:
            extra["index"] = index
        if split is not None:
            extra["split"] = split
        extra["expert_solutions"] = list(self.expert_solutions)
        return {
            "data_source": self.data_source,
            "prompt": [dict(m) for m in self.prompt],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": self.answer},
            "extra_info": extra,
        }
