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
- ``pipelined``: one running batch (:meth:`RolloutEngine.open_stream`, continuous batching): a prompt's
  micro-group ``g + 1`` is submitted as soon as its group ``g`` is scored, while the other prompts' rows are
  still decoding; no prompt waits for the slowest row of the batch.

Every trajectory samples from its own random stream, seeded by (the step's draw from ``generator``, prompt,
micro-group, member) and not by its guidance level: the three modes sample the same tokens for a fixed seed
(up to float rounding of different batch shapes), and a speculative candidate that is kept is the sequential
sample.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from trapo.data import Example
from trapo.guidance import MicroGroupSchedule, cut_prefix
from trapo.rewards import Completion, RewardSet, score_rewards
from trapo.rollout import RolloutEngine, SamplingParams
from trapo.rollout.base import as_engine
from trapo.rollout.sampling import row_seed


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


ROLLOUT_MODES = ("sequential", "speculative", "pipelined")


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
        mode: str | None = None,
    ):
        self.engine = as_engine(engine)
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.schedule = schedule
        self.boundary_ids = boundary_ids
        self.max_completion_length = max_completion_length
        self.sampling = sampling
        self.prefix_slack = prefix_slack
        self.mode = mode or ("speculative" if speculative else "sequential")
        if self.mode not in ROLLOUT_MODES:
            raise ValueError(f"rollout mode must be one of {', '.join(ROLLOUT_MODES)}, got {self.mode!r}")
        self.speculative = self.mode == "speculative"
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

    def _seed(self, base: int, r: _Request) -> int:
        """The random stream of a trajectory: (the step's draw, prompt, micro-group, member), not its level."""
        return row_seed(base, r.prompt, r.group, r.member)

    def _budget(self, prefix: list[int]) -> int:
        return max(self.max_completion_length - len(prefix), 0)

    def _generate(
        self,
        items: Sequence[PreparedExample],
        requests: list[_Request],
        base: int,
        generator: torch.Generator,
        prefix_of: Callable[[_Request], list[int]],
    ) -> dict[_Request, tuple[list[int], list[float] | None]]:
        """Each request's continuation ids and the engine's log-probs of them (None where it gives none)."""
        todo = [r for r in requests if self._generates(r.level)]
        if not todo:
            return {}
        prefixes = [prefix_of(r) for r in todo]
        prompts = [items[r.prompt].prompt_ids + p for r, p in zip(todo, prefixes, strict=True)]
        budgets = [self._budget(p) for p in prefixes]
        seeds = [self._seed(base, r) for r in todo]
        outputs, logprobs = self.engine.generate_with_logprobs(prompts, budgets, self.sampling, generator, seeds)
        return dict(zip(todo, zip(outputs, logprobs or [None] * len(todo), strict=True), strict=True))

    def _trajectory(
        self,
        item: PreparedExample,
        r: _Request,
        prefix: list[int],
        completion: list[int],
        logprobs: list[float] | None = None,
    ) -> Trajectory:
        return Trajectory(
            prompt_index=r.prompt,
            group=r.group,
            level=r.level,
            prompt_ids=item.prompt_ids,
            prefix_ids=prefix,
            completion_ids=completion,
            trains_prefix=r.level > 0 and r.member < self.schedule.prefix_loss_counts[r.group],
            sampling_logprobs=logprobs,
        )

    def _requests(self, item: PreparedExample, p: int, g: int, returns: list[float]) -> list[_Request]:
        """Micro-group ``g`` of prompt ``p``, its level from the prompt's return so far (TRAPO.md §2)."""
        level = self.schedule.level(g, returns[p]) if item.expert_ids else 0  # no expert: RL only
        return [_Request(p, g, level, m) for m in range(self.schedule.sizes[g])]

    def _score(
        self, trajs: list[Trajectory], items: Sequence[PreparedExample], batch: RolloutBatch, returns: list[float]
    ) -> None:
        """Reward every trajectory of ``trajs`` (prefix + continuation) and keep what the rewards logged for it,
        counting failures in ``batch``; the prompts' cumulative ``returns`` grow."""
        texts = [
            Completion(
                self.tokenizer.decode(t.response_ids, skip_special_tokens=True), t.response_ids, self.trainer_state
            )
            for t in trajs
        ]
        scored = score_rewards(self.reward_fn, texts, [items[t.prompt_index].example for t in trajs])
        batch.reward_failures.update(scored.failures)
        batch.first_reward_error = batch.first_reward_error or scored.first_error
        for i, traj in enumerate(trajs):
            traj.reward = float(scored.scores[i])
            traj.logged = {column: values[i] for column, values in scored.extra.items()}
            returns[traj.prompt_index] += traj.reward

    # ------------------------------------------------------------------ the schedule
    def sample(self, items: Sequence[PreparedExample], generator: torch.Generator) -> RolloutBatch:
        """Micro-group sampling for every prompt of ``items`` (TRAPO.md §2, Algorithm 1's rollout phase)."""
        cuts: dict[tuple[int, int, int], list[int]] = {}

        def prefix_of(r: _Request) -> list[int]:  # one cut per (prompt, group, level), not per member
            key = (r.prompt, r.group, r.level)
            if key not in cuts:
                cuts[key] = self.prefix(items[r.prompt], r.group, r.level)
            return cuts[key]

        base = int(torch.randint(0, 2**62, (1,), generator=generator))
        batch = RolloutBatch(trajectories=[], examples=[item.example for item in items])
        if self.mode == "pipelined":
            self._sample_pipelined(items, base, prefix_of, batch)
        else:
            self._sample_rounds(items, base, generator, prefix_of, batch)
        if not self.speculative:
            batch.generated_tokens = sum(len(t.completion_ids) for t in batch.trajectories)
        return batch

    def _sample_rounds(self, items, base, generator, prefix_of, batch: RolloutBatch) -> None:
        """sequential / speculative: micro-group ``g`` of every prompt, then ``g + 1``."""
        start = time.perf_counter()
        pool: dict[_Request, tuple[list[int], list[float] | None]] = {}
        if self.speculative:
            every = [
                _Request(p, g, level, m)
                for p, item in enumerate(items)
                for g, size in enumerate(self.schedule.sizes)
                for level in self.candidate_levels(item, g)
                for m in range(size)
            ]
            pool = self._generate(items, every, base, generator, prefix_of)
            batch.generated_tokens = sum(len(ids) for ids, _ in pool.values())
        batch.generation_seconds = time.perf_counter() - start
        returns = [0.0] * len(items)
        for g in range(len(self.schedule.sizes)):
            chosen = [r for p, item in enumerate(items) for r in self._requests(item, p, g, returns)]
            if not self.speculative:
                t0 = time.perf_counter()
                pool = self._generate(items, chosen, base, generator, prefix_of)
                batch.generation_seconds += time.perf_counter() - t0
            group = [self._trajectory(items[r.prompt], r, prefix_of(r), *pool.get(r, ([], None))) for r in chosen]
            self._score(group, items, batch, returns)
            batch.trajectories.extend(group)

    def _sample_pipelined(self, items, base, prefix_of, batch: RolloutBatch) -> None:
        """pipelined: each prompt's next micro-group joins the engine's running batch once its last is scored."""
        stream = self.engine.open_stream(self.sampling)
        run = _Pipeline(self, items, base, prefix_of, stream)
        returns = [0.0] * len(items)
        for p in range(len(items)):
            run.start(p, 0, returns)
        while run.ready or stream.busy:
            if not run.ready:
                t0 = time.perf_counter()
                run.collect()
                batch.generation_seconds += time.perf_counter() - t0
                continue
            scored, run.ready = run.ready, []
            trajs = [t for key in scored for t in run.groups.pop(key)]
            self._score(trajs, items, batch, returns)
            batch.trajectories.extend(trajs)
            for p, g in scored:
                if g + 1 < len(self.schedule.sizes):
                    run.start(p, g + 1, returns)
        batch.trajectories.sort(key=lambda t: (t.group, t.prompt_index))  # the order of the other modes


