"""The rollout-engine interface: token ids in, sampled continuation ids out.

An engine knows nothing about guidance, rewards or losses. The trainer hands it prompts that already
end with an expert prefix where guidance asks for one; the engine continues each of them. A vLLM or
SGLang engine is a new module implementing :class:`RolloutEngine`, nothing more.

Two ways in, one contract:

- :meth:`RolloutEngine.generate`: a whole batch, its continuations back in order (``sequential`` and
  ``speculative`` rollouts, evaluation).
- :meth:`RolloutEngine.open_stream`: continuous batching (``pipelined`` rollouts). :meth:`RolloutStream.submit`
  adds a request while others decode; :meth:`RolloutStream.step` advances decoding and returns the requests
  that finished. The default stream generates whatever was submitted in one ``generate_with_logprobs`` call
  per step (no overlap, still correct; ``VLLMEngine`` uses it, with its log-probs); an engine that can add
  rows to a running batch (``HFEngine``; for vLLM, ``LLMEngine.add_request`` / ``step``) overrides it.

Seeds: a request's ``seed`` names its own random stream, so its continuation is a function of (prompt,
budget, seed, weights) alone, not of the rows it was batched with or when it joined. With seeds, a stream and
``generate`` sample the same tokens (up to float rounding of different batch shapes); that is how pipelined
rollouts reproduce sequential ones (:mod:`trapo.rollout.sampling`).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature=0`` means greedy decoding."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.temperature < float("inf"):  # NaN fails too
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


class RolloutEngine(ABC):
    """Samples continuations of token-id prompts."""

    #: False for an engine that decodes on a copy of the weights of its own (vLLM), not on the training model:
    #: a sharded training model then need not be gathered for rollouts.
    decodes_on_training_model: bool = True

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[list[int]]:
        """Continue every prompt; return the new token ids of each, in order (``sampling`` defaults to
        ``SamplingParams()``).

        ``max_new_tokens`` is one budget for all prompts or one per prompt (a budget of 0 returns an
        empty continuation). A continuation stops at the first end-of-sequence token, which is kept as
        its last element; one that hits its budget has no EOS. ``generator`` makes sampling reproducible:
        the same prompts, budgets and generator state give the same continuations. ``seeds`` (one
        non-negative int below 2**63 per prompt), when given, replace ``generator``: each prompt samples
        from its own stream, whatever else is in the batch.
        """

    def generate_with_logprobs(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ) -> tuple[list[list[int]], list[list[float]] | None]:
        """:meth:`generate`, plus the engine's own log-prob of every token it sampled (one list per
        continuation), or None where the engine does not report them (this default: the engine is the
        trainer's model, whose log-probs the update computes anyway)."""
        return self.generate(prompts, max_new_tokens, sampling, generator, seeds=seeds), None

    def open_stream(self, sampling: SamplingParams | None = None) -> RolloutStream:
        """A :class:`RolloutStream` on this engine. The default runs one :meth:`generate` per step over the
        requests submitted since the last one; engines with continuous batching override it."""
        return BatchedStream(self, sampling or SamplingParams())

    def sync_weights(self, model: torch.nn.Module) -> None:  # noqa: B027 - optional hook
        """Called after every optimizer step. Engines that hold their own copy of the weights (vLLM)
        load ``model``'s weights here; engines that share the training model do nothing."""


def as_engine(engine: Any) -> RolloutEngine:
    """``engine`` as a :class:`RolloutEngine` that takes per-row ``seeds``: itself when it is one, else wrapped
    in :class:`AdaptedEngine`. The one place where engines written against an older or bare interface (any
    object with ``generate(prompts, max_new_tokens, sampling, generator)``) are adapted."""
    if isinstance(engine, RolloutEngine) and _takes_seeds(engine.generate):
        return engine
    if not callable(getattr(engine, "generate", None)):
        raise TypeError(f"a rollout engine needs a generate(prompts, max_new_tokens, ...) method; got {type(engine)}")
    return AdaptedEngine(engine)


def _takes_seeds(method: Any) -> bool:
    return "seeds" in inspect.signature(method).parameters


class AdaptedEngine(RolloutEngine):
    """An engine without per-row seeds, or not derived from :class:`RolloutEngine`, behind the full interface:
    it samples from the step's ``generator`` (its rows' samples then depend on their batch), gives its own
    ``generate_with_logprobs`` where it has one, and streams through :class:`BatchedStream`."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.decodes_on_training_model = getattr(inner, "decodes_on_training_model", True)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[list[int]]:
        per_row = self._seeds(self.inner.generate, seeds)
        return self.inner.generate(prompts, max_new_tokens, sampling, generator, **per_row)

    def generate_with_logprobs(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ) -> tuple[list[list[int]], list[list[float]] | None]:
        own = getattr(self.inner, "generate_with_logprobs", None)
        if (
            own is None
            or getattr(type(self.inner), "generate_with_logprobs", None) is RolloutEngine.generate_with_logprobs
        ):
            return self.generate(prompts, max_new_tokens, sampling, generator, seeds), None
        return own(prompts, max_new_tokens, sampling, generator, **self._seeds(own, seeds))

    def sync_weights(self, model: torch.nn.Module) -> None:
        if callable(getattr(self.inner, "sync_weights", None)):
            self.inner.sync_weights(model)

    @staticmethod
    def _seeds(method: Any, seeds: Sequence[int] | None) -> dict:
        return {"seeds": seeds} if seeds is not None and _takes_seeds(method) else {}


class RolloutStream(ABC):
    """Continuous batching: requests join while others decode (see the module docstring)."""

    @abstractmethod
    def submit(self, key: Hashable, prompt: Sequence[int], max_new_tokens: int, seed: int) -> None:
        """Queue a request: continue ``prompt`` for at most ``max_new_tokens`` tokens from the random stream
        ``seed``; ``key`` (unique among unfinished requests) names it in :meth:`step`'s answer."""

    @abstractmethod
    def step(self) -> list[tuple[Hashable, list[int], list[float] | None]]:
        """Advance decoding (at least one token for every running request, or admit queued ones) and return
        ``(key, continuation, log-probs)`` for each request that finished, in no particular order (log-probs as
        :meth:`RolloutEngine.generate_with_logprobs` gives them, None where the engine reports none)."""

    @property
    @abstractmethod
    def busy(self) -> bool:
        """Whether a submitted request has not been returned by :meth:`step` yet."""


class BatchedStream(RolloutStream):
    """The stream of an engine without continuous batching: each :meth:`step` generates every request
    submitted since the last one, in one :meth:`RolloutEngine.generate` call."""

    def __init__(self, engine: RolloutEngine, sampling: SamplingParams):
        self.engine, self.sampling = engine, sampling
        self.pending: list[tuple[Hashable, Sequence[int], int, int]] = []

    def submit(self, key: Hashable, prompt: Sequence[int], max_new_tokens: int, seed: int) -> None:
        self.pending.append((key, prompt, max_new_tokens, seed))

    def step(self) -> list[tuple[Hashable, list[int], list[float] | None]]:
        batch, self.pending = self.pending, []
        if not batch:
            return []
        keys, prompts, budgets, seeds = zip(*batch, strict=True)
        outputs, logprobs = self.engine.generate_with_logprobs(
            list(prompts), list(budgets), self.sampling, seeds=list(seeds)
        )
        return list(zip(keys, outputs, logprobs or [None] * len(keys), strict=True))

    @property
    def busy(self) -> bool:
        return bool(self.pending)


def is_full_attention(model: torch.nn.Module) -> bool:
    """Whether every attention layer of ``model`` attends to every earlier position: no sliding window, and
    every entry of ``layer_types`` (where the config has one) ``"full_attention"``."""
    config = getattr(model, "config", None)
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    return all(kind == "full_attention" for kind in getattr(config, "layer_types", None) or ["full_attention"])


def distinct_sequences(sequences: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[int]]:
    """The distinct token sequences of ``sequences`` (first-seen order) and each one's index among them."""
    first: dict[tuple[int, ...], int] = {}
    index = [first.setdefault(tuple(s), len(first)) for s in sequences]
    return [list(s) for s in first], index
