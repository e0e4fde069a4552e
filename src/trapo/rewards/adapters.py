"""Bring the reward functions users already have: one interface for the trainer, adapters for the rest.

The trainer calls a :data:`RewardFunction`: ``fn(completions, examples) -> list[float]``, one score per
completion, where ``examples[i]`` is the problem ``completions[i]`` answers. :func:`as_reward_function`
wraps the three signatures found in the wild:

- ``per_sample``: ``fn(completion: str, ground_truth: str) -> float`` (like :func:`math_reward`);
- ``trl``: TRL's ``fn(prompts, completions, **kwargs) -> list[float]``, called with the keywords TRL passes:
  ``prompts``, ``completions``, ``completion_ids`` (token ids of each completion: expert prefix + the model's
  continuation, where the completion is a :class:`Completion`), ``trainer_state`` (a
  ``transformers.TrainerState``: ``global_step``, ``max_steps``), and the data set's other columns as lists
  (:attr:`Example.columns`: every column of the row but the prompt), after ours: ``ground_truth``,
  ``answer`` and ``solution`` (all three the example's answer), ``data_source``, ``extra_info`` (the verl
  ``extra_info`` dict) and ``expert_solutions``; a row's own column of the same name wins. A function
  without ``**kwargs`` gets only the keywords it names. ``None`` scores (TRL's "not applicable") become NaN,
  which :func:`score_rewards` counts and zeroes;
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
import numbers
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trapo.rewards.math_answers import check_answer
from trapo.rewards.timeout import CallTimeout, ProcessCaller, WorkerError, call_with_timeout

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
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(positional) == 2:
        return "per_sample"
    raise ValueError(f"cannot tell the signature of reward {getattr(fn, '__name__', fn)!r} {names}; {_SIGNATURES_HELP}")


# Ways a reward can fail to score an item, as counted per step (``reward/failed_<kind>``).
FAILURE_KINDS = ("error", "timeout", "nan", "non_number", "unverifiable")


class RewardTypeError(TypeError):
    """A reward returned something that is not a number."""


class ScoreCountError(ValueError):
    """A reward returned a different number of scores than completions: it is broken, not flaky."""


def _counted(scores: list, n: int, who: str) -> list:
    """``scores`` when there is one per completion, else :class:`ScoreCountError` naming ``who``."""
    if len(scores) != n:
        raise ScoreCountError(f"{who} returned {len(scores)} scores for {n} completions")
    return scores


class FailedScore(float):
    """A score of 0.0 that records why the item could not be scored (``kind`` in :data:`FAILURE_KINDS`).

    The built-in math reward returns one for a ground truth it cannot verify; a reward of any signature
    may return one too. It counts as a reward failure, not as a wrong answer.
    """

    kind: str
    detail: str

    def __new__(cls, kind: str, detail: str = "") -> FailedScore:
        obj = super().__new__(cls, 0.0)
        obj.kind, obj.detail = kind, detail
        return obj

    def __reduce__(self):
        return (FailedScore, (self.kind, self.detail))


def _score(value: Any) -> float:
    if value is None:
        return math.nan
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
                _score(
                    fn(
                        data_source=e.data_source,
                        solution_str=c,
                        ground_truth=e.answer,
                        extra_info=e.to_verl_row()["extra_info"],
                    )
                )
                for c, e in zip(completions, examples, strict=True)
            ]

    else:  # trl
        names, takes_kwargs = _parameters(fn)

        def wrapped(completions: list[str], examples: list[Example]) -> list[float]:
            _check_lengths(completions, examples)
            columns = _columns(completions, examples, conversational)
            if not takes_kwargs:
                columns = {k: v for k, v in columns.items() if k in names}
            scores = _counted(list(fn(**columns)), len(completions), f"reward {name!r}")
            return [_score(v) for v in scores]

    wrapped.__name__ = name
    wrapped.__doc__ = f"{name} ({kind} reward) as a trapo RewardFunction."
    wrapped._trapo_reward_kind = "batch"  # wrapping twice is a no-op
    return wrapped


@dataclass
class RewardScores:
    """What :func:`score_rewards` made of one reward call: a score per item (failures score 0.0), the
    failures by kind (:data:`FAILURE_KINDS`) and the first failure's message."""

    scores: list[float]
    failures: Counter = field(default_factory=Counter)
    first_error: str = ""

    @property
    def n_failed(self) -> int:
        return sum(self.failures.values())


