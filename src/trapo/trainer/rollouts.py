"""Guided rollouts: the micro-group sampling of TRAPO.md §2, for a batch of prompts at once.

For every prompt, micro-group ``g`` is sampled after the rewards of groups ``0..g-1`` are known, because
its guidance level depends on the prompt's cumulative return. Two ways to run it, same distribution:

- ``sequential``: one generation pass per micro-group (batched over prompts), generating only what is kept.
- ``speculative``: one generation pass for everything: for each prompt and group ``g > 0`` both the
  unguided and the level-``g`` candidates are sampled up front; the schedule then keeps one set. Every
  kept trajectory is an independent sample from the same conditional it would have had in sequential
  mode, so the distribution is unchanged; the price is the discarded candidates (3 of 11 with the
  authors' 4/2/1/1, since a whole-solution level needs no generation), the gain is one pass instead of
  three or four. On CPU the rows cost more than the passes, and sequential is faster
  (measured in benchmarks/step_cost.py); speculative is for engines where a pass's latency dominates.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from trapo.data import Example
from trapo.guidance import MicroGroupSchedule, cut_prefix
from trapo.rewards import Completion, RewardScores, RewardSet, score_rewards
from trapo.rollout import RolloutEngine, SamplingParams


@dataclass
class PreparedExample:
    """An :class:`Example` with its token ids: the prompt and each expert solution (EOS-terminated)."""

    example: Example
    prompt_ids: list[int]
    expert_ids: list[list[int]]


@dataclass(kw_only=True)
class Trajectory:
    """One sampled response: ``prefix_ids`` copied from the expert, ``completion_ids`` generated.

    ``trains_prefix``: whether the prefix tokens get the prefix loss (the schedule's first
    ``prefix_loss_counts[g]`` guided members of group ``g``; the rest only condition on their prefix).
    """

    prompt_index: int = 0
    group: int = 0
    level: int = 0
    prompt_ids: list[int]
    prefix_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    trains_prefix: bool = False
    reward: float = 0.0
    logged: dict = field(default_factory=dict)  # what the rewards logged for it (TRL's log_extra columns)
    sampling_logprobs: list[float] | None = None  # the engine's log-prob of each completion token, if it gives them

    @classmethod
    def demonstration(cls, prompt_ids: list[int], expert_ids: list[int]) -> Trajectory:
        """A whole expert solution trained on as it is (an SFT step's row): all prefix, nothing generated."""
        return cls(prompt_ids=prompt_ids, prefix_ids=expert_ids, trains_prefix=True, reward=1.0)

    @property
    def response_ids(self) -> list[int]:
        return self.prefix_ids + self.completion_ids

    @property
    def guided(self) -> bool:
        return self.level > 0


@dataclass
class RolloutBatch:
    trajectories: list[Trajectory]
    examples: list[Example]
    generated_tokens: int = 0
    generation_seconds: float = 0.0
    reward_failures: Counter = field(default_factory=Counter)  # kind -> items (trapo.rewards.FAILURE_KINDS)
    first_reward_error: str = ""

    @property
    def reward_errors(self) -> int:
        """Items whose reward failed, of any kind."""
        return sum(self.reward_failures.values())


@dataclass(frozen=True)
class _Request:
    prompt: int
    group: int
    level: int
    member: int


class GuidedSampler:
    """Samples every prompt's micro-groups and scores them with ``reward_fn``."""

    def __init__(
        self,
        engine: RolloutEngine,
        tokenizer,
        reward_fn: RewardSet,
        schedule: MicroGroupSchedule,
        *,
        boundary_ids: set[int],
        max_completion_length: int,
        sampling: SamplingParams,
        prefix_slack: float = 0.3,
        speculative: bool = False,
        prefix_strict: bool = False,
    ):
        self.engine = engine
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.schedule = schedule
        self.boundary_ids = boundary_ids
        self.max_completion_length = max_completion_length
        self.sampling = sampling
        self.prefix_slack = prefix_slack
        self.speculative = speculative
        self.prefix_strict = prefix_strict
        self.trainer_state = None  # passed to TRL rewards (set by the trainer each step)

    # ------------------------------------------------------------------ pieces
    def expert_for(self, item: PreparedExample, group: int) -> list[int]:
        """The expert solution a micro-group is guided by: the second one, where a row has it, serves the
        last micro-group (TRAPO.md §2)."""
        last = group == len(self.schedule.sizes) - 1
        return item.expert_ids[1] if last and len(item.expert_ids) > 1 else item.expert_ids[0]

    def prefix(self, item: PreparedExample, group: int, level: int) -> list[int]:
        if level == 0:
            return []
        expert = self.expert_for(item, group)
        n = cut_prefix(
            expert, self.schedule.prefix_ratio(level), self.boundary_ids, self.prefix_slack, strict=self.prefix_strict
        )
        return expert[:n]

    def candidate_levels(self, item: PreparedExample, group: int) -> tuple[int, ...]:
        """Levels micro-group ``group`` of this prompt may get, before the returns are known."""
        if group == 0 or not item.expert_ids:
            return (0,)
        return (0, group) if self.schedule.adaptive else (group,)

    def _generates(self, level: int) -> bool:
        return self.schedule.prefix_ratio(level) < 1.0

    def _generate(
        self,
        items: Sequence[PreparedExample],
        requests: list[_Request],
        generator: torch.Generator,
        prefix_of: Callable[[_Request], list[int]],
    ) -> dict[_Request, tuple[list[int], list[float] | None]]:
        """Each request's continuation ids and the engine's log-probs of them (None where it gives none)."""
        todo = [r for r in requests if self._generates(r.level)]
        if not todo:
            return {}
        prefixes = [prefix_of(r) for r in todo]
        prompts = [items[r.prompt].prompt_ids + p for r, p in zip(todo, prefixes, strict=True)]
        budgets = [max(self.max_completion_length - len(p), 0) for p in prefixes]
        if hasattr(self.engine, "generate_with_logprobs"):
            outputs, logprobs = self.engine.generate_with_logprobs(prompts, budgets, self.sampling, generator)
        else:  # an engine written against the bare interface
            outputs, logprobs = self.engine.generate(prompts, budgets, self.sampling, generator), None
        return dict(zip(todo, zip(outputs, logprobs or [None] * len(todo), strict=True), strict=True))

    def _trajectories(
        self,
        items: Sequence[PreparedExample],
        chosen: Sequence[_Request],
        pool: dict[_Request, tuple[list[int], list[float] | None]],
        prefix_of: Callable[[_Request], list[int]],
    ) -> list[Trajectory]:
        """The trajectories of ``chosen`` requests: their prefix and, where the level generates, continuation."""
        counts = self.schedule.prefix_loss_counts
        return [
            Trajectory(
                prompt_index=r.prompt,
                group=r.group,
                level=r.level,
                prompt_ids=items[r.prompt].prompt_ids,
                prefix_ids=prefix_of(r),
                completion_ids=pool[r][0] if r in pool else [],
                trains_prefix=r.level > 0 and r.member < counts[r.group],
                sampling_logprobs=pool[r][1] if r in pool else None,
            )
            for r in chosen
        ]

    def _score(self, items: Sequence[PreparedExample], trajectories: Sequence[Trajectory]) -> RewardScores:
        decode = self.tokenizer.decode
        texts = [
            Completion(decode(t.response_ids, skip_special_tokens=True), t.response_ids, self.trainer_state)
            for t in trajectories
        ]
        return score_rewards(self.reward_fn, texts, [items[t.prompt_index].example for t in trajectories])

    # ------------------------------------------------------------------ the schedule
    def sample(self, items: Sequence[PreparedExample], generator: torch.Generator) -> RolloutBatch:
        """Micro-group sampling for every prompt of ``items`` (TRAPO.md §2, Algorithm 1's rollout phase)."""
        schedule = self.schedule
        cuts: dict[tuple[int, int, int], list[int]] = {}

        def prefix_of(r: _Request) -> list[int]:  # one cut per (prompt, group, level), not per member
            key = (r.prompt, r.group, r.level)
            if key not in cuts:
                cuts[key] = self.prefix(items[r.prompt], r.group, r.level)
            return cuts[key]

        start = time.perf_counter()
        pool: dict[_Request, tuple[list[int], list[float] | None]] = {}
        if self.speculative:
            pool = self._generate(
                items,
                [
                    _Request(p, g, level, m)
                    for p, item in enumerate(items)
                    for g, size in enumerate(schedule.sizes)
                    for level in self.candidate_levels(item, g)
                    for m in range(size)
                ],
                generator,
                prefix_of,
            )
        generation_seconds = time.perf_counter() - start

        returns = [0.0] * len(items)
        trajectories: list[Trajectory] = []
        failures, first_error = Counter(), ""
        for g, size in enumerate(schedule.sizes):
            chosen = []
            for p, item in enumerate(items):
                level = schedule.level(g, returns[p]) if item.expert_ids else 0  # no expert: RL only
                chosen.extend(_Request(p, g, level, m) for m in range(size))
            if not self.speculative:
                t0 = time.perf_counter()
                pool = self._generate(items, chosen, generator, prefix_of)
                generation_seconds += time.perf_counter() - t0
            group_trajs = self._trajectories(items, chosen, pool, prefix_of)
            scored = self._score(items, group_trajs)
            failures.update(scored.failures)
            first_error = first_error or scored.first_error
            _take_scores(group_trajs, scored, returns)
            trajectories.extend(group_trajs)

        pooled = [ids for ids, _ in pool.values()] if self.speculative else [t.completion_ids for t in trajectories]
        generated = sum(map(len, pooled))
        return RolloutBatch(
            trajectories=trajectories,
            examples=[item.example for item in items],
            generated_tokens=generated,
            generation_seconds=generation_seconds,
            reward_failures=failures,
            first_reward_error=first_error,
        )


def _take_scores(trajectories: Sequence[Trajectory], scored: RewardScores, returns: list[float]) -> None:
    """Each trajectory's reward and what the rewards logged for it; the prompts' cumulative returns grow."""
    for i, traj in enumerate(trajectories):
        traj.reward = float(scored.scores[i])
        traj.logged = {column: values[i] for column, values in scored.extra.items()}
        returns[traj.prompt_index] += traj.reward
