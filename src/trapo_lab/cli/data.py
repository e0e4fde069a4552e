"""``trapo data``: write the embedded task's splits (``make``) or summarise a written directory (``show``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trapo_lab.cli import lab_command
from trapo_lab.tasks.arithmetic import DEFAULT_TASK, TASKS
from trapo_lab.tasks.splits import EXPERT_STYLES

DEFAULT_OUTPUT = "artifacts/data"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="write the embedded chain-arithmetic task's train/val/test splits",
        description=(
            "The embedded task: chain arithmetic in five tiers (tier = number of operations; prompts like "
            "37+5-8*2), plus retained skills (digit reversal and sorting) held out as the 'general' column. "
            "Default design (--task shortcut): the base model answers chains in one go, the expert solves "
            "them one operation per paragraph; tiers 6 and 7 are an out-of-distribution column (val_ood / "
            "test_ood). --task place-value: the earlier design (expert solutions in a place-value style). "
            "Splits never overlap, and no validation/test problem is in pre-training."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    make = actions.add_parser(
        "make",
        help="write the splits as verl parquet + JSONL",
        description=(
            "Write OUTPUT/{train,val,test,val_skills,test_skills,val_ood,test_ood}.{parquet,jsonl} (no *_ood "
            "for --task place-value; verl layout: prompt chat "
            "messages, reward_model.ground_truth, extra_info.expert_solutions / tier / split / "
            "native_solution) and OUTPUT/manifest.json (config, hash, counts per data_source). "
            "Re-running with the same options reuses the directory; other existing content is an error "
            "unless --force."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    make.add_argument("--output", "-o", default=DEFAULT_OUTPUT, help="output directory")
    make.add_argument(
        "--task",
        choices=TASKS,
        default=DEFAULT_TASK,
        help="task design: shortcut (step-by-step expert, short-answer base) or place-value (earlier)",
    )
    make.add_argument("--seed", type=int, default=0, help="which problems are drawn (pools do not depend on it)")
    make.add_argument("--n-train", type=int, default=4000, help="post-training problems (all tiers, mixed)")
    make.add_argument(
        "--train-tier-weights",
        type=float,
        nargs=5,
        default=None,
        metavar=("T1", "T2", "T3", "T4", "T5"),
        help="share of each tier in the training set (default 0.05 0.15 0.25 0.30 0.25)",
    )
    make.add_argument("--n-val-per-tier", type=int, default=200, help="validation problems per tier")
    make.add_argument("--n-test-per-tier", type=int, default=500, help="test problems per tier")
    make.add_argument("--n-skill-val", type=int, default=200, help="validation problems per retained skill")
    make.add_argument("--n-skill-test", type=int, default=500, help="test problems per retained skill")
    make.add_argument(
        "--expert-style",
        choices=EXPERT_STYLES,
        default=None,
        help="expert solutions (default: the task's). shortcut: steps. place-value: place-value (off-policy for "
        "its base model: 25%% of tokens below p = 0.1) or native (the base model's own format, 2%%: the "
        "on-policy control of docs/results/compare_native)",
    )
    make.add_argument("--force", action="store_true", help="replace OUTPUT if it holds anything else")
    make.set_defaults(func=lab_command("data make", run_make))
    show = actions.add_parser(
        "show",
        help="print the counts and a few examples of a data directory",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    show.add_argument("--output", "-o", default=DEFAULT_OUTPUT, help="data directory written by `trapo data make`")
    show.add_argument("--examples", type=int, default=2, help="training examples to print")
    show.set_defaults(func=lab_command("data show", run_show))
    parser.set_defaults(func=lambda args: parser.print_help() or 0)


def run_make(args: argparse.Namespace) -> int:
    from trapo_lab.tasks import TRAIN_TIER_WEIGHTS, make_splits

    paths = make_splits(
        args.output,
        seed=args.seed,
        n_train=args.n_train,
        n_val_per_tier=args.n_val_per_tier,
        n_test_per_tier=args.n_test_per_tier,
        train_tier_weights=tuple(args.train_tier_weights or TRAIN_TIER_WEIGHTS),
        n_skill_val=args.n_skill_val,
        n_skill_test=args.n_skill_test,
        expert_style=args.expert_style,
        task=args.task,
        force=args.force,
        progress=True,
    )
    _print_counts(Path(args.output))
    for split, path in paths.items():
        print(f"{split:12s} {path}")
    return 0


def _print_counts(directory: Path) -> None:
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: is {directory} a `trapo data make` directory?")
    manifest = json.loads(manifest_path.read_text())
    for split, counts in manifest["counts"].items():
        detail = ", ".join(f"{source} {n}" for source, n in sorted(counts.items()))
        print(f"{split:12s} {sum(counts.values()):6d}  ({detail})")


def run_show(args: argparse.Namespace) -> int:
    directory = Path(args.output)
    _print_counts(directory)
    train = directory / "train.jsonl"
    with open(train, encoding="utf-8") as f:
        for _, line in zip(range(args.examples), f, strict=False):
            row = json.loads(line)
            print(f"\n[{row['data_source']}] {row['prompt'][-1]['content']}  ->  {row['reward_model']['ground_truth']}")
            for i, solution in enumerate(row["extra_info"]["expert_solutions"]):
                print(f"  expert {i + 1}: {solution!r}")
            print(f"  native  : {row['extra_info']['native_solution']!r}")
    return 0