def _kind_of(err: BaseException) -> str:
    if isinstance(err, CallTimeout):
        return "timeout"
    if isinstance(err, RewardTypeError) or (isinstance(err, WorkerError) and str(err).startswith("RewardTypeError")):
        return "non_number"
    return "error"


def _as_scores(values: Any, n: int) -> list[float]:
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise RewardTypeError(f"the reward returned a {type(values).__name__}, not a list of {n} scores")
    return _counted([_score(v) for v in values], n, "the reward")


def score_rewards(fn: RewardFunction, completions: list[str], examples: list[Example]) -> RewardScores:
    """Score a batch without letting the reward crash training, and say what failed.

    The batch is scored in one call. If that raises, every item is scored on its own (an item that raises
    fails); if it times out or returns the wrong number of scores, every item fails (no second try: a
    hanging reward costs one bound per call, and a reward that returns one score for N completions is
    broken, not flaky). Failed items score 0.0: NaN/inf/None, non-numbers, errors, timeouts and
    :class:`FailedScore` items (e.g. unverifiable ground truths).
    """
    _check_lengths(completions, examples)
    result = RewardScores([])

    def fail(kind: str, message: str) -> float:
        result.failures[kind] += 1
        result.first_error = result.first_error or message
        return 0.0

    n = len(completions)
    try:
        raw: list[float] = _as_scores(fn(completions, examples), n)
    except Exception as err:
        message = f"{type(err).__name__}: {err}" if not isinstance(err, WorkerError) else str(err)
        if message.startswith(f"{ScoreCountError.__name__}:"):  # here or in a worker: broken, not flaky
            result.scores = [fail("error", message) for _ in range(n)]
            return result
        logger.debug("reward failed on a batch of %d (%s); scoring item by item", n, message)
        raw = []
        for i, (c, e) in enumerate(zip(completions, examples, strict=True)):
            try:
                raw.extend(_as_scores(fn([c], [e]), 1))
            except CallTimeout as item_err:  # the rest would cost a bound each: they fail without a call
                raw.extend(FailedScore("timeout", f"CallTimeout: {item_err}") for _ in range(n - i))
                break
            except Exception as item_err:
                raw.append(
                    FailedScore(
                        _kind_of(item_err),
                        str(item_err)
                        if isinstance(item_err, WorkerError)
                        else f"{type(item_err).__name__}: {item_err}",
                    )
                )
    except CallTimeout as err:
        result.scores = [fail("timeout", f"the reward call {err}") for _ in range(n)]
        return result
    for v in raw:
        if isinstance(v, FailedScore):
            result.scores.append(fail(v.kind, v.detail or v.kind))
        elif not math.isfinite(v):
            result.scores.append(fail("nan", f"the reward returned {v}"))
        else:
            result.scores.append(float(v))
    return result


class RewardSet:
    """Several rewards as one :data:`RewardFunction`: their weighted sum (TRL's ``reward_funcs`` with
    ``reward_weights``), each also recorded on its own for the logs (:meth:`pop_stats`).

    As in TRL, a function's ``None`` (NaN) for an item leaves it out of that item's sum; an item where every
    function gives NaN scores NaN, and an item any function marks as failed (:class:`FailedScore`) keeps
    that mark: both count as reward failures and score 0 (:func:`score_rewards`).
    """

    _trapo_reward_kind = "batch"

    def __init__(
        self,
        functions: Sequence[RewardFunction],
        weights: Sequence[float] | None = None,
        names: Sequence[str] | None = None,
    ):
        if not functions:
            raise ValueError("reward_funcs is empty; pass at least one reward function")
        weights = [1.0] * len(functions) if weights is None else [float(w) for w in weights]
        if len(weights) != len(functions):
            raise ValueError(f"reward_weights has {len(weights)} weights for {len(functions)} reward functions")
        self.functions, self.weights = list(functions), weights
        base = list(names) if names else [getattr(f, "__name__", f"reward_{i}") for i, f in enumerate(functions)]
        self.names = [n if base.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(base)]
        self.__name__ = "+".join(self.names)
        self._sums: dict[str, float] = {n: 0.0 for n in self.names}
        self._counts: dict[str, float] = {n: 0.0 for n in self.names}

    def __call__(self, completions: list[str], examples: list[Example]) -> list[float]:
        _check_lengths(completions, examples)
        per_function = []
        for fn, name in zip(self.functions, self.names, strict=True):
            per_function.append(
                _counted([_score(v) for v in fn(completions, examples)], len(completions), f"reward {name!r}")
            )
        for name, scores in zip(self.names, per_function, strict=True):  # recorded once every function succeeded
            scored = [v for v in scores if math.isfinite(v) and not isinstance(v, FailedScore)]
            self._sums[name] += sum(scored)
            self._counts[name] += len(scored)
        out: list[float] = []
        for i in range(len(completions)):
            failed = next((s[i] for s in per_function if isinstance(s[i], FailedScore)), None)
            parts = [w * s[i] for w, s in zip(self.weights, per_function, strict=True) if not math.isnan(s[i])]
            out.append(failed if failed is not None else sum(parts) if parts else math.nan)
        return out

    def pop_stats(self) -> dict[str, tuple[float, float]]:
        """``name -> (sum of finite scores, their count)`` since the last call; resets."""
        stats = {n: (self._sums[n], self._counts[n]) for n in self.names}
        self._sums = {n: 0.0 for n in self.names}
        self._counts = {n: 0.0 for n in self.names}
        return stats


