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
from .aggregate import select_lr
from .cache import DEFAULT_RUNS_DIR, FORMAT, RunCache, RunKey, eval_settings, format_lr, model_identity
from .data import CompareData
from .provenance import code_label, code_provenance, provenance_table
from .spec import CompareSpec
from .stats import decode_counts, problem_outcomes
from .views import benchmark_checkpoint, readings_summary, wallclock_view

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
        step_cost: a ``benchmarks/step_cost.py`` JSON (``step_time_ratio_to_grpo``) for the equal-time view
            read from an interleaved benchmark; None: no such view.
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
        step_cost: str | os.PathLike | None = None,
    ):
        self.spec = spec
        self.data_dir, self.base_dir, self.runs_dir = Path(data_dir), Path(base_dir), Path(runs_dir)
        self.progress, self.log = progress, log
        # the interleaved step-cost benchmark's JSON (benchmarks/step_cost.py) for the equal-time view
        self.step_cost_source = None if step_cost is None else str(step_cost)
        self.step_cost = {} if step_cost is None else json.loads(Path(step_cost).read_text())
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
        self.runs_used: set[RunKey] = set()  # every run this object trained or found trained
        self.evaluations_used: dict[tuple[str, str, int], str] = {}  # (run, split, step) -> its code label
        self._max_runs: int | None = None
        self._sweep_done = False
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

        self.runs_used.add(key)
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
        used = ("base" if key is None else key.label, split, step)
        cached = self.cache.read_evaluation(key, split, step, settings)
        if cached is not None and "outcomes" in cached:  # evaluations cached before outcomes were kept: redo
            self.evaluations_used[used] = code_label(cached.get("code"))
            return cached
        result = self._evaluate(self.cache.model_dir(key, step), examples, k=k, pass_at_k=split == "passk")
        result["settings"] = settings
        result["code"] = code_provenance()  # not part of the key: see trapo_lab.compare.provenance
        self.evaluations_computed += 1
        self.cache.write_evaluation(key, split, step, settings, result)
        self.evaluations_used[used] = code_label(result["code"])
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
        outcomes = problem_outcomes(report.problems, extract_boxed, solution_style)
        groups: dict[str, dict[str, Any]] = {}
        for name, metrics in report.groups.items():
            samples = k * metrics.n_problems
            groups[name] = {
                "n": metrics.n_problems,
                "acc": metrics.avg_at_k,
                "degenerate": sum(decode_counts(outcomes[name]["degenerate"])) / samples if samples else None,
                "expert_style": sum(decode_counts(outcomes[name]["expert_style"])) / samples if samples else None,
                "mean_tokens": metrics.mean_completion_tokens,
                "truncated": metrics.truncated_rate,
            }
            if pass_at_k:
                groups[name]["pass@k"] = {str(j): v for j, v in report.pass_at_k_curve(name).items()}
        return {
            "groups": groups,
            "outcomes": outcomes,
            "k": k,
            "seconds": round(time.perf_counter() - started, 2),
            "tokens_per_s": report.overall.tokens_per_s,
            "model": str(model_dir),
        }

    # ------------------------------------------------------------------ the protocol
    def status(self) -> dict[str, Any]:
        """How many runs the comparison needs and how many are finished, overall and per method (for
        progress across pieces); a method's rate is known once its sweep is trained and validated (until
        then its total counts the rates known so far)."""
        done = total = 0
        spec = self.spec
        methods = {}
        for method in spec.methods:
            rows = self.sweep(method, train=False)
            chosen = select_lr({lr: r["in_domain"] for lr, r in rows.items()}) if self._sweep_done else None
            sweep_keys = [RunKey(method, lr, spec.selection_seed) for lr in rows]
            n_total = max(len(rows), len(spec.lr_grid[method])) + len(self._test_seeds())
            n_done = sum(self.is_trained(k) for k in sweep_keys)
            if chosen is not None:
                n_done += sum(self.is_trained(RunKey(method, chosen, s)) for s in self._test_seeds())
            methods[method] = {
                "runs_done": n_done,
                "runs_total": n_total,
                "chosen_lr": None if chosen is None else format_lr(chosen),
            }
            done, total = done + n_done, total + n_total
        return {"runs_total": total, "runs_done": done, "methods": methods}

    def _test_seeds(self) -> list[int]:
        """Test seeds that need a run besides the sweep (the sweep's run is reused at its own seed)."""
        return [s for s in self.spec.seeds if s != self.spec.selection_seed]

    def sweep(self, method: str, *, train: bool = True) -> dict[float, dict[str, Any]]:
        """Stage 1 for ``method``: per learning rate, the validation row (in-domain, retained, ...) of the
        final model at the sweep seed; rates are added beyond an edge of the grid while the best rate is at
        that edge (:func:`~trapo_lab.compare.aggregate.grid_extension`, at most ``spec.lr_extensions``).
        ``train=False`` reads the cache only and stops at the first rate without a validation (then
        ``self._sweep_done`` is False)."""
        spec = self.spec
        grid, rows, added = list(spec.lr_grid[method]), {}, 0
        self._sweep_done = False
        while True:
            for lr in grid:
                if lr in rows:
                    continue
                key = RunKey(method, lr, spec.selection_seed)
                if train:
                    self.ensure_trained(key)
                    groups = self.evaluation(key, "val", spec.max_steps)["groups"]
                elif (groups := self.cache.final_validation_groups(key)) is None:
                    return rows
                rows[lr] = aggregate.table_row(groups, self.data.in_domain, self.data.retained)
            extra = aggregate.grid_extension({lr: r["in_domain"] for lr, r in rows.items()})
            if extra is None or added >= spec.lr_extensions:
                self._sweep_done = True
                return rows
            grid.append(extra)
            added += 1

    def lr_selection(self, method: str) -> dict[str, Any]:
        """Stage 1 for ``method`` (:meth:`sweep`): choose by the in-domain validation average (never the
        test split); keep every sweep run's in-domain and retained validation accuracy."""
        rows = self.sweep(method)
        scores = {lr: r["in_domain"] for lr, r in rows.items()}
        chosen = select_lr(scores)
        return {
            "scores": {format_lr(lr): s for lr, s in scores.items()},
            "retained": {format_lr(lr): r["retained"] for lr, r in rows.items()},
            "chosen": chosen,
            "grid": [format_lr(lr) for lr in self.spec.lr_grid[method]],
            "added": [format_lr(lr) for lr in rows if lr not in self.spec.lr_grid[method]],
            "at_edge": chosen in (min(rows), max(rows)) and len(rows) > 1,
            "criterion": f"in-domain validation average of the final model at seed {self.spec.selection_seed}",
        }

    def run_sweeps(self, *, max_runs: int | None = None, time_budget_s: float | None = None) -> dict[str, Any]:
        """Stage 1 only: every method's learning-rate sweep, trained and validated (:meth:`lr_selection`);
        budgets as in :meth:`run`."""
        self._max_runs = max_runs
        self._deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
        return {m: self.lr_selection(m) for m in self.spec.methods}

    def run(self, *, max_runs: int | None = None, time_budget_s: float | None = None) -> CompareResult:
        """Run (or resume) the whole comparison and return its results.

        Raises :class:`StopRequested` when ``max_runs`` new trainings have been done or ``time_budget_s``
        is spent before the next one would start (everything finished so far is cached).
        """
        spec = self.spec
        selection = self.run_sweeps(max_runs=max_runs, time_budget_s=time_budget_s)
        for method in spec.methods:
            lr = selection[method]["chosen"]
            for seed in spec.seeds:
                key = RunKey(method, lr, seed)
                self.ensure_trained(key)
                for step in self.benchmark_steps(method):
                    self.evaluation(key, "test", step)
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

        wallclock = wallclock_view(self, selection, cumulative, timing, base_row, columns)
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
        summary.update(self._readings(selection, curves))
        summary["provenance"] = self.provenance()
        return CompareResult(summary=summary, dynamics=dynamics)

    def provenance(self) -> dict[str, Any]:
        """Which code made the runs and evaluations this object used (per code label, how many of each), and
        the code of this invocation."""
        runs = [self.cache.run_code(key) for key in sorted(self.runs_used, key=lambda k: k.label)]
        return {
            "by_code": provenance_table(runs, self.evaluations_used.values()),
            "this_invocation": code_provenance(),
        }

    def _outcomes(self, key: RunKey | None, split: str, step: int) -> dict[str, Any]:
        return self.evaluation(key, split, step)["outcomes"]

    def _readings(self, selection: dict[str, dict[str, Any]], curves: dict[str, Any]) -> dict[str, Any]:
        return readings_summary(self, selection, curves)

    def benchmark_steps(self, method: str) -> list[int]:
        """The checkpoint the step-cost benchmark's equal-time view reads ``method``'s runs at (none without
        a benchmark or a ratio for the method, or when it is the final model)."""
        step = benchmark_checkpoint(self, method)
        return [] if step is None or step in (0, self.spec.max_steps) else [step]

    def _base_info(self) -> dict[str, Any]:
        from trapo_lab.pretrain import read_base_info

        info = read_base_info(self.base_dir) or {}
        return {k: info[k] for k in BASE_INFO_KEYS if k in info}
