"""Call the reward functions users already have, whatever their signature.

Four signatures (``kind``), detected from the parameter names by :func:`detect_kind`:

- ``per_sample``: ``fn(completion: str, ground_truth: str) -> float`` (like :func:`math_reward`);
- ``trl``: TRL's ``fn(prompts, completions, **kwargs) -> list[float]``, or any subset of TRL's keywords
  (:data:`TRL_KEYWORDS`) and data set columns, with or without ``**kwargs``. It gets what TRL passes:
  ``prompts``, ``completions``, ``completion_ids`` (token ids of each completion: expert prefix + the
  model's continuation, where the completion is a :class:`Completion`), ``trainer_state`` (a
  ``transformers.TrainerState``), ``log_extra(column, values)`` and ``log_metric(name, value)``, and the
  data set's other columns as lists (:attr:`Example.columns`), after ours: ``ground_truth``, ``answer``
  and ``solution`` (the example's answer), ``data_source``, ``extra_info`` (the verl dict) and
  ``expert_solutions``; a row's own column of the same name wins. A function without ``**kwargs`` gets
  only the keywords it names;
- ``verl``: ``compute_score(data_source, solution_str, ground_truth, extra_info) -> float | dict`` (a
  dict's ``"score"`` is used), called once per completion;
- ``batch``: ``fn(completions, examples) -> list[float]`` (trapo's own form).

Any of them may be ``async def`` (:func:`is_async`): :func:`call_reward` then returns an awaitable, which
:mod:`trapo.rewards.scoring` runs concurrently with the other rewards. ``None`` scores (TRL's "not
applicable") become NaN. The layer below data: examples are used by duck typing (``.answer``, ``.prompt``,
``.data_source``, ``.to_verl_row()``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from trapo.data.schema import Example

RewardKind = Literal["per_sample", "trl", "verl", "batch"]
KINDS: tuple[str, ...] = ("per_sample", "trl", "verl", "batch")
# What TRL passes every reward besides the data set's columns.
TRL_KEYWORDS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric")

SIGNATURES_HELP = (
    "supported reward signatures: per-sample fn(completion, ground_truth) -> float; "
    "TRL fn(prompts, completions, **kwargs) -> list[float] (any of TRL's keywords: "
    f"{', '.join(TRL_KEYWORDS)}, or data set columns); "
    "verl compute_score(data_source, solution_str, ground_truth, extra_info) -> float | dict; "
    "batch fn(completions, examples) -> list[float]. Pass kind=... to choose explicitly"
)


def _signature(fn: Callable) -> inspect.Signature:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError) as err:
        raise ValueError(f"cannot read the signature of reward {fn!r}: {err}; {SIGNATURES_HELP}") from err


def parameters(fn: Callable) -> tuple[list[str], bool]:
    """Names of ``fn``'s named parameters and whether it takes ``**kwargs``."""
    params = _signature(fn).parameters.values()
    names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def is_async(fn: Callable) -> bool:
    """Whether calling ``fn`` returns a coroutine (``async def``, a partial of one, or an async ``__call__``)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def detect_kind(fn: Callable) -> RewardKind:
    """Which signature ``fn`` has, from its parameter names (see the module docstring)."""
    names, takes_kwargs = parameters(fn)
    name_set = set(names)
    if {"data_source", "solution_str", "ground_truth"} <= name_set:
        return "verl"
    if "examples" in name_set and "prompts" not in name_set:
        return "batch"
    if name_set & set(TRL_KEYWORDS) or takes_kwargs:
        return "trl"
    positional = [
        p
        for p in _signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(positional) == 2:
        return "per_sample"
    raise ValueError(f"cannot tell the signature of reward {getattr(fn, '__name__', fn)!r} {names}; {SIGNATURES_HELP}")


class RewardTypeError(TypeError):
    """A reward returned something that is not a number."""


class ScoreCountError(ValueError):
    """A reward returned a different number of scores than completions: it is broken, not flaky."""


def counted(scores: list, n: int, who: str) -> list:
    """``scores`` when there is one per completion, else :class:`ScoreCountError` naming ``who``."""
    if len(scores) != n:
        raise ScoreCountError(f"{who} returned {len(scores)} scores for {n} completions")
    return scores


class FailedScore(float):
    """A score of 0.0 that records why the item could not be scored (``kind``: a failure kind such as
    ``unverifiable``). The built-in math reward returns one for a ground truth it cannot verify; a reward
    of any signature may return one too. It counts as a reward failure, not as a wrong answer."""

    kind: str
    detail: str

    def __new__(cls, kind: str, detail: str = "") -> FailedScore:
        obj = super().__new__(cls, 0.0)
        obj.kind, obj.detail = kind, detail
        return obj

    def __reduce__(self):
        return (FailedScore, (self.kind, self.detail))


def to_score(value: Any) -> float:
    """One returned value as a float: ``None`` -> NaN, a dict's ``"score"``, a :class:`FailedScore` kept."""
    if isinstance(value, FailedScore):
        return value
    if isinstance(value, dict):
        if "score" not in value:
            raise ValueError(f"a reward returned a dict without a 'score' key: keys {sorted(value)}")
        value = value["score"]
    if value is None:
        return math.nan
    if isinstance(value, str) or (not isinstance(value, numbers.Real | bool) and not hasattr(value, "__float__")):
        raise RewardTypeError(f"the reward returned a {type(value).__name__} ({str(value)[:40]!r}), not a number")
    return float(value)


