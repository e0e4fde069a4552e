"""What a comparison runs: :class:`CompareSpec` (methods, seeds, learning-rate grids, steps, evaluation sizes)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from trapo.config import check_keys
from trapo.methods import METHODS

DEFAULT_METHODS = tuple(METHODS)
DEFAULT_LRS = (1e-5, 3e-5, 1e-4)
# Methods whose loss is mostly plain SFT on whole expert solutions take larger steps well: their grid is
# shifted up by one notch, so that each grid brackets the rate its method's validation curve prefers.
SFT_LRS = (3e-5, 1e-4, 3e-4)
DEFAULT_LR_GRID = {m: SFT_LRS if m in ("sft", "sft-then-grpo") else DEFAULT_LRS for m in METHODS}


@dataclass
class CompareSpec:
    """What a comparison trains and how it evaluates (defaults: the full protocol of :mod:`trapo_lab.compare`).

    Sizes are per data source: ``n_test_per_tier`` test problems of each in-domain tier, ``n_test_skill``
    of each retained skill, and so on; the first ones of each source in the split files are used.
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: tuple[int, ...] = (1, 2, 3)  # the test seeds: every method at its chosen rate, on the test split
    # the learning-rate sweep's seed (None: the first test seed, which then also plays in the choice)
    sweep_seed: int | None = 0
    lr_grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_LR_GRID))
    # rates added to a grid whose best rate is at its edge, one half-decade beyond it at a time, until the
    # best is interior (at most this many per method; 0: the grid as given)
    lr_extensions: int = 2
    max_steps: int = 200
    prompts_per_step: int = 8
    max_completion_length: int = 128
    config_overrides: dict[str, Any] = field(default_factory=dict)  # more TRAPOConfig fields for every run
    # evaluation
    n_val_per_tier: int = 100  # learning-rate selection and the curves
    n_val_skill: int = 50
    n_test_per_tier: int = 300
    n_test_skill: int = 300
    n_test_ood: int = 300  # of each out-of-distribution tier (test_ood split; 0: no OOD column)
    test_k: int = 1  # samples per test problem (the table reports avg@test_k)
    temperature: float = 1.0
    max_new_tokens: int = 128
    passk_max: int = 16  # pass@k curve for k = 1..passk_max ...
    n_passk_per_tier: int = 300  # ... on this many test problems of each tier (all of them by default)
    curve_points: int = 10  # checkpoints (every max_steps / curve_points steps), each evaluated on validation
    wallclock_reference: str = "grpo"  # its longest full run's training time is the equal-wall-clock budget
    eval_seed: int = 0
    eval_batch_size: int = 512

    def __post_init__(self) -> None:  # noqa: C901 (a flat list of independent checks)
        self.methods = tuple(self.methods)
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.methods:
            raise ValueError("methods must name at least one method")
        for name in self.methods:
            if name not in METHODS:
                raise ValueError(f"methods: unknown method {name!r}; valid methods: {', '.join(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: each method once, got {list(self.methods)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {list(self.seeds)}")
        grid = {}
        for name in self.methods:
            lrs = tuple(sorted(float(lr) for lr in self.lr_grid.get(name, DEFAULT_LR_GRID[name])))
            if not lrs or any(not lr > 0 for lr in lrs) or len(set(lrs)) != len(lrs):
                raise ValueError(f"lr_grid[{name!r}] must be distinct positive learning rates, got {list(lrs)}")
            grid[name] = lrs
        self.lr_grid = grid
        for name in (
            "max_steps",
            "prompts_per_step",
            "max_completion_length",
            "n_val_per_tier",
            "n_test_per_tier",
            "test_k",
            "max_new_tokens",
            "passk_max",
            "n_passk_per_tier",
            "curve_points",
            "eval_batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("n_val_skill", "n_test_skill", "n_test_ood", "lr_extensions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.sweep_seed is not None:
            self.sweep_seed = int(self.sweep_seed)
        if self.curve_points > self.max_steps:
            raise ValueError(f"curve_points ({self.curve_points}) must be <= max_steps ({self.max_steps})")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        check_keys(self.config_overrides, "config_overrides")
        fixed = {"method", "learning_rate", "seed", "max_steps", "output_dir", "save_steps", "save_total_limit"}
        if clash := sorted(fixed & set(self.config_overrides)):
            raise ValueError(f"config_overrides cannot set {clash}: the comparison sets them per run")

    @classmethod
    def quick(cls, **overrides: Any) -> CompareSpec:
        """A smoke-test variant (minutes, not hours): every method, 2 seeds, two learning rates, few steps,
        tiny evaluation sets. Its numbers say nothing about the methods; it checks the machinery."""
        values: dict[str, Any] = dict(
            seeds=(0, 1),
            sweep_seed=None,
            lr_extensions=0,
            lr_grid=dict.fromkeys(METHODS, (3e-5, 1e-4)),
            max_steps=6,
            prompts_per_step=4,
            n_val_per_tier=16,
            n_val_skill=8,
            n_test_per_tier=24,
            n_test_skill=16,
            n_test_ood=8,
            n_passk_per_tier=6,
            passk_max=8,
            curve_points=2,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def selection_seed(self) -> int:
        """The seed of the learning-rate sweep (:attr:`sweep_seed`, else the first test seed)."""
        return self.seeds[0] if self.sweep_seed is None else self.sweep_seed

    @property
    def save_steps(self) -> int:
        """Steps between saved checkpoints: ``max_steps / curve_points``, rounded up."""
        return math.ceil(self.max_steps / self.curve_points)

    @property
    def checkpoint_steps(self) -> list[int]:
        """Steps with a saved model: every ``save_steps`` and the last step (0, the base, is implicit)."""
        every = self.save_steps
        return sorted({*range(every, self.max_steps, every), self.max_steps})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["lr_grid"] = {m: list(v) for m, v in self.lr_grid.items()}
        return out
