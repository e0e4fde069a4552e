"""Finding a column in data rows: dotted keys into nested rows, the default keys and their aliases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEFAULT_PROMPT_KEY = "prompt"
DEFAULT_ANSWER_KEY = "reward_model.ground_truth"
DEFAULT_EXPERT_KEY = "extra_info.expert_solutions"
ALIASES = {
    DEFAULT_PROMPT_KEY: ("question", "problem"),
    DEFAULT_ANSWER_KEY: ("answer", "ground_truth"),
    DEFAULT_EXPERT_KEY: ("target", "expert_solutions", "solutions", "extra_info.answer_list"),
}
MISSING = object()


def get_value(row: dict, key: str) -> Any:
    """The value at a dotted key, or :data:`MISSING` when the row does not have it."""
    if key in row:
        return row[key]
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def column_names(rows: Sequence[dict], limit: int = 200) -> list[str]:
    names: dict[str, None] = {}
    for row in rows[:limit]:
        for key, value in row.items():
            names[key] = None
            if isinstance(value, dict):
                for sub in value:
                    names[f"{key}.{sub}"] = None
    return list(names)


def resolve_key(rows: Sequence[dict], key: str, default: str, file: str, required: bool) -> str | None:
    """The key to read: ``key`` itself, or (for a default key absent from every row) its first alias present."""

    def present(k: str) -> bool:
        return any(get_value(r, k) is not MISSING for r in rows)

    if present(key):
        return key
    if key == default:
        found = [alias for alias in ALIASES.get(default, ()) if present(alias)]
        if len(found) > 1 and default == DEFAULT_EXPERT_KEY:  # never pick one silently
            raise ValueError(
                f"{file}: no column {key!r}, but several that may hold the expert solutions: "
                f"{', '.join(found)}; say which with expert_key (--expert_key), e.g. expert_key={found[0]!r}"
            )
        if found:
            return found[0]
    if not required:
        return None
    aliases = f" (nor its aliases {', '.join(ALIASES[key])})" if key == default and key in ALIASES else ""
    raise ValueError(f"{file}: no column {key!r}{aliases}; columns found: {', '.join(column_names(rows)) or 'none'}")
