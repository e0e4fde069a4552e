"""Score a batch with several rewards, each bounded, none able to crash training.

:class:`RewardSet` is the one path every reward takes: TRL's ``reward_funcs`` with ``reward_weights`` as
:class:`~trapo.rewards.Reward` records, their weighted sum the reward, each function's mean (and std) and
what the functions logged (``log_metric``) collected for the step's metrics. Each call is bounded by the
record's ``timeout``: in this process by :func:`call_with_timeout` (Python code), in a worker process
(``process=True``) by killing the worker, and for ``async`` rewards by ``asyncio.wait_for``; async rewards
run concurrently with each other and with the synchronous ones, on one event loop in a daemon thread (as
TRL does). :func:`score_rewards` turns what failed into counted zeros.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import inspect
import logging
import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from trapo.rewards.adapters import (
    FailedScore,
    RewardLog,
    RewardTypeError,
    ScoreCountError,
    to_scores,
)
from trapo.rewards.records import Reward, as_reward
from trapo.rewards.timeout import CallTimeout, ProcessCaller, WorkerError, call_with_timeout

if TYPE_CHECKING:
    from trapo.data.schema import Example

logger = logging.getLogger(__name__)

# Ways a reward can fail to score an item, as counted per step (``reward/failed_<kind>``).
FAILURE_KINDS = ("error", "timeout", "nan", "non_number", "unverifiable")


class FunctionStats(NamedTuple):
    """One reward function's finite scores since the last :meth:`RewardSet.pop_stats`."""

    total: float
    squares: float
    count: float


def _in_worker(reward: Reward, completions: list[str], examples: list[Example]) -> tuple[Any, RewardLog]:
    """Run in the worker process: the reward's raw values (awaited there when async) and what it logged."""
    log = RewardLog()
    out = reward.call(completions, examples, log)
    if inspect.isawaitable(out):
        out = asyncio.run(out)
    return (list(out) if isinstance(out, list | tuple) else out), log


