"""``trapo compare``: TRAPO against its baselines on the embedded task, over seeds, resumable run by run."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from pathlib import Path

from trapo_lab.cli import lab_command

COMMAND = "compare"

DEFAULT_DATA = "artifacts/data"
DEFAULT_BASE = "artifacts/base"
DEFAULT_STEP_COST = "docs/results/step_cost.json"
# The report goes into the runs directory unless --out or --publish says otherwise.
REPORT_SUBDIR = "report"
QUICK_REPORT_SUBDIR = "report-quick"
# --publish: the report directories committed with the repository.
PUBLISH_DIR = "docs/results/compare"
QUICK_PUBLISH_DIR = "docs/results/compare_quick"
EXIT_STOPPED = 3

DESCRIPTION = """\
Train TRAPO, its ablations and its baselines from the same base model on the embedded task, over several
seeds, evaluate them the same way, and write the tables and plots (results.md / results.json / *.png).

Where the report goes: by default into the runs directory, RUNS_DIR/report (RUNS_DIR/report-quick with
--quick), next to the runs it summarizes; --out DIR writes it to DIR; --publish writes it over the
committed results in docs/results/compare (docs/results/compare_quick with --quick).

Protocol: (1) per method, one run per learning rate of the grid at the sweep seed (--sweep-seed, default 0);
the rate with the best in-domain VALIDATION accuracy is chosen (never the test split); while the best rate is
at an edge of the grid, a rate half a decade beyond it is added (--lr-extensions). (2) every test seed
(--seeds, default 1 2 3: none of them chose the rate) at that rate, the same number of optimizer steps for
every method (sft has no rollouts, so its steps are cheap). (3) final models on the test tiers and retained
skills, a pass@k set (k = 1..16), checkpoints on validation (curves); the base model gets a row; every
evaluation keeps its per-problem outcomes. Report: the paper's four claims first, each with a paired
bootstrap 95% interval over test problems and seeds and a verdict by the interval rule; then claims 2 and 3
at a matched learning rate and in-domain level, equal optimizer steps, equal wall-clock (each run at its
last checkpoint within the longest full GRPO run's training time) and equal time from the interleaved
step-cost benchmark (--step-cost), the validation gain over the last 20% of steps, leakage-robust averages,
every sweep run's in-domain and retained accuracy, the retained-vs-in-domain trade-off plot, training
time, share of prefix tokens below alpha, of degenerate outputs and of outputs in the expert's style.
--beside LABEL=results.json adds other comparisons' verdicts (e.g. a second base, more steps) as columns of
the claims table. Every run and evaluation records the code that made it (trapo version, git commit, dirty
or not; outside the cache keys) and the report counts them per commit (older ones as "unrecorded").

Resumable: every run is cached in --runs-dir under a hash of its config, the base model and the data. A
finished run is reused, an interrupted one (Ctrl-C included) resumes from its last checkpoint, and
evaluations are cached too, so rerunning the same command continues where it stopped; --max-runs and
--time-budget stop cleanly between runs (exit status 3) to do the work in pieces.

How long (2 shared CPU cores, one torch thread each): --quick took 1.9 minutes (21 runs of 6 steps and 74
small evaluations) with the data and base model present; building a missing base model adds about 23
minutes (3000 pre-training steps). The first full comparison (7 methods x 3 learning rates, then 2 more
seeds each: 35 runs of 200 steps; each final model evaluated on 2700 test problems, a 200-problem x
16-sample pass@k set and 5 checkpoints on 600 validation problems) took 204 CPU-minutes of training (per
step: 0.24 s for sft, 1.6 s for GRPO, 1.9 s for LUFFY, 3.0 s for TRAPO, as the models learn to write their
steps out) plus 36 of evaluation: 105 minutes of wall time with the methods split over two or three
processes sharing one --runs-dir (e.g. `--methods trapo trapo-sft` in one, the rest in another), then one
all-method invocation that reads the cache and writes the report (3 minutes). Today's default needs more
(not yet timed): a sweep seed apart from 3 test seeds (7 more runs), up to 2 added rates per method, a
pass@k set of all 1500 in-domain test problems (7.5x the samples) and 10 checkpoints per run on
validation. Run it in pieces: `--sweep-only` first, `--time-budget 50` repeatedly.

If --data or --base do not exist they are built with the default recipes (`trapo data make`, `trapo base`).
"""


def register(subparsers) -> None:
    from trapo.methods import METHODS
    from trapo_lab.compare.cache import DEFAULT_RUNS_DIR
    from trapo_lab.compare.spec import CompareSpec

    full, quick = CompareSpec(), CompareSpec.quick()

    def defaults(name: str) -> str:
        """``default: X; quick: Y`` of a spec field (``default: X`` when both agree), from the spec itself."""
        a, b = _default_text(getattr(full, name)), _default_text(getattr(quick, name))
        return f"default: {a}" if a == b else f"default: {a}; quick: {b}"

    parser = subparsers.add_parser(
        "compare",
        help="compare TRAPO with SFT, GRPO, SFT-then-GRPO, LUFFY and the ablations over seeds",
        description=DESCRIPTION,
        formatter_class=_Formatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke-test sizes: {quick.max_steps} steps, {len(quick.seeds)} seeds, "
        f"{len(next(iter(quick.lr_grid.values())))} learning rates, tiny evaluation sets "
        "(checks the machinery; its numbers say nothing about the methods)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHODS),
        default=None,
        metavar="METHOD",
        help=f"methods to compare, of {', '.join(METHODS)} (default: all)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help=f"seeds ({defaults('seeds')})")
    parser.add_argument(
        "--lrs",
        nargs="+",
        type=float,
        default=None,
        help=f"learning-rate grid for every method ({defaults('lr_grid')})",
    )
    parser.add_argument(
        "--lr-for",
        action="append",
        default=[],
        metavar="METHOD=LR[,LR...]",
        help="learning-rate grid of one method (repeatable; overrides --lrs for it)",
    )
    parser.add_argument(
        "--sweep-seed",
        type=int,
        default=None,
        help=f"seed of the learning-rate sweep; -1: the first of --seeds, which then also tests "
        f"({defaults('sweep_seed')})",
    )
    parser.add_argument(
        "--lr-extensions",
        type=int,
        default=None,
        help="rates added, one half-decade at a time, beyond the edge of a grid whose best rate is at that "
        f"edge ({defaults('lr_extensions')})",
    )
    parser.add_argument("--steps", type=int, default=None, help=f"optimizer steps per run ({defaults('max_steps')})")
    parser.add_argument(
        "--prompts-per-step", type=int, default=None, help=f"prompts per step ({defaults('prompts_per_step')})"
    )
    parser.add_argument(
        "--test-per-tier", type=int, default=None, help=f"test problems per tier ({defaults('n_test_per_tier')})"
    )
    parser.add_argument(
        "--test-per-skill",
        type=int,
        default=None,
        help=f"test problems per retained skill ({defaults('n_test_skill')})",
    )
    parser.add_argument(
        "--test-per-ood-tier",
        type=int,
        default=None,
        help=f"test problems per out-of-distribution tier, 0 for none ({defaults('n_test_ood')})",
    )
    parser.add_argument(
        "--val-per-tier",
        type=int,
        default=None,
        help=f"validation problems per tier, for the learning-rate choice and the curves "
        f"({defaults('n_val_per_tier')})",
    )
    parser.add_argument(
        "--val-per-skill",
        type=int,
        default=None,
        help=f"validation problems per retained skill ({defaults('n_val_skill')})",
    )
    parser.add_argument(
        "--curve-points",
        type=int,
        default=None,
        help=f"checkpoints per run evaluated on validation for the curves ({defaults('curve_points')})",
    )
    parser.add_argument(
        "--passk-per-tier",
        type=int,
        default=None,
        help=f"test problems per tier in the pass@k set ({defaults('n_passk_per_tier')})",
    )
    parser.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="where runs are cached")
    parser.add_argument(
        "--step-cost",
        default=DEFAULT_STEP_COST,
        metavar="JSON",
        help="interleaved step-cost benchmark (benchmarks/step_cost.py) whose ratios give the equal-time view; "
        "'none' (or a missing file) leaves that view out",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help=f"report directory (default: RUNS_DIR/{REPORT_SUBDIR}; quick: RUNS_DIR/{QUICK_REPORT_SUBDIR})",
    )
    where.add_argument(
        "--publish",
        action="store_true",
        help=f"write the report over the committed results in {PUBLISH_DIR} "
        f"(quick: {QUICK_PUBLISH_DIR}) instead of the runs directory",
    )
    parser.add_argument(
        "--beside",
        action="append",
        default=[],
        metavar="LABEL=RESULTS_JSON",
        help="another comparison's results.json whose verdict and 95%% interval per claim go in a column LABEL "
        "beside this one's in the claims table, e.g. 'second base=runs/base1/report/results.json' "
        "(repeatable; read before anything is trained, so a bad path fails at once)",
    )
    parser.add_argument("--data", default=DEFAULT_DATA, help="data directory (`trapo data make`); built if missing")
    parser.add_argument("--base", default=DEFAULT_BASE, help="base model directory (`trapo base`); built if missing")
    parser.add_argument(
        "--max-runs",
        type=int,
        default=None,
        help="stop cleanly after this many trainings (new or resumed) in this invocation",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="MINUTES",
        help="start no new training after this many minutes",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (the embedded model is too small to gain from more, and on a shared "
        "machine extra threads make steps many times slower); 0: torch's default",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="train every run with `trapo train --bf16` (autocast forward passes, float32 master weights): "
        "other runs than the float32 ones (their cache names differ), to compare the two",
    )
    parser.add_argument("--status", action="store_true", help="print how many runs are done and exit")
    parser.add_argument(
        "--sweep-only",
        action="store_true",
        help="stage 1 only: train and validate the learning-rate sweeps, print each rate's in-domain and "
        "retained validation accuracy and exit (no test evaluations, no report)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars for evaluations and builds (the trainer keeps its one bar per run)",
    )
    parser.set_defaults(func=lab_command(COMMAND, run))


def _default_text(value) -> str:
    from trapo_lab.compare.cache import format_lr

    if isinstance(value, dict):  # a learning-rate grid: the most common one, then the methods that differ
        grids = list(value.values())
        common = max(grids, key=grids.count)
        others: dict[tuple, list[str]] = {}
        for method, grid in value.items():
            if grid != common:
                others.setdefault(grid, []).append(method)
        return " ".join([_default_text(common), *(f"({', '.join(m)}: {_default_text(g)})" for g, m in others.items())])
    if isinstance(value, tuple):
        return " ".join(format_lr(v) if isinstance(v, float) else str(v) for v in value)
    return str(value)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, except where the text already says them (quick and full defaults differ)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, []):
            return text
        return super()._get_help_string(action)


def report_dir(args: argparse.Namespace) -> Path:
    """Where the report goes: ``--out``, the published directory with ``--publish``, else in the runs directory."""
    if args.out:
        return Path(args.out)
    if args.publish:
        return Path(QUICK_PUBLISH_DIR if args.quick else PUBLISH_DIR)
    return Path(args.runs_dir) / (QUICK_REPORT_SUBDIR if args.quick else REPORT_SUBDIR)


def spec_from_args(args: argparse.Namespace):  # noqa: C901 (one branch per optional flag)
    """The :class:`~trapo_lab.compare.CompareSpec` the flags describe."""
    from dataclasses import replace

    from trapo.methods import METHODS
    from trapo_lab.compare import CompareSpec

    base = CompareSpec.quick() if args.quick else CompareSpec()
    methods = tuple(args.methods) if args.methods else base.methods
    grid = {m: tuple(args.lrs) if args.lrs else base.lr_grid.get(m, ()) for m in METHODS}
    for item in args.lr_for:
        method, sep, values = item.partition("=")
        if not sep or method not in METHODS:
            raise ValueError(f"--lr-for {item!r}: expected METHOD=LR[,LR...] with METHOD one of {', '.join(METHODS)}")
        try:
            grid[method] = tuple(float(v) for v in values.split(","))
        except ValueError:
            raise ValueError(f"--lr-for {item!r}: learning rates must be numbers") from None
    values = {"methods": methods, "lr_grid": {m: grid[m] for m in methods}}
    if args.seeds:
        values["seeds"] = tuple(args.seeds)
    if args.sweep_seed is not None:
        values["sweep_seed"] = None if args.sweep_seed < 0 else args.sweep_seed
    if args.lr_extensions is not None:
        values["lr_extensions"] = args.lr_extensions
    if args.steps is not None:
        values["max_steps"] = args.steps
        values["curve_points"] = min(base.curve_points, args.steps)
    if args.prompts_per_step is not None:
        values["prompts_per_step"] = args.prompts_per_step
    if args.test_per_tier is not None:
        values["n_test_per_tier"] = args.test_per_tier
        values["n_passk_per_tier"] = min(base.n_passk_per_tier, args.test_per_tier)
    for flag, field in (
        ("test_per_skill", "n_test_skill"),
        ("test_per_ood_tier", "n_test_ood"),
        ("val_per_tier", "n_val_per_tier"),
        ("val_per_skill", "n_val_skill"),
        ("curve_points", "curve_points"),
    ):
        if getattr(args, flag) is not None:
            values[field] = getattr(args, flag)
    if args.passk_per_tier is not None:
        values["n_passk_per_tier"] = args.passk_per_tier
    if args.bf16:
        values["config_overrides"] = {**base.config_overrides, "bf16": True}
    return replace(base, **values)


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    from trapo.trainer.safety import Preempted
    from trapo_lab.compare import Comparison, StopRequested, ensure_inputs, write_report

    started = time.perf_counter()
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    # `kill PID` behaves like Ctrl-C: the trainer checkpoints the current run before exiting
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    hf_logging.disable_progress_bar()  # per-checkpoint "Loading weights" bars would drown the output
    from trapo_lab.compare.report_claims import read_beside

    spec = spec_from_args(args)
    beside = [read_beside(item) for item in args.beside]
    out = report_dir(args)
    data_dir, base_dir = ensure_inputs(args.data, args.base, progress=not args.no_progress)
    step_cost = None if args.step_cost == "none" or not Path(args.step_cost).is_file() else args.step_cost
    comparison = Comparison(
        spec,
        data_dir=data_dir,
        base_dir=base_dir,
        runs_dir=args.runs_dir,
        progress=not args.no_progress,
        step_cost=step_cost,
    )
    status = comparison.status()
    print(f"compare: {status['runs_done']}/{status['runs_total']} runs finished in {args.runs_dir}")
    if args.status:
        for method, entry in status["methods"].items():
            chosen = entry["chosen_lr"] or "not chosen yet"
            print(f"  {method:14s} {entry['runs_done']}/{entry['runs_total']} runs, learning rate {chosen}")
        return 0
    budget = {"max_runs": args.max_runs, "time_budget_s": None if args.time_budget is None else 60 * args.time_budget}
    try:
        if args.sweep_only:
            _print_sweeps(comparison.run_sweeps(**budget))
            return 0
        result = comparison.run(**budget)
    except StopRequested as stop:
        status = comparison.status()
        print(
            f"compare: stopped ({stop}); {status['runs_done']}/{status['runs_total']} runs finished. "
            "Rerun the same command to continue."
        )
        return EXIT_STOPPED
    except (KeyboardInterrupt, Preempted):  # Ctrl-C; `kill PID` (the trainer checkpoints, then raises Preempted)
        print(
            "\ncompare: interrupted. Finished runs and the current run's checkpoint are kept; rerun the same "
            "command to resume.",
            file=sys.stderr,
        )
        return 130
    wall = time.perf_counter() - started
    argv = getattr(args, "argv", None) or sys.argv[1:]
    command = "trapo " + shlex.join(argv)
    note = (
        (
            "This is the `--quick` smoke run: a few steps, two seeds and tiny evaluation sets. It checks that the "
            "machinery works end to end; its numbers say nothing about the methods."
        )
        if args.quick
        else None
    )
    if beside:
        result.summary["beside"] = beside
    paths = write_report(
        result.summary,
        result.dynamics,
        out,
        command=command,
        wall_seconds=wall,
        note=note,
        title="TRAPO vs baselines (quick smoke run)" if args.quick else "TRAPO vs baselines",
    )
    _print_table(result.summary)
    print(
        f"compare: report in {paths['results.md']} (+ results.json, dynamics.json, PNGs); "
        f"{len(comparison.trained_runs)} runs trained and {comparison.evaluations_computed} evaluations computed in "
        f"{wall / 60:.1f} min"
    )
    return 0


def _print_sweeps(selection: dict) -> None:
    from trapo_lab.compare.cache import format_lr
    from trapo_lab.compare.report import pct

    for method, entry in selection.items():
        cells = [f"{lr}: {pct(v)} / {pct(entry['retained'][lr])}" for lr, v in entry["scores"].items()]
        edge = " (at an edge)" if entry["at_edge"] else ""
        chosen = format_lr(entry["chosen"])
        print(f"{method:14s} chosen {chosen}{edge}; in-domain / retained (validation %): {'; '.join(cells)}")


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _print_table(summary: dict) -> None:
    from trapo_lab.compare.claims import claims_table
    from trapo_lab.compare.report import mean_std_cell
    from trapo_lab.compare.report_claims import beside_cell, interval

    for claim in claims_table(summary):
        print(f"claim {claim['claim']}: {claim['verdict']:13s} 95% {interval(claim['ci95']):>16s}  {claim['text']}")
        for other in summary.get("beside", ()):
            print(f"  {other['label']}: {beside_cell(other, claim['claim'])}")

    print(
        f"\n{'method':14s} {'lr':>6s} {'in-domain':>14s} {'retained':>14s}   (test accuracy %, mean ± std over seeds)"
    )
    for name in ["base", *summary["spec"]["methods"]]:
        entry = summary["equal_steps"][name]
        lr = "-" if entry["lr"] is None else summary["lr_selection"][name]["chosen"]
        print(
            f"{name:14s} {lr:>6s} {mean_std_cell(entry['summary']['in_domain']):>14s} "
            f"{mean_std_cell(entry['summary'].get('retained')):>14s}"
        )
    print()
