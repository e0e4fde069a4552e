"""The rollout-engine interface: token ids in, sampled continuation ids out.

An engine knows nothing about guidance, rewards or losses. The trainer hands it prompts that already
end with an expert prefix where guidance asks for one; the engine continues each of them. A vLLM or
SGLang engine is a new module implementing :class:`RolloutEngine`, nothing more.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

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

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        """Continue every prompt; return the new token ids of each, in order (``sampling`` defaults to
        ``SamplingParams()``).

        ``max_new_tokens`` is one budget for all prompts or one per prompt (a budget of 0 returns an
        empty continuation). A continuation stops at the first end-of-sequence token, which is kept as
        its last element; one that hits its budget has no EOS. ``generator`` makes sampling reproducible:
        the same prompts, budgets and generator state give the same continuations.
        """

    def generate_with_logprobs(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[list[list[int]], list[list[float]] | None]:
        """:meth:`generate`, plus the engine's own log-prob of every token it sampled (one list per
        continuation), or None where the engine does not report them (this default: the engine is the
        trainer's model, whose log-probs the update computes anyway)."""
        return self.generate(prompts, max_new_tokens, sampling, generator), None

    def sync_weights(self, model: torch.nn.Module) -> None:  # noqa: B027 - optional hook
        """Called after every optimizer step. Engines that hold their own copy of the weights (vLLM)
        load ``model``'s weights here; engines that share the training model do nothing."""


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
