"""``trapo base``: pre-train the embedded tiny base model on CPU (cached)."""

from __future__ import annotations

import argparse

from trapo_lab.cli import lab_command

COMMAND = "base"

DEFAULT_OUTPUT = "artifacts/base"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "base",
        help="pre-train the embedded ~1M-parameter base model on CPU",
        description=(
            "Build the tokenizer offline and pre-train a ~1M-parameter Qwen2 from scratch on the embedded "
            "task (chain arithmetic skewed to easy tiers in the native solution style, plus retained skills; "
            "--expert-share mixes in expert-style solutions, 0 by default). "
            "OUTPUT gets config.json + model.safetensors, the tokenizer files and trapo_base.json (build "
            "config and hash, per-tier pass@1 on validation problems, retained-skill accuracy, share of "
            "expert tokens the model gives probability < 0.1, build time). It loads with "
            "AutoModelForCausalLM / AutoTokenizer.from_pretrained(OUTPUT). A second run with the same "
            "options reuses OUTPUT; a different or partial build there is an error unless --force."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output", "-o", default=DEFAULT_OUTPUT, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the recipe's)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="also stop after this many seconds of training, the cosine schedule following whichever bound "
        "is nearer (0 = no time bound: deterministic; default: the recipe's)",
    )
    parser.add_argument(
        "--expert-share",
        type=float,
        default=None,
        help="share of expert-style solutions in pre-training (sets how off-policy the expert is)",
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
    parser.add_argument("--force", action="store_true", help="rebuild even if OUTPUT holds a (different) build")
    parser.set_defaults(func=lab_command(COMMAND, run))


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from trapo_lab.pretrain import BaseModelConfig, build_base_model, read_base_info

    config = BaseModelConfig()
    if args.steps is not None:
        config = replace(config, steps=args.steps)
    if args.max_seconds is not None:
        config = replace(config, max_seconds=args.max_seconds or None)
    if args.expert_share is not None:
        config = replace(config, mix=replace(config.mix, expert_share=args.expert_share))
    if args.eval_per_tier is not None:
        config = replace(config, eval_per_tier=args.eval_per_tier)
    if args.expert_probe is not None:
        config = replace(config, n_expert_probe=args.expert_probe)
    config = replace(config, seed=args.seed)
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
        print(f"expert tokens with base probability < 0.1: {stats.get('share_below_0.1', 0):.1%} "
              f"(< 0.01: {stats.get('share_below_0.01', 0):.1%}) over {stats.get('tokens')} tokens")
    return 0