def reward_set(reward_funcs: Any, weights: Sequence[float] | None = None, *, conversational: bool = False) -> RewardSet:
    """TRL's ``reward_funcs`` (one or a list of: a callable in any supported signature, a built-in name
    such as ``"math"``, ``"module:function"`` or ``"file.py:function"``) as a :class:`RewardSet`."""
    items = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    functions = []
    for item in items:
        if isinstance(item, str):
            if item not in BUILTIN_REWARDS and ":" not in item:
                raise ValueError(
                    f"reward {item!r}: reward models (a model id in reward_funcs) are not supported; "
                    "pass a function, a built-in name (math) or 'module:function'"
                )
            functions.append(load_reward(item))
        elif callable(item) and not hasattr(item, "forward"):
            wrapped = as_reward_function(item, conversational=conversational)
            for flag in ("_trapo_process", "_trapo_builtin"):  # how the trainer bounds it (bounded_reward)
                if getattr(item, flag, False):
                    setattr(wrapped, flag, True)
            functions.append(wrapped)
        else:
            raise ValueError(f"reward {type(item).__name__}: reward models are not supported; pass a function")
    return RewardSet(functions, weights)


def bounded_reward(fn: RewardFunction, timeout_s: float, *, process: bool = False) -> RewardFunction:
    """``fn`` with a wall-clock bound of ``timeout_s`` per call (raising :class:`CallTimeout`).

    ``process=True`` runs it in a forked worker process (:class:`ProcessCaller`): the bound then holds for
    any code (sleeps, C extensions, a hung socket) and from any thread. Otherwise it runs in-process under
    :func:`call_with_timeout` (Python code only). The built-in math reward bounds each check itself and is
    returned unchanged.
    """
    if timeout_s <= 0 or getattr(fn, "_trapo_builtin", False):
        return fn
    if process:
        caller = ProcessCaller(fn)

        def in_worker(completions: list[str], examples: list[Example]) -> list[float]:
            return caller(list(completions), list(examples), timeout_s=timeout_s)

        in_worker._trapo_caller = caller
        wrapped = in_worker
    else:

        def wrapped(completions: list[str], examples: list[Example]) -> list[float]:
            return call_with_timeout(lambda: fn(completions, examples), timeout_s)

    wrapped.__name__ = getattr(fn, "__name__", "reward")
    wrapped._trapo_reward_kind = "batch"
    return wrapped


def in_worker_process(fn: RewardFunction) -> RewardFunction:
    """Mark ``fn`` to be run in a worker process by the trainer (what ``trapo train --reward`` does)."""
    fn._trapo_process = True
    return fn


def _math_scores(completions: list[str], examples: list[Example]) -> list[float]:
    out: list[float] = []
    for c, e in zip(completions, examples, strict=True):
        verdict = check_answer(c, e.answer)
        if verdict.status == "unverifiable_ground_truth":
            out.append(FailedScore("unverifiable", verdict.detail))
        else:
            out.append(verdict.score)
    return out


def default_reward() -> RewardFunction:
    """:func:`math_reward` as a :data:`RewardFunction`; an unverifiable ground truth scores a
    :class:`FailedScore` (0.0, counted as a reward failure) instead of a silent 0.0."""
    fn = as_reward_function(_math_scores, kind="batch")
    fn.__name__ = "math_reward"
    fn._trapo_builtin = True
    return fn


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