class _EventLoop:
    """One asyncio loop in a daemon thread, started on first use, where async rewards run."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def submit(self, coro: Any, timeout: float) -> concurrent.futures.Future:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, daemon=True, name="trapo-rewards").start()
        bounded = asyncio.wait_for(coro, timeout) if timeout > 0 else coro
        return asyncio.run_coroutine_threadsafe(bounded, self._loop)


class RewardSet:
    """Several rewards as one ``fn(completions, examples) -> list[float]``: their weighted sum (TRL's
    ``reward_funcs`` with ``reward_weights``), each also recorded on its own (:meth:`pop_stats`).

    As in TRL, a function's ``None`` (NaN) for an item leaves it out of that item's sum; an item where every
    function gives NaN scores NaN, and an item any function marks as failed (:class:`FailedScore`) keeps
    that mark: both count as reward failures and score 0 (:func:`score_rewards`).
    """

    def __init__(self, rewards: Sequence[Reward], timeout: float = 0.0):
        if not rewards:
            raise ValueError("reward_funcs is empty; pass at least one reward function")
        self.rewards = list(rewards)
        self.timeout = timeout
        base = [r.name for r in self.rewards]
        self.names = [n if base.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(base)]
        self.__name__ = "+".join(self.names)
        self._workers: dict[int, ProcessCaller] = {}
        self._loop = _EventLoop()
        self.last_log = RewardLog()  # what the last successful call logged
        self._logged = RewardLog()
        self._stats = {n: FunctionStats(0.0, 0.0, 0.0) for n in self.names}

    @property
    def weights(self) -> list[float]:
        return [r.weight for r in self.rewards]

    def _bound(self, reward: Reward) -> float:
        return reward.timeout if reward.timeout is not None else self.timeout

    def _run(self, i: int, reward: Reward, completions: list[str], examples: list[Example], log: RewardLog) -> Any:
        """One synchronous (or worker-process) reward's raw values, bounded."""
        bound = self._bound(reward)
        if reward.process:
            if i not in self._workers:
                self._workers[i] = ProcessCaller(functools.partial(_in_worker, reward))
            out, worker_log = self._workers[i](list(completions), list(examples), timeout_s=bound)
            log.merge(worker_log)
            return out
        return call_with_timeout(lambda: reward.call(completions, examples, log), bound)

    def _call_all(self, completions: list[str], examples: list[Example]) -> tuple[list[Any], RewardLog]:
        logs = [RewardLog() for _ in self.rewards]
        started = {
            i: self._loop.submit(r.call(completions, examples, logs[i]), self._bound(r))
            for i, r in enumerate(self.rewards)
            if r.is_async and not r.process
        }
        try:
            outputs = {
                i: self._run(i, r, completions, examples, logs[i])
                for i, r in enumerate(self.rewards)
                if i not in started
            }
            for i, future in started.items():
                try:
                    outputs[i] = future.result()
                except TimeoutError:
                    bound = self._bound(self.rewards[i])
                    raise CallTimeout(f"reward {self.names[i]!r} timed out after {bound} s") from None
        finally:
            for future in started.values():
                future.cancel()
        merged = RewardLog()
        for log in logs:
            merged.merge(log)
        return [outputs[i] for i in range(len(self.rewards))], merged

    def __call__(self, completions: list[str], examples: list[Example]) -> list[float]:
        if len(completions) != len(examples):
            raise ValueError(f"got {len(completions)} completions but {len(examples)} examples")
        outputs, log = self._call_all(completions, examples)
        n = len(completions)
        per_function = [to_scores(out, n, f"reward {name!r}") for out, name in zip(outputs, self.names, strict=True)]
        for name, scores in zip(self.names, per_function, strict=True):  # recorded once every function succeeded
            scored = [v for v in scores if math.isfinite(v) and not isinstance(v, FailedScore)]
            old = self._stats[name]
            self._stats[name] = FunctionStats(
                old.total + sum(scored), old.squares + sum(v * v for v in scored), old.count + len(scored)
            )
        self._logged.merge(log)
        self.last_log = log
        weights = self.weights
        out: list[float] = []
        for i in range(n):
            failed = next((s[i] for s in per_function if isinstance(s[i], FailedScore)), None)
            parts = [w * s[i] for w, s in zip(weights, per_function, strict=True) if not math.isnan(s[i])]
            out.append(failed if failed is not None else sum(parts) if parts else math.nan)
        return out

    def pop_stats(self) -> dict[str, FunctionStats]:
        """Each function's finite scores since the last call (sum, sum of squares, count); resets."""
        stats, self._stats = self._stats, {n: FunctionStats(0.0, 0.0, 0.0) for n in self.names}
        return stats

    def pop_metrics(self) -> dict[str, tuple[float, float]]:
        """What the rewards logged with ``log_metric`` since the last call: ``name -> (sum, count)``; resets."""
        logged, self._logged = self._logged, RewardLog()
        return {name: (sum(values), float(len(values))) for name, values in logged.metrics.items()}

    @property
    def checks_math(self) -> bool:
        return any(r.checks_math for r in self.rewards)

    def close(self) -> None:
        """Stop the worker processes (a new call starts them again)."""
        for worker in self._workers.values():
            worker.close()


def reward_set(
    reward_funcs: Any,
    weights: Sequence[float] | None = None,
    *,
    timeout: float = 0.0,
    conversational: bool = False,
) -> RewardSet:
    """TRL's ``reward_funcs`` (one or a list of: a :class:`Reward`, a callable in any supported signature, a
    built-in name such as ``"math"``, ``"module:function"`` or ``"file.py:function"``) as a :class:`RewardSet`;
    ``weights`` (TRL's ``reward_weights``) override the records' weights; ``timeout`` bounds each call of a
    record whose own ``timeout`` is ``None``."""
    items = list(reward_funcs) if isinstance(reward_funcs, list | tuple) else [reward_funcs]
    rewards = [as_reward(item, conversational=conversational) for item in items]
    if weights is not None:
        if len(weights) != len(rewards):
            raise ValueError(f"reward_weights has {len(weights)} weights for {len(rewards)} reward functions")
        rewards = [dataclasses.replace(r, weight=float(w)) for r, w in zip(rewards, weights, strict=True)]
    return RewardSet(rewards, timeout)


