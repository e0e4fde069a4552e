"""``trapo compare``: train TRAPO and its baselines from one base model, over seeds, and compare them fairly.

The protocol (issue 6):

1. **Learning-rate sweep** (stage 1). For each method, train one run per learning rate of its grid at the
   first seed and evaluate the final model on the *validation* split. The chosen learning rate is the one
   with the highest in-domain validation average (:func:`select_lr`; ties go to the smaller rate). The
   test split is never looked at for this choice.
2. **Seeds** (stage 2). Every seed is trained at the chosen rate (the first seed's run is the one from
   stage 1). Each final model is evaluated on the test tiers and retained skills (one sample per problem
   at the training temperature by default), on a pass@k subset (k = 1..16), and every intermediate
   checkpoint on the validation split (the curves that show where methods plateau). The base model is
   evaluated the same way and gets its own row. Besides accuracy, each evaluation records the share of
   outputs without a final ``\\boxed`` answer (degenerate) and of outputs in the expert's place-value style
   (:func:`trapo_lab.tasks.solution_style`); the training metrics give the share of prefix tokens below
   TrSFT's alpha over training. Every method gets the same number of optimizer steps;
   ``sft`` has no rollouts, so its steps are much cheaper (the equal-wall-clock view shows what that buys).
3. **Equal wall-clock** (:func:`wallclock_step`). The budget is the longest full-run training time (sum of
   the logged ``perf/step_s``) of the reference method (GRPO by default) over its seeds; each run is
   represented by its latest checkpoint whose cumulative training time does not exceed the budget (the
   base model, step 0, if none does). Methods cheaper than the reference are not trained past
   ``max_steps``, so this view can only take steps away from slower methods, never give steps to faster ones.

Caching and resuming. Every run lives in ``runs_dir/<method>-lr<lr>-s<seed>-<hash>/`` where the hash covers
its full :class:`~trapo.config.TRAPOConfig` (``output_dir`` and logging knobs aside), the base model's
weights and the training data. A finished run (``done.json``) is reused, an unfinished one resumes from
its last checkpoint, and evaluations are cached in the run's ``eval.json`` under a key of the evaluation
settings and problems. So the comparison can be run in pieces (``max_runs`` / ``time_budget_s``) and an
interruption loses at most the steps since the run's last checkpoint (the trainer also saves one on Ctrl-C).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from trapo.config import TRAPOConfig, check_keys
from trapo.data import Example
from trapo.methods import METHODS
from trapo.trainer import read_metrics

FORMAT = "trapo-compare-v1"
EVAL_VERSION = 2  # bump when an evaluation records new measures: cached evaluations are then recomputed
REFERENCE_METHOD = "trapo"
DEFAULT_METHODS = tuple(METHODS)
DEFAULT_LRS = (1e-5, 3e-5, 1e-4)
# TRAPOConfig fields that change where/how often things are logged, not what is trained.
NON_SEMANTIC_FIELDS = ("output_dir", "logging_steps", "save_total_limit", "sample_log_steps", "report_to")
# Per-step metrics kept for the dynamics plots (as logged by the trainer).
DYNAMICS_METRICS = ("reward/mean", "reward/unguided", "length/completion", "entropy", "trust/prefix_below_alpha",
                    "loss/total", "grad_norm", "perf/step_s")


# ---------------------------------------------------------------------------------------------- the spec


@dataclass
class CompareSpec:
    """What a comparison trains and how it evaluates (defaults: the full protocol of issue 6).

    Sizes are per data source: ``n_test_per_tier`` test problems of each in-domain tier, ``n_test_skill``
    of each retained skill, and so on; the first ones of each source in the split files are used.
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    lr_grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict.fromkeys(METHODS, DEFAULT_LRS))
    max_steps: int = 300
    prompts_per_step: int = 8
    max_completion_length: int = 128
    config_overrides: dict[str, Any] = field(default_factory=dict)  # more TRAPOConfig fields for every run
    # evaluation
    n_val_per_tier: int = 200  # learning-rate selection and the curves
    n_val_skill: int = 100
    n_test_per_tier: int = 500
    n_test_skill: int = 500
    test_k: int = 1  # samples per test problem (the table reports avg@test_k)
    temperature: float = 1.0
    max_new_tokens: int = 128
    passk_max: int = 16  # pass@k curve for k = 1..passk_max ...
    n_passk_per_tier: int = 100  # ... on this many test problems of each tier
    curve_points: int = 10  # checkpoints (every max_steps / curve_points steps), each evaluated on validation
    wallclock_reference: str = "grpo"
    eval_seed: int = 0
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
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
            lrs = tuple(sorted(float(lr) for lr in self.lr_grid.get(name, DEFAULT_LRS)))
            if not lrs or any(not lr > 0 for lr in lrs) or len(set(lrs)) != len(lrs):
                raise ValueError(f"lr_grid[{name!r}] must be distinct positive learning rates, got {list(lrs)}")
            grid[name] = lrs
        self.lr_grid = grid
        for name in ("max_steps", "prompts_per_step", "max_completion_length", "n_val_per_tier", "n_test_per_tier",
                     "test_k", "max_new_tokens", "passk_max", "n_passk_per_tier", "curve_points", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("n_val_skill", "n_test_skill"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
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
            seeds=(0, 1), lr_grid=dict.fromkeys(METHODS, (3e-5, 1e-4)), max_steps=6, prompts_per_step=4,
            n_val_per_tier=16, n_val_skill=8, n_test_per_tier=24, n_test_skill=16, n_passk_per_tier=6, passk_max=8,
            curve_points=2,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def checkpoint_steps(self) -> list[int]:
        """Steps with a saved model: every ``save_steps`` and the last step (0, the base, is implicit)."""
        every = self.save_steps
        return sorted({*range(every, self.max_steps, every), self.max_steps})

    @property
    def save_steps(self) -> int:
        return math.ceil(self.max_steps / self.curve_points)

    def lrs(self, method: str) -> tuple[float, ...]:
        return self.lr_grid[method]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["lr_grid"] = {m: list(v) for m, v in self.lr_grid.items()}
        return out


# ---------------------------------------------------------------------------------------------- pure rules


def mean_std(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1 in the denominator) of the values that are not None/NaN;
    ``std`` is None for fewer than two values, ``mean`` None for none."""
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    return {
        "mean": statistics.fmean(vals) if vals else None,
        "std": statistics.stdev(vals) if len(vals) > 1 else None,
        "n": len(vals),
    }


def paired_differences(reference: dict[int, float], other: dict[int, float]) -> dict[str, Any]:
    """Paired comparison over the seeds both have: ``d_s = reference_s - other_s`` (positive: the reference,
    TRAPO, is better), mean ± std of the ``d_s``, and how many seeds the reference wins / loses / ties."""
    seeds = sorted(s for s in set(reference) & set(other)
                   if reference[s] is not None and other[s] is not None)
    diffs = {s: reference[s] - other[s] for s in seeds}
    stats = mean_std(diffs.values())
    return {
        "diffs": {str(s): d for s, d in diffs.items()},
        "mean": stats["mean"],
        "std": stats["std"],
        "n": len(seeds),
        "wins": sum(d > 0 for d in diffs.values()),
        "losses": sum(d < 0 for d in diffs.values()),
        "ties": sum(d == 0 for d in diffs.values()),
    }


def select_lr(val_scores: dict[float, float | None]) -> float:
    """The learning rate with the highest validation score; ties (and None scores, treated as -inf) go to
    the smaller rate."""
    if not val_scores:
        raise ValueError("val_scores is empty: no learning rate to select")
    return max(sorted(val_scores), key=lambda lr: -math.inf if val_scores[lr] is None else val_scores[lr])


def cumulative_seconds(step_seconds: dict[int, float], steps: Iterable[int]) -> dict[int, float]:
    """Training time up to and including each of ``steps``: the sum of ``step_seconds[t]`` for t <= step."""
    out, total, wanted = {}, 0.0, sorted(set(steps))
    ordered = sorted(step_seconds.items())
    i = 0
    for step in wanted:
        while i < len(ordered) and ordered[i][0] <= step:
            total += ordered[i][1]
            i += 1
        out[step] = total
    return out


def wallclock_step(cumulative: dict[int, float], budget: float) -> int:
    """The equal-wall-clock rule: the largest step whose cumulative training time is <= ``budget``
    (step 0, the untrained model, costs nothing and is always allowed)."""
    allowed = [step for step, seconds in cumulative.items() if seconds <= budget]
    return max([0, *allowed])


def group_average(groups: dict[str, dict[str, Any]], names: Sequence[str], key: str = "acc") -> float | None:
    """Unweighted mean of ``groups[name][key]`` over ``names`` (each tier or skill weighs the same)."""
    vals = [groups[n][key] for n in names if n in groups and groups[n].get(key) is not None]
    return statistics.fmean(vals) if vals and len(vals) == len(names) else None


# ---------------------------------------------------------------------------------------------- files


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file in the same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _sha(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(paths: Iterable[Path]) -> str:
    """SHA-256 over the bytes of ``paths`` (in the given order)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def model_identity(model_dir: Path) -> str:
    """A digest of a model directory's weights and config (what a trained run depends on)."""
    weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not weights or not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a model directory (needs config.json and weights)")
    return file_digest([model_dir / "config.json", *weights])[:16]


def examples_identity(examples: Sequence[Example]) -> str:
    return _sha([(ex.data_source, ex.prompt, ex.answer, list(ex.expert_solutions)) for ex in examples])[:16]


def format_lr(lr: float) -> str:
    """``1e-05`` → ``1e-5``, ``3e-05`` → ``3e-5``, ``1.5e-04`` → ``1.5e-4`` (for directory names)."""
    mantissa, exponent = f"{lr:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


# ---------------------------------------------------------------------------------------------- data


@dataclass
class CompareData:
    """The comparison's problems, read from a ``trapo data make`` directory."""

    train: list[Example]
    val: list[Example]  # in-domain tiers + retained skills
    test: list[Example]
    passk: list[Example]  # in-domain test subset for the pass@k curve
    in_domain: list[str]  # data sources of the tiers
    retained: list[str]  # data sources of the retained skills
    identity: str  # of the training set

    @classmethod
    def load(cls, data_dir: str | os.PathLike, spec: CompareSpec) -> CompareData:
        from trapo.data import load_examples

        data_dir = Path(data_dir)

        def read(split: str, required: bool = True) -> list[Example]:
            path = data_dir / f"{split}.parquet"
            if not path.is_file():
                path = data_dir / f"{split}.jsonl"
            if not path.is_file():
                if required:
                    raise FileNotFoundError(f"{data_dir}: no {split}.parquet or {split}.jsonl (make it with "
                                            "`trapo data make --output DIR`)")
                return []
            return load_examples(path).examples

        train, val, test = read("train"), read("val"), read("test")
        val_skills, test_skills = read("val_skills", False), read("test_skills", False)
        in_domain = sorted({ex.data_source for ex in test})
        retained = sorted({ex.data_source for ex in test_skills} - set(in_domain))
        passk_n = spec.n_passk_per_tier
        return cls(
            train=train,
            val=first_per_source(val, spec.n_val_per_tier, "val") + first_per_source(
                val_skills, spec.n_val_skill, "val_skills"),
            test=first_per_source(test, spec.n_test_per_tier, "test") + first_per_source(
                test_skills, spec.n_test_skill, "test_skills"),
            passk=first_per_source(test, passk_n, "test"),
            in_domain=in_domain,
            retained=retained if spec.n_test_skill else [],
            identity=examples_identity(train),
        )


def first_per_source(examples: Sequence[Example], n: int, split: str) -> list[Example]:
    """The first ``n`` examples of each data source (sources in order of first appearance)."""
    if n == 0:
        return []
    by_source: dict[str, list[Example]] = {}
    for ex in examples:
        by_source.setdefault(ex.data_source, []).append(ex)
    short = {s: len(v) for s, v in by_source.items() if len(v) < n}
    if short:
        raise ValueError(f"split {split!r} has fewer than {n} problems for {short}; make the data with more "
                         "(trapo data make --n-val-per-tier/--n-test-per-tier ...) or ask for fewer")
    return [ex for rows in by_source.values() for ex in rows[:n]]


def ensure_inputs(data_dir: str | os.PathLike, base_dir: str | os.PathLike, *, progress: bool = True,
                  log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Build the embedded task's splits and base model with their default recipes where missing."""
    data_dir, base_dir = Path(data_dir), Path(base_dir)
    if not (data_dir / "train.parquet").is_file() and not (data_dir / "train.jsonl").is_file():
        from trapo_lab.tasks import make_splits

        log(f"no data in {data_dir}: writing the embedded task's splits (trapo data make)")
        make_splits(data_dir)
    if not (base_dir / "config.json").is_file():
        from trapo_lab.pretrain import build_base_model

        log(f"no base model in {base_dir}: pre-training it (trapo base; 7 minutes on a busy 2-core machine)")
        build_base_model(base_dir, progress=progress)
    return data_dir, base_dir


# ---------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunKey:
    method: str
    lr: float
    seed: int

    @property
    def label(self) -> str:
        return f"{self.method}-lr{format_lr(self.lr)}-s{self.seed}"


class StopRequested(Exception):
    """The run or time budget of this invocation is spent (rerun the same command to continue)."""


@dataclass
class CompareResult:
    """What :meth:`Comparison.run` produced: a JSON-able summary (the tables) and per-step dynamics."""

    summary: dict[str, Any]
    dynamics: dict[str, Any]


class Comparison:
    """Runs a :class:`CompareSpec` with cached, resumable runs (see the module docstring for the protocol).

    Args:
        spec: what to run.
        data_dir: a ``trapo data make`` directory (train/val/test/val_skills/test_skills).
        base_dir: the base model every run starts from (``trapo base``).
        runs_dir: where runs are cached (``<method>-lr<lr>-s<seed>-<hash>/``).
        progress: tqdm bars of the evaluations (the trainer always shows its own bar).
        log: where progress lines go.
    """

    def __init__(self, spec: CompareSpec, *, data_dir: str | os.PathLike, base_dir: str | os.PathLike,
                 runs_dir: str | os.PathLike = "runs/compare", progress: bool = True,
                 log: Callable[[str], None] = print):
        self.spec = spec
        self.data_dir, self.base_dir, self.runs_dir = Path(data_dir), Path(base_dir), Path(runs_dir)
        self.progress, self.log = progress, log
        self.data = CompareData.load(self.data_dir, spec)
        self.base_id = model_identity(self.base_dir)
        self.trained: list[tuple[RunKey, int]] = []  # (run, step it resumed from) trained by this object
        self.evaluations = 0  # evaluations computed (not read from cache) by this object
        self._max_runs: int | None = None
        self._deadline: float | None = None

    # ------------------------------------------------------------------ identity
    def config_for(self, key: RunKey) -> TRAPOConfig:
        spec = self.spec
        return TRAPOConfig(
            method=key.method, learning_rate=key.lr, seed=key.seed, max_steps=spec.max_steps,
            prompts_per_step=spec.prompts_per_step, max_completion_length=spec.max_completion_length,
            save_steps=spec.save_steps, save_total_limit=0, temperature=spec.temperature,
            output_dir=str(self.runs_dir / key.label), **spec.config_overrides,
        )

    def run_hash(self, key: RunKey) -> str:
        config = {k: v for k, v in self.config_for(key).to_dict().items() if k not in NON_SEMANTIC_FIELDS}
        return _sha(FORMAT, config, self.base_id, self.data.identity)[:10]

    def run_dir(self, key: RunKey) -> Path:
        return self.runs_dir / f"{key.label}-{self.run_hash(key)}"

    def base_run_dir(self) -> Path:
        return self.runs_dir / f"base-{self.base_id[:10]}"

    def is_trained(self, key: RunKey) -> bool:
        return (self.run_dir(key) / "done.json").is_file()

    # ------------------------------------------------------------------ training
    def prepare_run(self, key: RunKey) -> tuple[Path, TRAPOConfig]:
        """The run's directory (created, with ``run.json``) and its config (``output_dir`` set to it)."""
        run_dir = self.run_dir(key)
        config = replace(self.config_for(key), output_dir=str(run_dir))
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "run.json").is_file():
            _write_json(run_dir / "run.json", {
                "format": FORMAT, "method": key.method, "lr": key.lr, "seed": key.seed, "hash": self.run_hash(key),
                "config": config.to_dict(), "base_dir": str(self.base_dir), "base_identity": self.base_id,
                "data_dir": str(self.data_dir), "train_identity": self.data.identity,
            })
        return run_dir, config

    def load_base(self):
        from trapo.models import load_model_and_tokenizer

        return load_model_and_tokenizer(self.base_dir)

    def ensure_trained(self, key: RunKey) -> Path:
        """Train ``key`` unless it is finished; resume it from its last checkpoint if it was interrupted."""
        from trapo.trainer import TRAPOTrainer
        from trapo.trainer.checkpoint import latest_checkpoint

        run_dir = self.run_dir(key)
        if self.is_trained(key):
            return run_dir
        if self._max_runs is not None and len(self.trained) >= self._max_runs:
            raise StopRequested(f"--max-runs {self._max_runs} reached")
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise StopRequested("time budget spent")
        run_dir, config = self.prepare_run(key)
        latest = latest_checkpoint(run_dir)
        resumed_from = 0
        if latest is not None:
            resumed_from = json.loads((latest / "trainer_state.json").read_text())["step"]
        self.log(f"train {key.label} ({run_dir.name})" + (f", resuming at step {resumed_from}" if latest else ""))
        model, tokenizer = self.load_base()
        trainer = TRAPOTrainer(model, tokenizer, self.data.train, config)
        self.trained.append((key, resumed_from))
        result = trainer.train(resume_from_checkpoint=True if latest is not None else None)
        rows = read_metrics(run_dir)
        _write_json(run_dir / "done.json", {
            "steps": result.steps, "train_seconds": sum(r.get("perf/step_s", 0.0) for r in rows),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "resumed_from": resumed_from,
        })
        # finished: optimizer states are not needed any more, and the last checkpoint is a copy of final/
        for state in run_dir.glob("checkpoint-*/training_state.pt"):
            state.unlink()
        shutil.rmtree(run_dir / f"checkpoint-{self.spec.max_steps}", ignore_errors=True)
        return run_dir

    # ------------------------------------------------------------------ evaluation
    def model_dir(self, key: RunKey | None, step: int) -> Path:
        if key is None or step == 0:
            return self.base_dir
        run_dir = self.run_dir(key)
        path = run_dir / "final" if step == self.spec.max_steps else run_dir / f"checkpoint-{step}"
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no saved model at step {step} of {key.label}")
        return path

    def evaluation(self, key: RunKey | None, split: str, step: int) -> dict[str, Any]:
        """The (cached) evaluation of run ``key`` (None: the base model) at ``step`` on ``split``:
        ``"val"`` (one sample per problem), ``"test"`` (``test_k`` samples) or ``"passk"`` (``passk_max``
        samples, pass@1..passk_max)."""
        spec = self.spec
        examples = {"val": self.data.val, "test": self.data.test, "passk": self.data.passk}[split]
        k = {"val": 1, "test": spec.test_k, "passk": spec.passk_max}[split]
        settings = {"version": EVAL_VERSION, "split": split, "k": k, "temperature": spec.temperature,
                    "max_new_tokens": spec.max_new_tokens,
                    "seed": spec.eval_seed, "batch_size": spec.eval_batch_size,
                    "problems": examples_identity(examples)}
        run_dir = self.base_run_dir() if key is None else self.run_dir(key)
        if key is None:
            step = 0
        cache_path = run_dir / "eval.json"
        cache = _read_json(cache_path) or {}
        name, cache_key = f"{split}@{step}", _sha(settings)[:16]
        if name in cache and cache[name].get("key") == cache_key:
            return cache[name]["result"]
        result = self._evaluate(self.model_dir(key, step), examples, k=k, curve=split == "passk")
        result["settings"] = settings
        self.evaluations += 1
        cache = _read_json(cache_path) or {}
        cache[name] = {"key": cache_key, "step": step, "result": result}
        _write_json(cache_path, cache)
        return result

    def _evaluate(self, model_dir: Path, examples: Sequence[Example], *, k: int, curve: bool) -> dict[str, Any]:

        from trapo.evaluate import evaluate
        from trapo.models import load_model_and_tokenizer
        from trapo.rewards import extract_boxed
        from trapo.rollout import SamplingParams
        from trapo_lab.tasks import solution_style

        model, tokenizer = load_model_and_tokenizer(model_dir)
        started = time.perf_counter()
        report = evaluate(model, tokenizer, examples, k=k, sampling=SamplingParams(temperature=self.spec.temperature),
                          max_new_tokens=self.spec.max_new_tokens, seed=self.spec.eval_seed,
                          batch_size=self.spec.eval_batch_size, pass_ks=(1, k), progress=self.progress,
                          keep_completions=True)
        groups: dict[str, dict[str, Any]] = {}
        for name, metrics in report.groups.items():
            completions = [c for p in report.problems if p.group == name for c in (p.completions or [])]
            groups[name] = {
                "n": metrics.n_problems,
                "acc": metrics.avg_at_k,
                "degenerate": (sum(extract_boxed(c) is None for c in completions) / len(completions)
                               if completions else None),
                "expert_style": (sum(solution_style(c) == "expert" for c in completions) / len(completions)
                                 if completions else None),
                "mean_tokens": metrics.mean_completion_tokens,
                "truncated": metrics.truncated_rate,
            }
            if curve:
                groups[name]["pass@k"] = {str(j): v for j, v in report.pass_at_k_curve(name).items()}
        return {"groups": groups, "k": k, "seconds": round(time.perf_counter() - started, 2),
                "tokens_per_s": report.overall.tokens_per_s, "model": str(model_dir)}

    # ------------------------------------------------------------------ the protocol
    def status(self) -> dict[str, Any]:
        """How many runs the comparison needs and how many are finished, overall and per method (for
        progress across pieces); a method's rate is known once its sweep is trained and validated."""
        done = total = 0
        first = self.spec.seeds[0]
        methods = {}
        for method in self.spec.methods:
            sweep = [RunKey(method, lr, first) for lr in self.spec.lrs(method)]
            n_total = len(sweep) + len(self.spec.seeds) - 1
            n_done = sum(self.is_trained(k) for k in sweep)
            chosen = self._chosen_lr_cached(method) if n_done == len(sweep) else None
            if chosen is not None:
                n_done += sum(self.is_trained(RunKey(method, chosen, s)) for s in self.spec.seeds[1:])
            methods[method] = {"runs_done": n_done, "runs_total": n_total,
                               "chosen_lr": None if chosen is None else format_lr(chosen)}
            done, total = done + n_done, total + n_total
        return {"runs_total": total, "runs_done": done, "methods": methods}

    def _chosen_lr_cached(self, method: str) -> float | None:
        """The chosen rate if every sweep run's validation evaluation is cached, else None."""
        first, scores = self.spec.seeds[0], {}
        for lr in self.spec.lrs(method):
            cache = _read_json(self.run_dir(RunKey(method, lr, first)) / "eval.json") or {}
            entry = cache.get(f"val@{self.spec.max_steps}")
            if entry is None:
                return None
            scores[lr] = group_average(entry["result"]["groups"], self.data.in_domain)
        return select_lr(scores)

    def lr_selection(self, method: str) -> dict[str, Any]:
        """Stage 1 for ``method``: train and validate every rate of its grid at the first seed; choose by the
        in-domain validation average (never the test split)."""
        first, spec = self.spec.seeds[0], self.spec
        scores: dict[float, float | None] = {}
        for lr in spec.lrs(method):
            key = RunKey(method, lr, first)
            self.ensure_trained(key)
            scores[lr] = group_average(self.evaluation(key, "val", spec.max_steps)["groups"], self.data.in_domain)
        return {"scores": {format_lr(lr): s for lr, s in scores.items()}, "chosen": select_lr(scores),
                "criterion": "in-domain validation average of the final model at the first seed"}

    def run(self, *, max_runs: int | None = None, time_budget_s: float | None = None) -> CompareResult:
        """Run (or resume) the whole comparison and return its results.

        Raises :class:`StopRequested` when ``max_runs`` new trainings have been done or ``time_budget_s``
        is spent before the next one would start (everything finished so far is cached).
        """
        spec = self.spec
        self._max_runs = max_runs
        self._deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
        selection = {m: self.lr_selection(m) for m in spec.methods}
        for method in spec.methods:
            lr = selection[method]["chosen"]
            for seed in spec.seeds:
                key = RunKey(method, lr, seed)
                self.ensure_trained(key)
                self.evaluation(key, "test", spec.max_steps)
                self.evaluation(key, "passk", spec.max_steps)
                for step in spec.checkpoint_steps:
                    self.evaluation(key, "val", step)
        for split in ("test", "passk", "val"):
            self.evaluation(None, split, 0)
        return self._results(selection)

    # ------------------------------------------------------------------ results
    def _row(self, groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """One model's table row: per-group accuracy, the two averages, degenerate share."""
        row: dict[str, Any] = {g: groups[g]["acc"] for g in self.data.in_domain + self.data.retained if g in groups}
        row["in_domain"] = group_average(groups, self.data.in_domain)
        row["retained"] = group_average(groups, self.data.retained) if self.data.retained else None
        row["degenerate"] = group_average(groups, self.data.in_domain, "degenerate")
        row["expert_style"] = group_average(groups, self.data.in_domain, "expert_style")
        return row

    def _columns(self) -> list[str]:
        return [*self.data.in_domain, "in_domain", *self.data.retained,
                *(["retained"] if self.data.retained else []), "degenerate", "expert_style"]

    def _aggregate(self, per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
        return {col: mean_std(row.get(col) for row in per_seed.values()) for col in self._columns()}

    def _results(self, selection: dict[str, dict[str, Any]]) -> CompareResult:
        spec = self.spec
        steps_view: dict[str, Any] = {}
        dynamics: dict[str, Any] = {}
        curves: dict[str, Any] = {}
        passk: dict[str, Any] = {}
        timing: dict[str, Any] = {}
        cumulative: dict[str, dict[int, dict[int, float]]] = {}
        k_range = list(range(1, spec.passk_max + 1))

        def passk_curve(result: dict[str, Any]) -> list[float | None]:
            return [group_average({g: {"v": v["pass@k"].get(str(j))} for g, v in result["groups"].items()},
                                  self.data.in_domain, "v") for j in k_range]

        base_row = self._row(self.evaluation(None, "test", 0)["groups"])
        steps_view["base"] = {"lr": None, "per_seed": {"-": base_row},
                              "summary": self._aggregate({0: base_row})}
        passk["base"] = {"k": k_range, "mean": passk_curve(self.evaluation(None, "passk", 0)), "std": None}
        base_val = self._row(self.evaluation(None, "val", 0)["groups"])

        for method in spec.methods:
            lr = selection[method]["chosen"]
            per_seed, seconds, series, curve_rows, pk = {}, {}, {}, {}, {}
            cumulative[method] = {}
            for seed in spec.seeds:
                key = RunKey(method, lr, seed)
                run_dir = self.run_dir(key)
                per_seed[seed] = self._row(self.evaluation(key, "test", spec.max_steps)["groups"])
                rows = read_metrics(run_dir)
                step_s = {int(r["step"]): float(r.get("perf/step_s", 0.0)) for r in rows}
                seconds[seed] = sum(step_s.values())
                cumulative[method][seed] = cumulative_seconds(step_s, [0, *spec.checkpoint_steps])
                series[seed] = [{k: r.get(k) for k in ("step", *DYNAMICS_METRICS, *_level_keys(r))} for r in rows]
                curve_rows[seed] = {0: base_val, **{s: self._row(self.evaluation(key, "val", s)["groups"])
                                                    for s in spec.checkpoint_steps}}
                pk[seed] = passk_curve(self.evaluation(key, "passk", spec.max_steps))
            steps_view[method] = {"lr": lr, "per_seed": {str(s): r for s, r in per_seed.items()},
                                  "summary": self._aggregate(per_seed)}
            timing[method] = {"train_seconds": mean_std(seconds.values()),
                              "step_seconds": mean_std(v / spec.max_steps for v in seconds.values()),
                              "per_seed": {str(s): v for s, v in seconds.items()}}
            dynamics[method] = {"lr": lr, "seeds": {str(s): v for s, v in series.items()}}
            points = [0, *spec.checkpoint_steps]
            curves[method] = {
                "steps": points,
                "seconds": [mean_std(cumulative[method][s][p] for s in spec.seeds)["mean"] for p in points],
                "val_in_domain": [mean_std(curve_rows[s][p]["in_domain"] for s in spec.seeds) for p in points],
                "val_retained": [mean_std(curve_rows[s][p]["retained"] for s in spec.seeds) for p in points],
            }
            passk[method] = {"k": k_range, "mean": [mean_std(pk[s][i] for s in spec.seeds)["mean"]
                                                    for i in range(len(k_range))],
                             "std": [mean_std(pk[s][i] for s in spec.seeds)["std"] for i in range(len(k_range))]}

        wallclock = self._wallclock_view(selection, cumulative, timing, base_row)
        paired = {}
        if REFERENCE_METHOD in spec.methods:
            views = {"equal_steps": steps_view, **({"equal_wallclock": wallclock["methods"]} if wallclock else {})}
            for view, table in views.items():
                ref = table[REFERENCE_METHOD]["per_seed"]
                paired[view] = {
                    m: {col: paired_differences({int(s): r[col] for s, r in ref.items()},
                                                {int(s): r[col] for s, r in table[m]["per_seed"].items()})
                        for col in ("in_domain", "retained") if col in self._columns()}
                    for m in spec.methods if m != REFERENCE_METHOD
                }
        mechanism = {m: _mechanism(dynamics[m]) for m in spec.methods}
        summary = {
            "format": FORMAT,
            "spec": spec.to_dict(),
            "data_dir": str(self.data_dir),
            "base_dir": str(self.base_dir),
            "base_info": _base_info(self.base_dir),
            "columns": self._columns(),
            "in_domain": self.data.in_domain,
            "retained": self.data.retained,
            "eval_sizes": {"val": len(self.data.val), "test": len(self.data.test), "passk": len(self.data.passk)},
            "lr_selection": {m: {**v, "chosen": format_lr(v["chosen"])} for m, v in selection.items()},
            "equal_steps": steps_view,
            "equal_wallclock": wallclock,
            "paired_vs_trapo": paired,
            "timing": timing,
            "curves": curves,
            "passk": passk,
            "mechanism": mechanism,
            "style_share": ("share of in-domain test outputs with a place-value (expert-style) step, by "
                            "trapo_lab.tasks.solution_style"),
        }
        return CompareResult(summary=summary, dynamics=dynamics)

    def _wallclock_view(self, selection, cumulative, timing, base_row) -> dict[str, Any] | None:
        spec = self.spec
        ref = spec.wallclock_reference
        if ref not in spec.methods:
            return None
        budget = max(timing[ref]["per_seed"].values())
        methods: dict[str, Any] = {"base": {"per_seed": {"-": base_row}, "summary": self._aggregate({0: base_row})}}
        for method in spec.methods:
            lr = selection[method]["chosen"]
            per_seed, picked = {}, {}
            for seed in spec.seeds:
                key = RunKey(method, lr, seed)
                step = wallclock_step(cumulative[method][seed], budget)
                picked[str(seed)] = {"step": step, "seconds": cumulative[method][seed][step]}
                result = self.evaluation(None if step == 0 else key, "test", step if step else 0)
                per_seed[seed] = self._row(result["groups"])
            methods[method] = {"lr": lr, "per_seed": {str(s): r for s, r in per_seed.items()},
                               "summary": self._aggregate(per_seed), "checkpoints": picked}
        return {"reference": ref, "budget_seconds": budget, "methods": methods,
                "rule": (f"budget = the longest full-run training time of {ref} over its seeds (sum of perf/step_s); "
                         "each run is taken at its latest checkpoint (every "
                         f"{spec.save_steps} steps) whose cumulative training time is <= the budget, or the base "
                         "model if none is; runs are never extended past max_steps")}


def _level_keys(row: dict[str, Any]) -> list[str]:
    return sorted(k for k in row if k.startswith("guidance/level_"))


def _mechanism(dynamics: dict[str, Any]) -> dict[str, Any]:
    """Share of prefix tokens below alpha (TrSFT's trust region) early (first 10% of steps) and late (last
    10%), mean over seeds; None for methods without prefix tokens."""
    early, late = [], []
    for rows in dynamics["seeds"].values():
        vals = [(r["step"], r.get("trust/prefix_below_alpha")) for r in rows]
        vals = [(s, v) for s, v in vals if v is not None]
        has_prefix = [r for r in rows if (r.get("guidance/level_1") or 0) + (r.get("guidance/level_2") or 0)
                      + (r.get("guidance/level_3") or 0) > 0]
        if not vals or not has_prefix:
            continue
        n = max(1, len(vals) // 10)
        early.append(statistics.fmean(v for _, v in vals[:n]))
        late.append(statistics.fmean(v for _, v in vals[-n:]))
    return {"prefix_below_alpha_early": mean_std(early), "prefix_below_alpha_late": mean_std(late)}


def _base_info(base_dir: Path) -> dict[str, Any]:
    info = _read_json(base_dir / "trapo_base.json") or {}
    keep = ("config_hash", "parameters", "sampled_pass@1", "greedy_pass@1", "expert_token_probability",
            "train_seconds")
    return {k: info[k] for k in keep if k in info}