def to_scores(values: Any, n: int, who: str = "the reward") -> list[float]:
    """A call's return value as ``n`` floats (:func:`to_score` each), or an error saying what is wrong."""
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise RewardTypeError(f"{who} returned a {type(values).__name__}, not a list of {n} scores")
    return counted([to_score(v) for v in values], n, who)


class Completion(str):
    """A completion's text that also carries what TRL passes beside it: its token ids and the trainer state.

    It is a ``str`` (rewards that take text see text); the trainer builds these, and the TRL adapter reads
    ``token_ids`` into ``completion_ids`` and ``trainer_state`` into ``trainer_state``.
    """

    token_ids: list[int] | None
    trainer_state: Any

    def __new__(cls, text: str, token_ids: Sequence[int] | None = None, trainer_state: Any = None) -> Completion:
        obj = super().__new__(cls, text)
        obj.token_ids = None if token_ids is None else list(token_ids)
        obj.trainer_state = trainer_state
        return obj

    def __reduce__(self):  # pickles (for rewards run in another process) as a Completion
        return (Completion, (str(self), self.token_ids, self.trainer_state))


@dataclass
class RewardLog:
    """What rewards logged during calls: TRL's ``log_metric(name, value)`` (averaged over the step, as TRL
    does) and ``log_extra(column, values)`` (one value per completion of the call, as TRL's completions
    table). Plain data, so that a reward run in a worker process sends it back with its scores."""

    metrics: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, list] = field(default_factory=dict)

    def log_metric(self, name: str, value: float) -> None:
        self.metrics.setdefault(name, []).append(float(value))

    def log_extra(self, column: str, values: list) -> None:
        self.extra.setdefault(column, []).extend(values)

    def merge(self, other: RewardLog) -> None:
        for name, values in other.metrics.items():
            self.metrics.setdefault(name, []).extend(values)
        for column, values in other.extra.items():
            self.extra.setdefault(column, []).extend(values)


def trl_columns(
    completions: Sequence[str], examples: Sequence[Example], conversational: bool, log: RewardLog
) -> dict[str, Any]:
    """Every keyword TRL would pass a reward for these completions (see the module docstring)."""
    answers = [e.answer for e in examples]
    if conversational:
        prompts: list = [list(e.prompt) for e in examples]
        texts: list = [[{"role": "assistant", "content": c}] for c in completions]
    else:
        prompts, texts = [e.prompt_text for e in examples], list(completions)
    columns = {
        "ground_truth": answers,
        "answer": answers,
        "solution": answers,
        "data_source": [e.data_source for e in examples],
        "extra_info": [e.to_verl_row()["extra_info"] for e in examples],
        "expert_solutions": [list(e.expert_solutions) for e in examples],
    }
    own = [getattr(e, "columns", None) or {} for e in examples]
    for name in dict.fromkeys(k for row in own for k in row):
        columns[name] = [row.get(name) for row in own]
    state = next((c.trainer_state for c in completions if getattr(c, "trainer_state", None) is not None), None)
    return {
        **columns,
        "prompts": prompts,
        "completions": texts,
        "completion_ids": [getattr(c, "token_ids", None) for c in completions],
        "trainer_state": state,
        "log_extra": log.log_extra,
        "log_metric": log.log_metric,
    }


def call_reward(
    fn: Callable,
    kind: RewardKind,
    completions: Sequence[str],
    examples: Sequence[Example],
    *,
    conversational: bool = False,
    log: RewardLog | None = None,
) -> Any:
    """Call ``fn`` (of signature ``kind``) on a batch; returns what it returned (for a per-item kind, the
    list of its values), or an awaitable of that for an ``async`` reward."""
    if len(completions) != len(examples):
        raise ValueError(f"got {len(completions)} completions but {len(examples)} examples")
    pairs = list(zip(completions, examples, strict=True))
    if kind == "batch":
        return fn(list(completions), list(examples))
    if kind == "per_sample":
        return _gathered([fn(c, e.answer) for c, e in pairs])
    if kind == "verl":
        return _gathered([_verl_call(fn, c, e) for c, e in pairs])
    if kind != "trl":
        raise ValueError(f"unknown reward kind {kind!r}; choose one of {', '.join(KINDS)}")
    names, takes_kwargs = parameters(fn)
    columns = trl_columns(completions, examples, conversational, log if log is not None else RewardLog())
    if not takes_kwargs:
        columns = {k: v for k, v in columns.items() if k in names}
    return fn(**columns)


def _verl_call(fn: Callable, completion: str, example: Example) -> Any:
    return fn(
        data_source=example.data_source,
        solution_str=completion,
        ground_truth=example.answer,
        extra_info=example.to_verl_row()["extra_info"],
    )


def _gathered(values: list) -> Any:
    """``values``, or one awaitable of them all where the reward is async (one coroutine per item)."""
    if values and inspect.isawaitable(values[0]):

        async def gather() -> list:
            return list(await asyncio.gather(*values))

        return gather()
    return values
