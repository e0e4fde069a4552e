"""One row's fields: dotted keys, the aliases of the default keys, and what each field may be (the rules are
in :mod:`trapo.data.loaders`). Each converter returns ``(value, "")`` or ``(None, why not)``."""

from __future__ import annotations

import math
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


def get(row: dict, key: str) -> Any:
    """The value at a dotted key, or MISSING when the row does not have it."""
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
    """The key to read: ``key`` itself, or (for a default key absent from every row) the alias present; two
    candidate expert columns are an error naming both (which one holds the expert is the user's to say)."""

    def present(k: str) -> bool:
        return any(get(r, k) is not MISSING for r in rows)

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


def prompt(value: Any) -> tuple[list[dict[str, str]] | None, str]:
    """(messages, "") or (None, why not). Chat messages need a user message with text: the problem is the
    last user message (:attr:`Example.prompt_text`), whatever system or assistant messages follow it."""
    if value is None or value is MISSING:
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
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        roles = ", ".join(dict.fromkeys(m["role"] for m in messages))
        return None, f"has no user message with text (roles: {roles}); the problem is the last user message"
    return messages, ""


def answer(value: Any) -> tuple[str | None, str]:
    if value is None or value is MISSING:
        return None, "is missing"
    if isinstance(value, bool):
        return None, "must be a string or a number, got bool"
    if isinstance(value, (int, float)):
        return (str(value), "") if math.isfinite(value) else (None, f"is not finite ({value})")
    if not isinstance(value, str):
        return None, f"must be a string or a number, got {type(value).__name__}"
    return (value, "") if value.strip() else (None, "is empty")


def experts(value: Any) -> tuple[tuple[str, ...] | None, str]:
    if value is None or value is MISSING:
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


def meta(row: dict, expert_key: str | None) -> dict[str, Any]:
    extra = row.get("extra_info")
    if not isinstance(extra, dict):
        return {}
    leaf = expert_key.split(".", 1)[1] if expert_key and expert_key.startswith("extra_info.") else None
    return {k: v for k, v in extra.items() if v is not None and k != leaf}
