"""Each setting's domain (type, sign, finiteness, range), checked before any work.

:func:`check_field` checks one value against its declared type (``int``, ``float``, ``bool``, ``str``, a
``Literal``, ``X | None``, ``list[X]``) and, where :data:`RANGES` names one, its range. A bool is not a
number here and a float is not an int (``max_steps: 2.5`` or ``max_steps: true`` in YAML is an error); an
int is a float. Every float must be finite. Errors name the field (``"max_steps must be ..."``); the
command line rewrites the name as the flag the user typed.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any, Literal


class Range(typing.NamedTuple):
    """``low <= value <= high`` (``open_low``: ``low < value``; ``open_high``: ``value < high``)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.open_high else value > self.high))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {_num(self.low)}"
        if self.low is None:
            return f"{'<' if self.open_high else '<='} {_num(self.high)}"
        return f"in {'(' if self.open_low else '['}{_num(self.low)}, {_num(self.high)}{')' if self.open_high else ']'}"


def _num(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


AT_LEAST_0, AT_LEAST_1, POSITIVE = Range(0), Range(1), Range(0, open_low=True)
SHARE = Range(0, 1, open_low=True)  # (0, 1]
BETA = Range(0, 1, open_high=True)  # [0, 1)

# Field -> range (of the number, or of each item of a list). Fields not named: any value of their type.
# (max_steps is checked by the config itself: >= 1, or -1 for TRL's "from num_train_epochs".)
RANGES: dict[str, Range] = {
    **dict.fromkeys(
        (
            "prompts_per_step",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "num_generations",
            "max_prompt_length",
            "max_completion_length",
            "generation_batch_size",
            "micro_group_sizes",
            "num_iterations",
            "mini_batch_size",
            "logging_steps",
            "max_nonfinite_steps",
        ),
        AT_LEAST_1,
    ),
    **dict.fromkeys(
        (
            "seed",
            "top_k",
            "temperature",
            "prefix_loss_counts",
            "prefix_slack",
            "prefix_loss_coef",
            "beta",
            "warmup_steps",
            "weight_decay",
            "max_grad_norm",
            "lora_r",
            "save_steps",
            "save_minutes",
            "save_total_limit",
            "sample_log_steps",
            "update_guard_factor",
            "max_update_ratio",
            "reward_timeout",
            "max_reward_failure_steps",
        ),
        AT_LEAST_0,
    ),
    **dict.fromkeys(
        ("luffy_gamma", "epsilon", "epsilon_high", "loss_constant", "learning_rate", "lora_alpha"), POSITIVE
    ),
    **dict.fromkeys(("top_p", "trsft_alpha", "max_reward_failure_share"), SHARE),
    **dict.fromkeys(("adam_beta1", "adam_beta2"), BETA),
    "guidance_ratios": Range(0, 1),
    "sft_fraction": Range(0, 1),
}


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is list:
        return "a list of " + {int: "integers", float: "finite numbers", str: "strings"}.get(
            args[0], _describe(args[0])
        )
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _fits(value: Any, tp: Any) -> bool:
    """Whether ``value`` has type ``tp`` (a bool is not a number, a float is not an int, floats are finite)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, tp)


def _got(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} (not finite)"
    return f"{value!r} ({type(value).__name__})"


def check_field(name: str, value: Any, tp: Any) -> None:
    """Raise ``ValueError`` naming ``name`` when ``value`` is not of type ``tp`` or outside ``RANGES[name]``."""
    if not _fits(value, tp):
        items = typing.get_args(tp)
        item_type = next((typing.get_args(a)[0] for a in items if typing.get_origin(a) is list), None)
        if isinstance(value, (list, tuple)) and item_type is not None:  # name the item that does not fit
            i = next(i for i, v in enumerate(value) if not _fits(v, item_type))
            raise ValueError(f"{name} must be {_describe(tp)}; item {i} is {_got(value[i])}")
        raise ValueError(f"{name} must be {_describe(tp)}, got {_got(value)}")
    allowed = RANGES.get(name)
    if allowed is None or value is None or isinstance(value, (str, bool)):
        return
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(item, (int, float)) and item not in allowed:
            where = f" (item {list(value).index(item)})" if isinstance(value, (list, tuple)) else ""
            raise ValueError(f"{name} must be {allowed}{where}, got {item!r}")


def check_fields(obj: Any) -> None:
    """Check every field of the dataclass instance ``obj`` (see :func:`check_field`)."""
    hints = typing.get_type_hints(type(obj))
    for name in obj.__dataclass_fields__:
        check_field(name, getattr(obj, name), hints[name])
