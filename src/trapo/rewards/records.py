"""A reward as an explicit record (:class:`Reward`): the function, its signature, weight, name and bound.

Everything the trainer needs to know about a reward lives in the record, not in attributes set on the
user's function. :func:`as_reward` makes one from anything ``reward_funcs`` may hold (a callable, a
built-in name, ``"module:function"``, ``"file.py:function"``, a record); :func:`load_reward` from a spec.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trapo.rewards.adapters import KINDS, FailedScore, RewardKind, call_reward, detect_kind, is_async, to_scores
from trapo.rewards.math_answers import check_answer

if TYPE_CHECKING:
    from trapo.data.schema import Example


@dataclass(frozen=True)
class Reward:
    """One reward function and how the trainer runs it.

    Attributes:
        function: the user's callable, unchanged.
        kind: its signature (``per_sample`` / ``trl`` / ``verl`` / ``batch``); detected when not given.
        weight: its weight in the weighted sum (TRL's ``reward_weights`` override it).
        name: logged as ``rewards/<name>``; default the function's ``__name__``.
        timeout: seconds one call may take; ``None``: the trainer's ``reward_timeout``; 0: unbounded.
        process: run it in a worker process, where the bound holds for any code (``trapo train --reward``).
        conversational: TRL rewards get chat messages (set from the data by the trainer).
        source: where it was loaded from (``math``, ``module:function``, an absolute ``file.py:function``);
            empty for a callable passed in. :func:`reward_identity` reads it.

    Calling a record scores a batch: ``reward(completions, examples) -> list[float]`` (unbounded, in
    this process; the trainer bounds it through :class:`trapo.rewards.RewardSet`).
    """

    function: Callable
    kind: RewardKind | None = None
    weight: float = 1.0
    name: str = ""
    timeout: float | None = None
    process: bool = False
    conversational: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if not callable(self.function):
            raise ValueError(f"reward must be callable, got {type(self.function).__name__}")
        kind = self.kind if self.kind is not None else detect_kind(self.function)
        if kind not in KINDS:
            raise ValueError(f"unknown reward kind {kind!r}; choose one of {', '.join(KINDS)}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "weight", float(self.weight))
        if not self.name:
            object.__setattr__(self, "name", getattr(self.function, "__name__", type(self.function).__name__))

    @property
    def is_async(self) -> bool:
        return is_async(self.function)

    @property
    def checks_math(self) -> bool:
        """The built-in math reward (its ground truths are checked up front by the trainer)."""
        return self.function is math_scores

    def call(self, completions: Sequence[str], examples: Sequence[Example], log: Any = None) -> Any:
        """The function's raw return value on a batch (an awaitable where it is async)."""
        return call_reward(self.function, self.kind, completions, examples, conversational=self.conversational, log=log)

    def __call__(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        out = self.call(completions, examples)
        if self.is_async:
            out = asyncio.run(out)
        return to_scores(out, len(completions), f"reward {self.name!r}")


def math_scores(completions: list[str], examples: list[Example]) -> list[float]:
    """:func:`math_reward` per completion; an unverifiable ground truth scores a :class:`FailedScore`
    (0.0, counted as a reward failure) instead of a silent 0.0."""
    out: list[float] = []
    for c, e in zip(completions, examples, strict=True):
        verdict = check_answer(c, e.answer)
        unverifiable = verdict.status == "unverifiable_ground_truth"
        out.append(FailedScore("unverifiable", verdict.detail) if unverifiable else verdict.score)
    return out


def default_reward() -> Reward:
    """The built-in math reward; it bounds each check itself (``timeout=0``: no outer bound)."""
    return Reward(math_scores, "batch", name="math_reward", timeout=0, source="math")


BUILTIN_REWARDS = {"math": default_reward}


def as_reward_function(fn: Callable, kind: RewardKind | None = None, *, conversational: bool = False) -> Reward:
    """``fn`` as a :class:`Reward` (callable as ``reward(completions, examples) -> list[float]``)."""
    if isinstance(fn, Reward):
        return dataclasses.replace(fn, conversational=conversational or fn.conversational)
    return Reward(fn, kind, conversational=conversational)


def as_reward(item: Any, *, conversational: bool = False) -> Reward:
    """One entry of TRL's ``reward_funcs`` as a :class:`Reward`: a record, a callable in any supported
    signature, a built-in name (``"math"``), ``"module:function"`` or ``"file.py:function"``."""
    if isinstance(item, Reward):
        return dataclasses.replace(item, conversational=conversational or item.conversational)
    if isinstance(item, str):
        if item not in BUILTIN_REWARDS and ":" not in item:
            raise ValueError(
                f"reward {item!r}: reward models (a model id in reward_funcs) are not supported; "
                "pass a function, a built-in name (math) or 'module:function'"
            )
        return dataclasses.replace(load_reward(item), conversational=conversational)
    if callable(item) and not hasattr(item, "forward"):
        return Reward(item, conversational=conversational)
    raise ValueError(f"reward {type(item).__name__}: reward models are not supported; pass a function")


def _exec_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"reward file {str(path)!r} does not exist")
    module_name = "trapo_user_reward_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import reward file {str(path)!r} (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _import(where: str) -> Any:
    """The module of a reward spec (a file path or a module name). Whatever its import does wrong (an
    import or syntax error, an exception, ``sys.exit``) becomes one ``ValueError`` naming the module; only
    Ctrl-C passes through."""
    failed = f"importing reward file {where!r} failed" if _is_file(where) else f"cannot import module {where!r}"
    try:
        return _exec_file(Path(where)) if _is_file(where) else importlib.import_module(where)
    except (KeyboardInterrupt, FileNotFoundError):
        raise
    except SystemExit as err:
        raise ValueError(f"{failed}: it called sys.exit({err.code!r}) while being imported") from None
    except SyntaxError as err:
        raise ValueError(f"{failed}: SyntaxError: {err.msg} ({err.filename or where}, line {err.lineno})") from None
    except BaseException as err:
        raise ValueError(f"{failed}: {type(err).__name__}: {err}") from None


def load_reward(spec: str, kind: RewardKind | None = None, **fields: Any) -> Reward:
    """A :class:`Reward` from ``"module:function"``, ``"path/to/file.py:function"`` or a built-in name
    (``"math"``); ``kind`` and other record ``fields`` (``process=True`` ...) as in :class:`Reward`."""
    if spec in BUILTIN_REWARDS:
        return dataclasses.replace(BUILTIN_REWARDS[spec](), **fields)
    if ":" not in spec:
        raise ValueError(
            f"reward {spec!r}: expected 'module:function', 'path/to/file.py:function' "
            f"or a built-in ({', '.join(BUILTIN_REWARDS)})"
        )
    where, attr = spec.rsplit(":", 1)
    if not where or not attr:
        raise ValueError(f"reward {spec!r}: both the module (or file) and the function name are needed")
    module = _import(where)
    if not hasattr(module, attr):
        available = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ValueError(f"reward {spec!r}: {where!r} has no attribute {attr!r}; callables there: {available}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise ValueError(f"reward {spec!r}: {attr!r} is a {type(fn).__name__}, not a function")
    source = f"{Path(where).resolve()}:{attr}" if _is_file(where) else spec
    return Reward(fn, kind, **{"source": source, **fields})