def reward_identity(rewards: RewardSet | Reward) -> str:
    """What the rewards are, stably across processes (stored with a run, compared on resume): each
    record's ``source`` (``math``, ``module:function``, an absolute ``file.py:function``), else its function's
    module and qualified name; a :class:`RewardSet` joins its records' identities with their weights (a
    weight of 1 unwritten)."""
    if isinstance(rewards, RewardSet):
        return " + ".join(
            reward_identity(r) if r.weight == 1 else f"{r.weight:g}*{reward_identity(r)}" for r in rewards.rewards
        )
    fn = rewards.function
    return rewards.source or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


@dataclass
class RewardScores:
    """What :func:`score_rewards` made of one reward call: a score per item (failures score 0.0), the
    failures by kind (:data:`FAILURE_KINDS`), the first failure's message, and the columns the rewards
    logged with ``log_extra`` (one value per item; absent where the batch was scored item by item)."""

    scores: list[float]
    failures: Counter = field(default_factory=Counter)
    first_error: str = ""
    extra: dict[str, list] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        return sum(self.failures.values())

    def fail(self, kind: str, message: str) -> float:
        self.failures[kind] += 1
        self.first_error = self.first_error or message
        return 0.0


def _message(err: BaseException) -> str:
    return str(err) if isinstance(err, WorkerError) else f"{type(err).__name__}: {err}"


def _kind_of(err: BaseException) -> str:
    if isinstance(err, CallTimeout):
        return "timeout"
    if isinstance(err, RewardTypeError) or (isinstance(err, WorkerError) and str(err).startswith("RewardTypeError")):
        return "non_number"
    return "error"


def _item_by_item(fn: Any, completions: list[str], examples: list[Example]) -> list[float]:
    raw: list[float] = []
    n = len(completions)
    for i, (c, e) in enumerate(zip(completions, examples, strict=True)):
        try:
            raw.extend(to_scores(fn([c], [e]), 1))
        except CallTimeout as err:  # the rest would cost a bound each: they fail without a call
            raw.extend(FailedScore("timeout", f"CallTimeout: {err}") for _ in range(n - i))
            break
        except Exception as err:
            raw.append(FailedScore(_kind_of(err), _message(err)))
    return raw


def score_rewards(fn: Any, completions: list[str], examples: list[Example]) -> RewardScores:
    """Score a batch with ``fn`` (a :class:`RewardSet` or any ``fn(completions, examples)``) without
    letting the reward crash training, and say what failed.

    The batch is scored in one call. If that raises, every item is scored on its own (an item that raises
    fails); if it times out or returns the wrong number of scores, every item fails (no second try: a
    hanging reward costs one bound per call, and a reward that returns one score for N completions is
    broken, not flaky). Failed items score 0.0: NaN/inf/None, non-numbers, errors, timeouts and
    :class:`FailedScore` items (e.g. unverifiable ground truths).
    """
    if len(completions) != len(examples):
        raise ValueError(f"got {len(completions)} completions but {len(examples)} examples")
    result, n = RewardScores([]), len(completions)
    try:
        raw = to_scores(fn(completions, examples), n)
        if isinstance(fn, RewardSet):
            result.extra = {k: v for k, v in fn.last_log.extra.items() if len(v) == n}
    except CallTimeout as err:
        result.scores = [result.fail("timeout", f"the reward call {err}") for _ in range(n)]
        return result
    except Exception as err:
        message = _message(err)
        if message.startswith(f"{ScoreCountError.__name__}:"):  # here or in a worker: broken, not flaky
            result.scores = [result.fail("error", message) for _ in range(n)]
            return result
        logger.debug("reward failed on a batch of %d (%s); scoring item by item", n, message)
        raw = _item_by_item(fn, completions, examples)
    for v in raw:
        if isinstance(v, FailedScore):
            result.scores.append(result.fail(v.kind, v.detail or v.kind))
        elif not math.isfinite(v):
            result.scores.append(result.fail("nan", f"the reward returned {v}"))
        else:
            result.scores.append(float(v))
    return result
