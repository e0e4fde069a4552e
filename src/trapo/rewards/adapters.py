"""Bring the reward functions users already have: one interface for the trainer, adapters for the rest.

The trainer calls a :data:`RewardFunction`: ``fn(completions, examples) -> list[float]``, one score per
completion, where ``examples[i]`` is the problem ``completions[i]`` answers. :func:`as_reward_function`
wraps the three signatures found in the wild:

- ``per_sample``: ``fn(completion: str, ground_truth: str) -> float`` (like :func:`math_reward`);
- ``trl``: TRL's ``fn(prompts, completions, **columns) -> list[float]``, called with keyword arguments, the
  dataset columns as lists: ``ground_truth``, ``answer`` and ``solution`` (all three the example's answer),
  ``data_source``, ``extra_info`` (the verl ``extra_info`` dict) and ``expert_solutions``; a function without
  ``**kwargs`` gets only the columns it names. ``None`` scores (TRL's "not applicable") become NaN, which
  :func:`safe_rewards` counts and zeroes;
- ``verl``: ``compute_score(data_source, solution_str, ground_truth, extra_info) -> float | dict`` (a dict's
  ``"score"`` is used), called once per completion;
- ``batch``: already a :data:`RewardFunction` (parameters named like ``completions, examples``).

The layer below data: examples are used by duck typing (``.answer``, ``.prompt``, ``.data_source``,
``.to_verl_row()``), :class:`trapo.data.Example` is imported for type hints only.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trapo.rewards.math_answers import math_reward

if TYPE_CHECKING:
    from trapo.data.schema import Example

logger = logging.getLogger(__name__)

RewardFunction = Callable[[list[str], list["Example"]], list[float]]
RewardKind = Literal["per_sample", "trl", "verl", "batch"]
KINDS: tuple[str, ...] = ("per_sample", "trl", "verl", "batch")

_SIGNATURES_HELP = (
    "supported reward signatures: per-sample fn(completion, ground_truth) -> float; "
    "TRL fn(prompts, completions, **columns) -> list[float]; "
    "verl compute_score(data_source, solution_str, ground_truth, extra_info) -> float | dict; "
    "batch fn(completions, examples) -> list[float]. Pass kind=... to choose explicitly"
)


def _parameters(fn: Callable) -> tuple[list[str], bool]:
    """Names of ``fn``'s named parameters and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError) as err:
        raise ValueError(f"cannot read the signature of reward {fn!r}: {err}; {_SIGNATURES_HELP}") from err
    names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def detect_kind(fn: Callable) -> RewardKind:
    """Which signature ``fn`` has, from its parameter names (see the module docstring)."""
    if getattr(fn, "_trapo_reward_kind", None) == "batch":
        return "batch"
    names, _ = _parameters(fn)
    name_set = set(names)
    if {"data_source", "solution_str", "ground_truth"} <= name_set:
        return "verl"
    if "completions" in name_set and ("prompts" in name_set or "examples" not in name_set):
        return "trl"
    if "examples" in name_set:
        return "batch"
    positional = [
        p for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(positional) == 2:
        return "per_sample"
    raise ValueError(f"cannot tell the signature of reward {getattr(fn, '__name__', fn)!r} {names}; {_SIGNATURES_HELP}")


def _score(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, dict):
        if "score" not in value:
            raise ValueError(f"a reward returned a dict without a 'score' key: keys {sorted(value)}")
        value = value["score"]
    return float(value)


def _check_lengths(completions: Sequence[str], examples: Sequence[Example]) -> None:
    if len(completions) != len(examples):
        raise ValueError(f"got {len(completions)} completions but {len(examples)} examples")


def _columns(completions: Sequence[str], examples: Sequence[Example], conversational: bool) -> dict[str, list]:
    answers = [e.answer for e in examples]
    if conversational:
        prompts: list = [list(e.prompt) for e in examples]
        texts: list = [[{"role": "assistant", "content": c}] for c in completions]
    else:
        prompts, texts = [e.prompt_text for e in examples], list(completions)
    return {
        "prompts": prompts,
        "completions": texts,
        "ground_truth": answers,
        "answer": answers,
        "solution": answers,
        "data_source": [e.data_source for e in examples],
        "extra_info": [e.to_verl_row()["extra_info"] for e in examples],
        "expert_solutions": [list(e.expert_solutions) for e in examples],
    }


def as_reward_function(fn: Callable, kind: RewardKind | None = None, *, conversational: bool = False) -> RewardFunction:
    """Wrap ``fn`` as a :data:`RewardFunction` (``kind`` detected from the signature unless given).

    ``conversational`` (TRL only): pass prompts and completions as chat messages instead of text.
    """
    if not callable(fn):
        raise ValueError(f"reward must be callable, got {type(fn).__name__}")
    if kind is None:
        kind = detect_kind(fn)
    if kind not in KINDS:
        raise ValueError(f"unknown reward kind {kind!r}; choose one of {', '.join(KINDS)}")
    name = getattr(fn, "__name__", type(fn).__name__)

    if kind == "batch":
        def wrapped(completions: list[str], examples: list[Example]) -> list[float]:
            _check_lengths(completions, examples)
            return [_score(v) for v in fn(completions, examples)]

    elif kind == "per_sample":
        def wrapped(completions: list[str], examples: list[Example]) -> list[float]:
            _check_lengths(completions, examples)
            return [_score(fn(c, e.answer)) for c, e in zip(completions, examples, strict=True)]

    elif kind == "verl":
        def wrapped(completions: list[str], examples: list[Example]) -> list[float]:
            _check_lengths(completions, examples)
            return [
                _score(fn(data_source=e.data_source, solution_str=c, ground_truth=e.answer,
                          extra_info=e.to_verl_row()["extra_info"]))
                for c, e in zip(completions, examples, strict=True)
            ]

    else:  # trl
        names, takes_kwargs = _parameters(fn)

        def wrapped(completions: list[str], examples: list[Example]) -> list[float]:
            _check_lengths(completions, examples)
            columns = _columns(completions, examples, conversational)
            if not takes_kwargs:
                columns = {k: v for k, v in columns.items() if k in names}
            scores = list(fn(**columns))
            if len(scores) != len(completions):
                raise ValueError(f"reward {name!r} returned {len(scores)} scores for {len(completions)} completions")
            return [_score(v) for v in scores]

    wrapped.__name__ = name
    wrapped.__doc__ = f"{name} ({kind} reward) as a trapo RewardFunction."
    wrapped._trapo_reward_kind = "batch"  # wrapping twice is a no-op
    return wrapped


def safe_rewards(
    fn: RewardFunction, completions: list[str], examples: list[Example]
) -> tuple[list[float], int]:
    """Score a batch without letting the reward crash training: ``(scores, n_failed)``.

    The batch is scored in one call; if that raises (or returns the wrong number of scores), every item is
    scored on its own and an item that raises gets 0.0. Non-finite scores (NaN, inf, None from a TRL
    reward) become 0.0. ``n_failed`` counts the items that raised or were non-finite.
    """
    _check_lengths(completions, examples)
    try:
        raw = [float(v) for v in fn(completions, examples)]
        if len(raw) != len(completions):
            raise ValueError(f"the reward returned {len(raw)} scores for {len(completions)} completions")
    except Exception as err:
        logger.warning("reward failed on a batch of %d (%s: %s); scoring item by item",
                       len(completions), type(err).__name__, err)
        raw = []
        for c, e in zip(completions, examples, strict=True):
            try:
                raw.append(float(fn([c], [e])[0]))
            except Exception:
                raw.append(math.nan)
    scores = [v if math.isfinite(v) else 0.0 for v in raw]
    return scores, sum(not math.isfinite(v) for v in raw)


def default_reward() -> RewardFunction:
    """:func:`math_reward` as a :data:`RewardFunction`."""
    return as_reward_function(math_reward, kind="per_sample")


BUILTIN_REWARDS = {"math": default_reward}


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"reward file {str(path)!r} does not exist")
    module_name = f"trapo_user_reward_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import reward file {str(path)!r} (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise ValueError(f"importing reward file {str(path)!r} failed: {type(err).__name__}: {err}") from err
    return module


def load_reward(spec: str, kind: RewardKind | None = None) -> RewardFunction:
    """Load a reward from ``"module:function"``, ``"path/to/file.py:function"`` or a built-in name (``"math"``).

    The loaded callable goes through :func:`as_reward_function` (``kind`` as there).
    """
    if spec in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[spec]()
    if ":" not in spec:
        raise ValueError(
            f"reward {spec!r}: expected 'module:function', 'path/to/file.py:function' "
            f"or a built-in ({', '.join(BUILTIN_REWARDS)})"
        )
    where, attr = spec.rsplit(":", 1)
    if not where or not attr:
        raise ValueError(f"reward {spec!r}: both the module (or file) and the function name are needed")
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _load_file(Path(where))
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as err:
            raise ValueError(f"reward {spec!r}: cannot import module {where!r} ({err})") from err
    if not hasattr(module, attr):
        available = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ValueError(f"reward {spec!r}: {where!r} has no attribute {attr!r}; callables there: {available}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise ValueError(f"reward {spec!r}: {attr!r} is a {type(fn).__name__}, not a function")
    return as_reward_function(fn, kind=kind)