class _Pipeline:
    """Pipelined rollouts' bookkeeping: each started (prompt, micro-group)'s trajectories, how many of them are
    still decoding, and the groups ready to be scored."""

    def __init__(self, sampler: GuidedSampler, items: Sequence[PreparedExample], base: int, prefix_of, stream):
        self.sampler, self.items, self.base, self.prefix_of, self.stream = sampler, items, base, prefix_of, stream
        self.groups: dict[tuple[int, int], list[Trajectory]] = {}  # (prompt, group) -> its trajectories
        self.waiting: dict[tuple[int, int], int] = {}  # continuations still being generated
        self.ready: list[tuple[int, int]] = []

    def start(self, p: int, g: int, returns: list[float]) -> None:
        """Submit micro-group ``g`` of prompt ``p``, its level from the prompt's return so far."""
        s, item = self.sampler, self.items[p]
        requests = s._requests(item, p, g, returns)
        self.groups[p, g] = [s._trajectory(item, r, self.prefix_of(r), []) for r in requests]
        self.waiting[p, g] = 0
        for r, traj in zip(requests, self.groups[p, g], strict=True):
            if s._generates(r.level):
                budget = s._budget(traj.prefix_ids)
                self.stream.submit(r, item.prompt_ids + traj.prefix_ids, budget, s._seed(self.base, r))
                self.waiting[p, g] += 1
        if not self.waiting[p, g]:  # a whole expert solution: nothing to generate
            self.ready.append((p, g))

    def collect(self) -> None:
        """One step of the stream: finished continuations go to their trajectories; complete groups are ready."""
        for r, ids, logprobs in self.stream.step():
            traj = self.groups[r.prompt, r.group][r.member]
            traj.completion_ids, traj.sampling_logprobs = ids, logprobs
            self.waiting[r.prompt, r.group] -= 1
            if not self.waiting[r.prompt, r.group]:
                self.ready.append((r.prompt, r.group))
