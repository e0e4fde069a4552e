"""``trapo base``: pre-train the embedded tiny base model on CPU (cached)."""

from __future__ import annotations

import argparse

from trapo_lab.cli import lab_command
from trapo_lab.tasks.arithmetic import DEFAULT_TASK, TASKS

COMMAND = "base"

DEFAULT_OUTPUT = "artifacts/base"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "base",
        help="pre-train the embedded tiny base model on CPU (4.27M parameters; --task place-value: 1.1M)",
        description=(
            "Build the tokenizer offline and pre-train a tiny Qwen2 from scratch on the embedded task for a "
            "fixed number of steps (never a time bound: every machine builds the same model). --task shortcut "
            "(default): single operations drilled as written steps, chains of 2..5 operations answered "
            "directly except a share written out step by step (--step-share, default 20%, on one line in the "
            "rewrite form), plus retained skills; a 4.27M-parameter student, 3000 steps. --task "
            "place-value: the earlier recipe (every chain written step by step; --expert-share mixes in "
            "place-value solutions). "
            "OUTPUT gets config.json + model.safetensors, the tokenizer files and trapo_base.json (build "
            "config and hash, per-tier pass@1 on validation problems, retained-skill accuracy, share of "
            "expert tokens the model gives probability < 0.1, build time). It loads with "
            "AutoModelForCausalLM / AutoTokenizer.from_pretrained(OUTPUT). A second run with the same "
            "options reuses OUTPUT; a different or partial build there is an error unless --force."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output", "-o", default=DEFAULT_OUTPUT, help="output directory")
    parser.add_argument("--task", choices=TASKS, default=DEFAULT_TASK, help="task design (its recipe)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the recipe's)")
    parser.add_argument(
        "--expert-share",
        type=float,
        default=None,
        help="place-value task: share of expert-style solutions in pre-training (sets how off-policy the expert is)",
    )
    parser.add_argument(
        "--step-share",
        type=float,
        default=None,
        help="shortcut task: share of multi-operation chains written step by step in pre-training",
    )
    parser.add_argument(
        "--step-form",
        choices=("steps", "rewrite"),
        default=None,
        help="shortcut task: form of those written chains (see trapo_lab.tasks.step_lines)",
    )
    parser.add_argument(
        "--step-layout",
        choices=("paragraphs", "line"),
        default=None,
        help="shortcut task: their layout, one step per paragraph (the expert's) or on one line",
    )
    parser.add_argument(
        "--eval-per-tier", type=int, default=None, help="validation problems per tier and skill measured (0 = skip)"
    )
    parser.add_argument(
        "--expert-probe",
        type=int,
        default=None,
        help="post-training problems whose expert-token probabilities are measured (0 = skip)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is faster on a busy machine)")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="pre-train under bf16 autocast (fp32 weights and AdamW state): a different recipe (hash); 1.4-1.5x "
        "faster on CPUs with bf16 units (docs/results/base_build.md)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if OUTPUT holds a (different) build")
    parser.set_defaults(func=lab_command(COMMAND, run))


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from trapo_lab.pretrain import BaseModelConfig, build_base_model, read_base_info

    config = BaseModelConfig.for_task(args.task)
    if args.steps is not None:
        config = replace(config, steps=args.steps)
    if args.expert_share is not None:
        config = replace(config, mix=replace(config.mix, expert_share=args.expert_share))
    for name in ("step_share", "step_form", "step_layout"):
        if getattr(args, name) is not None:
            config = replace(config, mix=replace(config.mix, **{name: getattr(args, name)}))
    if args.eval_per_tier is not None:
        config = replace(config, eval_per_tier=args.eval_per_tier)
    if args.expert_probe is not None:
        config = replace(config, n_expert_probe=args.expert_probe)
    config = replace(config, seed=args.seed, bf16=args.bf16)
    path = build_base_model(args.output, config=config, force=args.force, threads=args.threads)
    info = read_base_info(path) or {}
    print(f"base model: {path} (config {info.get('config_hash')}, {info.get('parameters', 0):,} parameters)")
    run_info = info.get("pretraining", {})
    steps, seconds, loss = run_info.get("steps"), run_info.get("seconds"), run_info.get("final_loss")
    print(f"pre-training: {steps} steps, {seconds} s, final loss {loss}")
    sampled, greedy = info.get("sampled_pass@1", {}), info.get("greedy_pass@1", {})
    for source in sampled:
        print(f"  {source:10s} pass@1 sampled {sampled[source]:6.1%}   greedy {greedy.get(source, float('nan')):6.1%}")
    stats = info.get("expert_token_probability", {})
    if stats:
        print(
            f"expert tokens with base probability < 0.1: {stats.get('share_below_0.1', 0):.1%} "
            f"(< 0.01: {stats.get('share_below_0.01', 0):.1%}) over {stats.get('tokens')} tokens"
        )
    return 0
