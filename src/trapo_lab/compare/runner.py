"""Running a comparison: :class:`Comparison` trains and evaluates the runs of a :class:`CompareSpec` through
the run cache (resuming interrupted runs, stopping cleanly at a run or time budget) and assembles the
summary from the cached evaluations with :mod:`trapo_lab.compare.aggregate`.

The trainer, the models and the evaluation harness are imported when first used, so importing the package
(for :class:`~trapo_lab.compare.CompareSpec`, e.g. by the command line's help) stays cheap."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trapo.data import Example

from . import aggregate
from .aggregate import group_average, select_lr
from .cache import DEFAULT_RUNS_DIR, FORMAT, RunCache, RunKey, eval_settings, format_lr, model_identity
from .data import CompareData
from .spec import CompareSpec

# What trapo_base.json of the base model contributes to the summary.
BASE_INFO_KEYS = (
    "config_hash",
    "parameters",
    "sampled_pass@1",
    "greedy_pass@1",
    "expert_token_probability",
    "train_seconds",
)


class StopRequested(Exception):
    """The run or time budget of this invocation is spent (rerun the same command to continue)."""


@dataclass
class CompareResult:
    """What :meth:`Comparison.run` produced: a JSON-able summary (the tables) and per-step dynamics."""

    summary: dict[str, Any]
    dynamics: dict[str, Any]


class Comparison:
    """Runs a :class:`CompareSpec` with cached, resumable runs (the protocol: :mod:`trapo_lab.compare`).

    Args:
        spec: what to run.
        data_dir: a ``trapo data make`` directory (train/val/test/val_skills/test_skills).
        base_dir: the base model every run starts from (``trapo base``).
        runs_dir: where runs are cached (``<method>-lr<lr>-s<seed>-<hash>/``, :mod:`trapo_lab.compare.cache`).
        progress: tqdm bars of the evaluations (the trainer always shows its own bar).
        log: where progress lines go.
    """

    def __init__(
        self,
        spec: CompareSpec,
        *,
        data_dir: str | os.PathLike,
        base_dir: str | os.PathLike,
        runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ):
        self.spec = spec
        self.data_dir, self.base_dir, self.runs_dir = Path(data_dir), Path(base_dir), Path(runs_dir)
        self.progress, self.log = progress, log
        self.data = CompareData.load(self.data_dir, spec)
        self.cache = RunCache(
            spec,
            self.runs_dir,
            base_dir=self.base_dir,
            base_identity=model_identity(self.base_dir),
            data_dir=self.data_dir,
            train_identity=self.data.train_identity,
        )
        self.trained_runs: list[tuple[RunKey, int]] = []  # (run, step it resumed from) trained by this object
        self.evaluations_computed = 0  # evaluations computed (not read from the cache) by this object
        self._max_runs: int | None = None
        self._deadline: float | None = None

    def run_dir(self, key: RunKey) -> Path:
        return self.cache.run_dir(key)

    def is_trained(self, key: RunKey) -> bool:
        return self.cache.is_trained(key)

    # ------------------------------------------------------------------ training
    def ensure_trained(self, key: RunKey) -> Path:
        """Train ``key`` unless it is finished; resume it from its last checkpoint if it was interrupted."""
        from trapo.models import load_model_and_tokenizer
        from trapo.trainer import TRAPOTrainer, read_metrics
        from trapo.trainer.checkpoint import latest_checkpoint

        if self.is_trained(key):
            return self.run_dir(key)
        if self._max_runs is not None and len(self.trained_runs) >= self._max_runs:
            raise StopRequested(f"--max-runs {self._max_runs} reached")
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise StopRequested("time budget spent")
        run_dir, config = self.cache.prepare_run(key)
        latest = latest_checkpoint(run_dir)
        resumed_from = 0
        if latest is not None:
            resumed_from = json.loads((latest / "trainer_state.json").read_text())["step"]
        self.log(f"train {key.label} ({run_dir.name})" + (f", resuming at step {resumed_from}" if latest else ""))
        if latest is None:  # a run killed before its first checkpoint starts again from scratch
            config = dataclasses.replace(config, overwrite_output_dir=True)
        model, tokenizer = load_model_and_tokenizer(self.base_dir)
        trainer = TRAPOTrainer(model, processing_class=tokenizer, train_dataset=self.data.train, args=config)
        self.trained_runs.append((key, resumed_from))
        result = trainer.train(resume_from_checkpoint=True if latest is not None else None)
        train_seconds = sum(r.get("perf/step_s", 0.0) for r in read_metrics(run_dir))
        self.cache.finish_run(key, steps=result.steps, train_seconds=train_seconds, resumed_from=resumed_from)
        return run_dir

    # ------------------------------------------------------------------ evaluation
    def evaluation(self, key: RunKey | None, split: str, step: int) -> dict[str, Any]:
        """The (cached) evaluation of run ``key`` (None: the base model) at ``step`` on ``split``:
        ``"val"`` (one sample per problem), ``"test"`` (``test_k`` samples) or ``"passk"`` (``passk_max``
        samples, pass@1..passk_max)."""
        examples = {"val": self.data.val, "test": self.data.test, "passk": self.data.passk}[split]
        k = {"val": 1, "test": self.spec.test_k, "passk": self.spec.passk_max}[split]
        settings = eval_settings(self.spec, split, k, examples)
        if key is None:
            step = 0
        cached = self.cache.read_evaluation(key, split, step, settings)
        if cached is not None:
            return cached
        result = self._evaluate(self.cache.model_dir(key, step), examples, k=k, pass_at_k=split == "passk")
        result["settings"] = settings
        self.evaluations_computed += 1
        self.cache.write_evaluation(key, split, step, settings, result)
        return result

    def _evaluate(self, model_dir: Path, examples: Sequence[Example], *, k: int, pass_at_k: bool) -> dict[str, Any]:
        """Evaluate one model: per group, accuracy (avg@k), the shares of degenerate (no ``\\boxed``) and
        expert-style outputs, mean length, truncation, and the pass@1..k curve if ``pass_at_k``."""
        from trapo.evaluate import evaluate
        from trapo.models import load_model_and_tokenizer
        from trapo.rewards import extract_boxed
        from trapo.rollout import SamplingParams
        from trapo_lab.tasks import solution_style

        model, tokenizer = load_model_and_tokenizer(model_dir)
        started = time.perf_counter()
        report = evaluate(
            model,
            tokenizer,
            examples,
            k=k,
            sampling=SamplingParams(temperature=self.spec.temperature),
            max_new_tokens=self.spec.max_new_tokens,
            seed=self.spec.eval_seed,
            batch_size=self.spec.eval_batch_size,
            pass_ks=(1, k),
            progress=self.progress,
            keep_completions=True,
        )
        groups: dict[str, dict[str, Any]] = {}
        for name, metrics in report.groups.items():
            completions = [c for p in report.problems if p.group == name for c in (p.completions or [])]
            groups[name] = {
                "n": metrics.n_problems,
                "acc": metrics.avg_at_k,
                "degenerate": (
                    sum(extract_boxed(c) is None for c in completions) / len(completions) if completions else None
                ),
                "expert_style": (
                    sum(solution_style(c) == "expert" for c in completions) / len(completions) if completions else None
                ),
                "mean_tokens": metrics.mean_completion_tokens,
                "truncated": metrics.truncated_rate,
            }
            if pass_at_k:
                groups[name]["pass@k"] = {str(j): v for j, v in report.pass_at_k_curve(name).items()}
        return {
            "groups": groups,
            "k": k,
            "seconds": round(time.perf_counter() - started, 2),
            "tokens_per_s": report.overall.tokens_per_s,
            "model": str(model_dir),
        }

    # ------------------------------------------------------------------ the protocol
    def status(self) -> dict[str, Any]:
        """How many runs the comparison needs and how many are finished, overall and per method (for
        progress across pieces); a method's rate is known once its sweep is trained and validated."""
        done = total = 0
        first = self.spec.seeds[0]
        methods = {}
        for method in self.spec.methods:
            sweep = [RunKey(method, lr, first) for lr in self.spec.lr_grid[method]]
            n_total = len(sweep) + len(self.spec.seeds) - 1
            n_done = sum(self.is_trained(k) for k in sweep)
            chosen = self._cached_chosen_lr(method) if n_done == len(sweep) else None
            if chosen is not None:
                n_done += sum(self.is_trained(RunKey(method, chosen, s)) for s in self.spec.seeds[1:])
            methods[method] = {
                "runs_done": n_done,
                "runs_total": n_total,
                "chosen_lr": None if chosen is None else format_lr(chosen),
            }
            done, total = done + n_done, total + n_total
        return {"runs_total": total, "runs_done": done, "methods": methods}

    def _cached_chosen_lr(self, method: str) -> float | None:
        """The chosen rate if every sweep run's validation evaluation is cached, else None."""
        scores = {}
        for lr in self.spec.lr_grid[method]:
            groups = self.cache.final_validation_groups(RunKey(method, lr, self.spec.seeds[0]))
            if groups is None:
                return None
            scores[lr] = group_average(groups, self.data.in_domain)
        return select_lr(scores)

    def lr_selection(self, method: str) -> dict[str, Any]:
        """Stage 1 for ``method``: train and validate every rate of its grid at the first seed; choose by the
        in-domain validation average (never the test split)."""
        first, spec = self.spec.seeds[0], self.spec
        scores: dict[float, float | None] = {}
        for lr in spec.lr_grid[method]:
            key = RunKey(method, lr, first)
            self.ensure_trained(key)
            scores[lr] = group_average(self.evaluation(key, "val", spec.max_steps)["groups"], self.data.in_domain)
        return {
            "scores": {format_lr(lr): s for lr, s in scores.items()},
            "chosen": select_lr(scores),
            "criterion": "in-domain validation average of the final model at the first seed",
        }

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
        return self.results(selection)

    # ------------------------------------------------------------------ results
    def _row(self, key: RunKey | None, split: str, step: int) -> dict[str, Any]:
        """The table row of an evaluation (:func:`~trapo_lab.compare.aggregate.table_row`)."""
        return aggregate.table_row(
            self.evaluation(key, split, step)["groups"],
            self.data.in_domain,
            self.data.retained,
            self.data.ood if split == "test" else (),
        )

    def results(self, selection: dict[str, dict[str, Any]]) -> CompareResult:
        """The summary and dynamics of the finished comparison, given each method's learning-rate selection
        (evaluations missing from the cache are computed)."""
        from trapo.trainer import read_metrics

        spec, data = self.spec, self.data
        columns = aggregate.table_columns(data.in_domain, data.retained, data.ood)
        ks = list(range(1, spec.passk_max + 1))
        points = [0, *spec.checkpoint_steps]
        steps_view: dict[str, Any] = {}
        dynamics: dict[str, Any] = {}
        curves: dict[str, Any] = {}
        passk: dict[str, Any] = {}
        timing: dict[str, Any] = {}
        cumulative: dict[str, dict[int, dict[int, float]]] = {}  # method -> seed -> step -> training seconds

        base_row = self._row(None, "test", 0)
        steps_view["base"] = {
            "lr": None,
            "per_seed": {"-": base_row},
            "summary": aggregate.summarize_rows({0: base_row}, columns),
        }
        passk["base"] = {
            "k": ks,
            "std": None,
            "mean": aggregate.passk_curve(self.evaluation(None, "passk", 0)["groups"], data.in_domain, ks),
        }
        base_val_row = self._row(None, "val", 0)

        for method in spec.methods:
            lr = selection[method]["chosen"]
            test_rows, train_seconds, series, val_rows, passk_curves = {}, {}, {}, {}, {}
            cumulative[method] = {}
            for seed in spec.seeds:
                key = RunKey(method, lr, seed)
                test_rows[seed] = self._row(key, "test", spec.max_steps)
                metric_rows = read_metrics(self.run_dir(key))
                seconds_by_step = aggregate.step_seconds(metric_rows)
                train_seconds[seed] = sum(seconds_by_step.values())
                cumulative[method][seed] = aggregate.cumulative_seconds(seconds_by_step, points)
                series[seed] = aggregate.dynamics_series(metric_rows)
                val_rows[seed] = {0: base_val_row, **{s: self._row(key, "val", s) for s in spec.checkpoint_steps}}
                passk_curves[seed] = aggregate.passk_curve(
                    self.evaluation(key, "passk", spec.max_steps)["groups"], data.in_domain, ks
                )
            steps_view[method] = {
                "lr": lr,
                "per_seed": {str(s): r for s, r in test_rows.items()},
                "summary": aggregate.summarize_rows(test_rows, columns),
            }
            timing[method] = aggregate.timing_summary(train_seconds, spec.max_steps)
            dynamics[method] = {"lr": lr, "seeds": {str(s): v for s, v in series.items()}}
            curves[method] = aggregate.validation_curves(points, cumulative[method], val_rows)
            passk[method] = aggregate.passk_summary(ks, passk_curves)

        wallclock = self._wallclock_view(selection, cumulative, timing, base_row, columns)
        paired = {}
        if aggregate.PAIRED_AGAINST in spec.methods:
            views = {"equal_steps": steps_view, **({"equal_wallclock": wallclock["methods"]} if wallclock else {})}
            paired = {view: aggregate.paired_table(table, spec.methods, columns) for view, table in views.items()}
        summary = {
            "format": FORMAT,
            "spec": spec.to_dict(),
            "data_dir": str(self.data_dir),
            "base_dir": str(self.base_dir),
            "base_info": self._base_info(),
            "columns": columns,
            "in_domain": data.in_domain,
            "retained": data.retained,
            "ood": data.ood,
            "eval_sizes": {"val": len(data.val), "test": len(data.test), "passk": len(data.passk)},
            "lr_selection": {m: {**v, "chosen": format_lr(v["chosen"])} for m, v in selection.items()},
            "equal_steps": steps_view,
            "equal_wallclock": wallclock,
            "paired_vs_trapo": paired,  # against aggregate.PAIRED_AGAINST
            "timing": timing,
            "curves": curves,
            "passk": passk,
            "mechanism": {m: aggregate.prefix_below_alpha_shares(dynamics[m]) for m in spec.methods},
            "style_share": (
                "share of in-domain test outputs written in the expert's form, by "
                "trapo_lab.tasks.solution_style; tier 1's two forms coincide, so about 20% is the floor"
            ),
        }
        return CompareResult(summary=summary, dynamics=dynamics)

    def _wallclock_view(
        self,
        selection: dict[str, dict[str, Any]],
        cumulative: dict[str, dict[int, dict[int, float]]],
        timing: dict[str, Any],
        base_row: dict[str, Any],
        columns: list[str],
    ) -> dict[str, Any] | None:
        """The equal-wall-clock table: each run at its latest checkpoint within the reference method's longest
        full-run training time (None when the reference method is not compared)."""
        spec = self.spec
        ref = spec.wallclock_reference
        if ref not in spec.methods:
            return None
        budget = max(timing[ref]["per_seed"].values())
        methods: dict[str, Any] = {
            "base": {"per_seed": {"-": base_row}, "summary": aggregate.summarize_rows({0: base_row}, columns)}
        }
        for method in spec.methods:
            lr = selection[method]["chosen"]
            rows, picked = {}, {}
            for seed in spec.seeds:
                step = aggregate.wallclock_step(cumulative[method][seed], budget)
                picked[str(seed)] = {"step": step, "seconds": cumulative[method][seed][step]}
                rows[seed] = self._row(None if step == 0 else RunKey(method, lr, seed), "test", step)
            methods[method] = {
                "lr": lr,
                "per_seed": {str(s): r for s, r in rows.items()},
                "summary": aggregate.summarize_rows(rows, columns),
                "checkpoints": picked,
            }
        return {
            "reference": ref,
            "budget_seconds": budget,
            "methods": methods,
            "rule": (
                f"budget = the longest full-run training time of {ref} over its seeds (sum of perf/step_s); "
                "each run is taken at its latest checkpoint (every "
                f"{spec.save_steps} steps) whose cumulative training time is <= the budget, or the base "
                "model if none is; runs are never extended past max_steps"
            ),
        }

    def _base_info(self) -> dict[str, Any]:
        from trapo_lab.pretrain import read_base_info

        info = read_base_info(self.base_dir) or {}
        return {k: info[k] for k in BASE_INFO_KEYS if k in info}
