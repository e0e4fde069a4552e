"""``trapo train``: TRAPO or a baseline on a local model and a data set."""

from __future__ import annotations

import argparse
import json

from trapo.cli.threads import add_threads_argument, apply_threads
from trapo.config import TRAPOConfig, read_yaml
from trapo.methods import METHODS

DESCRIPTION = """\
Post-train a causal LM (a local Hugging Face directory) with TRAPO or one of its baselines.

Every TRAPOConfig field is a flag (--learning_rate or --learning-rate). Values come from, in order of
precedence: flags > --config YAML > the method's preset > defaults.

Methods:
""" + "\n".join(f"  {name:14s} {m.description}" for name, m in METHODS.items()) + """

Data: verl-style parquet or JSONL (prompt chat messages, reward_model.ground_truth, expert solutions in
extra_info.expert_solutions), one or more files or a directory. Rows without an expert solution train
RL-only; rows without an answer or with an empty prompt are skipped and counted (--strict: an error).

Outputs in --output_dir: metrics.jsonl (every step), samples.jsonl (example trajectories),
checkpoint-STEP/ (model, tokenizer, optimizer, scheduler, step), final/ (the trained model).

Several processes / GPUs:  accelerate launch --num_processes 2 [--cpu] -m trapo.cli train ...
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", dataclass_types=[TRAPOConfig], help="Train with TRAPO or a baseline (SFT, GRPO, LUFFY ...).",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file of TRAPOConfig fields (flags override it).")
    parser.add_argument("--model", required=True, help="Local model directory (config, safetensors, tokenizer).")
    parser.add_argument("--data", required=True, nargs="+", help="Training data: parquet/JSONL files or a directory.")
    parser.add_argument("--output", dest="output_dir", help="Same as --output_dir.")
    parser.add_argument("--reward", default=None,
                        help="Reward as module:function or file.py:function, in TRL, verl or "
                             "(completion, ground_truth) form. Default: trapo.rewards.math_reward.")
    parser.add_argument("--resume", nargs="?", const="latest", default=None,
                        help="Resume from the latest checkpoint in output_dir, or from the given checkpoint.")
    parser.add_argument("--prompt-key", default="prompt", help="Field holding the prompt (dotted for nesting).")
    parser.add_argument("--answer-key", default="reward_model.ground_truth", help="Field holding the answer.")
    parser.add_argument("--expert-key", default="extra_info.expert_solutions", help="Field holding expert solutions.")
    add_threads_argument(parser)
    parser.set_defaults(func=run, parser=parser)


def config_from_args(args: argparse.Namespace) -> TRAPOConfig:
    """The config from flags layered over ``--config`` (flags win)."""
    parser = args.parser
    if args.config:
        parser.set_defaults(**read_yaml(args.config))
        args = parser.parse_args(args.argv[1:])
    names = set(TRAPOConfig.__dataclass_fields__)
    return TRAPOConfig(**{k: v for k, v in vars(args).items() if k in names})


def run(args: argparse.Namespace) -> int:
    apply_threads(getattr(args, "threads", None))
    from trapo.data import load_examples
    from trapo.models import load_model_and_tokenizer
    from trapo.rewards import load_reward
    from trapo.trainer import TRAPOTrainer

    config = config_from_args(args)
    model, tokenizer = load_model_and_tokenizer(args.model)
    data = load_examples(args.data, prompt_key=args.prompt_key, answer_key=args.answer_key,
                         expert_key=args.expert_key, strict=config.strict)
    print(f"data: {data.summary()}")
    reward = load_reward(args.reward) if args.reward else None
    trainer = TRAPOTrainer(model, tokenizer, data.examples, config, reward_fn=reward)
    resume = None if args.resume is None else (True if args.resume == "latest" else args.resume)
    result = trainer.train(resume_from_checkpoint=resume)
    if trainer.is_main:
        keys = ("reward/mean", "reward/unguided", "loss/total", "entropy", "perf/step_s")
        print(json.dumps({"final_model": str(result.final_model_dir), "steps": result.steps,
                          **{k: round(result.last_metrics[k], 4) for k in keys if k in result.last_metrics}}))
    return 0
