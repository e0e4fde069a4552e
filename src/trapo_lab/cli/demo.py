"""``trapo demo``: the embedded default end to end on CPU — data, base model, TRAPO, before/after table."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from trapo_lab.cli import lab_command

COMMAND = "demo"
DEFAULT_THREADS = min(2, os.cpu_count() or 1)
# The published full comparison (relative to the repository root, where `make demo` runs).
PUBLISHED_RESULTS = "docs/results/compare/results.json"

DESCRIPTION = """\
The main job on the embedded default, on CPU (measured fresh on an idle 2-core machine with the default two
threads: 16.4 minutes in all, about 12 of them building the base model once; the README has the numbers):

  1. write the built-in task's splits to WORKDIR/data (chain arithmetic, tiers 1-5 and an out-of-distribution
     column of tiers 6-7; expert solutions written step by step, a form the base model, which answers
     chains in one go, finds unlikely; plus retained skills) unless they exist;
  2. pre-train the tiny (4.27M-parameter) base model into WORKDIR/base unless it exists;
  3. evaluate the base model on held-out problems of every tier and the retained skill;
  4. train --method (TRAPO by default) for --steps optimizer steps into WORKDIR/runs/demo-METHOD;
  5. evaluate the trained model the same way and print both tables side by side.

Steps 1-2 are cached; a second run reuses them. Run `trapo train --help` for the full trainer.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="Run TRAPO on the embedded default (CPU; base built once).",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", default="artifacts", help="Where data, base model and runs go.")
    parser.add_argument("--method", default="trapo", help="Training method (see `trapo train --help`).")
    parser.add_argument("--steps", type=int, default=200, help="Optimizer steps (the full comparison's budget).")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-4,
        help="Peak learning rate (1e-4: what `trapo compare` chose for TRAPO on validation, from 1e-5 / 3e-5 / 1e-4).",
    )
    parser.add_argument("--eval-per-tier", type=int, default=200, help="Held-out problems per tier / skill.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the run (data and base model use seed 0).")
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"torch CPU threads (default {DEFAULT_THREADS}: two, or one on a one-core machine; on an idle 2-core "
        "machine two build the base 1.8x faster than one, the same arithmetic up to summation order, and train "
        "the tiny model faster too, though not bit for bit alike from run to run (1 is: a run repeats exactly on "
        "one machine); 0: torch's default).",
    )
    parser.set_defaults(func=lab_command(COMMAND, run))


def comparison_line(results_json: Path) -> str:
    """One line on what the published full comparison found (its first claim, with the command that
    reproduces it), read from its ``results.json``; a pointer to ``trapo compare`` when there is none."""
    from trapo_lab.compare.claims import claims_table
    from trapo_lab.compare.report_claims import interval, points

    if not results_json.is_file():
        return (
            "Whether TRAPO beats its baselines takes the full comparison: `trapo compare` "
            "(docs/results/compare/results.md in the repository)."
        )
    summary = json.loads(results_json.read_text())
    claims = summary.get("claims") or claims_table(summary)
    if not claims:
        return (
            f"{results_json} was written before per-problem outcomes were kept, so it has no claims with "
            "intervals: `trapo compare --publish` rewrites it from the run cache."
        )
    first = claims[0]
    against = (first.get("deciding") or "–").split(" vs ")[-1]
    return (
        f"The full comparison ({results_json.parent / 'results.md'}; reproduce: `{summary.get('command')}`): "
        f"claim 1 ({first['text']}): {first['verdict']}, d vs {against} {points(first.get('d'), True)} "
        f"{interval(first.get('ci95'))}."
    )


def _evaluate(model_dir: Path, examples, seed: int) -> dict:
    from trapo.evaluate import evaluate
    from trapo.models import load_model_and_tokenizer
    from trapo.rollout import SamplingParams

    model, tokenizer = load_model_and_tokenizer(model_dir)
    report = evaluate(
        model,
        tokenizer,
        examples,
        k=1,
        sampling=SamplingParams(temperature=1.0),
        max_new_tokens=256,
        seed=seed,
        progress=True,
    )
    return {name: g.avg_at_k for name, g in report.groups.items()}


def run(args: argparse.Namespace) -> int:
    import torch

    from trapo.config import TRAPOConfig
    from trapo.data import load_examples
    from trapo.trainer import TRAPOTrainer
    from trapo_lab.pretrain import build_base_model
    from trapo_lab.tasks import make_splits

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    work = Path(args.workdir)
    data = work / "data"
    if not (data / "manifest.json").is_file():
        print(f"[1/5] writing the embedded task's splits to {data}")
        make_splits(data, seed=0)
    else:
        print(f"[1/5] data: reusing {data}")
    print(f"[2/5] base model in {work / 'base'} (built once, then reused)")
    base = build_base_model(work / "base")
    per_source: dict[str, list] = {}
    held_out = [data / f"{name}.parquet" for name in ("test", "test_ood", "test_skills")]
    for e in load_examples([p for p in held_out if p.is_file()]).examples:  # test_ood: shortcut task only
        per_source.setdefault(e.data_source, []).append(e)
    eval_set = [e for rows in per_source.values() for e in rows[: args.eval_per_tier]]

    print(f"[3/5] evaluating the base model on {len(eval_set)} held-out problems")
    before = _evaluate(base, eval_set, args.seed)

    from trapo.models import load_model_and_tokenizer

    out = work / "runs" / f"demo-{args.method}"
    config = TRAPOConfig(
        method=args.method,
        output_dir=str(out),
        max_steps=args.steps,
        seed=args.seed,
        learning_rate=args.learning_rate,
        max_completion_length=128,
        sample_log_steps=10,
        overwrite_output_dir=True,
    )  # a demo run replaces the previous demo's
    print(f"[4/5] training {args.method} for {args.steps} steps into {out}")
    model, tokenizer = load_model_and_tokenizer(base)
    examples = load_examples([data / "train.parquet"]).examples
    trainer = TRAPOTrainer(model, args=config, train_dataset=examples, processing_class=tokenizer)
    result = trainer.train()

    print(f"[5/5] evaluating the trained model ({result.final_model_dir})")
    after = _evaluate(result.final_model_dir, eval_set, args.seed)

    rows = ["| held-out set | base | after " + args.method + " |", "|---|---|---|"]
    for name in before:
        rows.append(f"| {name} | {100 * before[name]:.1f} | {100 * after[name]:.1f} |")
    table = "\n".join(rows)
    summary = {
        "method": args.method,
        "steps": args.steps,
        "learning_rate": args.learning_rate,
        "before": before,
        "after": after,
        "minutes": round((time.time() - started) / 60, 1),
        "run_dir": str(out),
        "final_model": str(result.final_model_dir),
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print("\nSampled (T = 1) pass@1, % of held-out problems:\n" + table)
    print("\n" + comparison_line(Path(PUBLISHED_RESULTS)))
    print(
        f"\ndone in {summary['minutes']} min; metrics per step in {out / 'metrics.jsonl'}, "
        f"example trajectories in {out / 'samples.jsonl'}"
    )
    return 0
