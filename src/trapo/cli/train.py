"""``trapo train``: TRAPO or a baseline on a local model and a data set."""

from __future__ import annotations

import argparse
import json
import re
import typing

from trapo.cli.threads import add_threads_argument, apply_threads
from trapo.config import TRAPOConfig, config_fields, read_yaml
from trapo.config_trl import LORA_KEYWORDS, LORA_TYPES
from trapo.methods import METHODS

DESCRIPTION = (
    """\
Post-train a causal LM (a local Hugging Face directory) with TRAPO or one of its baselines.

Every TRAPOConfig field is a flag; every flag takes both spellings (--learning_rate or --learning-rate),
bool flags work bare (--bf16), negative numbers need no '=' (--entropy_coef -0.001). Values come from, in order
of precedence: flags > --config YAML > the method's preset > defaults ("None" below: the method's preset,
or unset). TRL's GRPOConfig names work with TRL's meaning (loss_type, scale_rewards, num_generations,
per_device_train_batch_size, gradient_accumulation_steps, beta, epsilon, reward_weights).

Methods:
"""
    + "\n".join(f"  {name:14s} {m.description}" for name, m in METHODS.items())
    + """

Data: verl-style parquet or JSONL (prompt chat messages, reward_model.ground_truth, expert solutions in
extra_info.expert_solutions), one or more files, a directory, or a datasets.save_to_disk directory. The
TRAPO authors' data works as it is (expert solutions in extra_info.answer_list; add --expert_think extract
--prompt_template trapo to train as their code does). Rows without an expert solution train RL-only and are
counted; a method that trains on expert solutions stops before any work when no row has one. Rows without an
answer or with an empty prompt are skipped and counted (--strict: an error).

Outputs in --output_dir: metrics.jsonl (every step), samples.jsonl (example trajectories),
checkpoint-STEP/ (model, tokenizer, optimizer, scheduler, step), final/ (the trained model).

An output directory belongs to one run: a new run refuses a directory holding another one unless --resume
(same config apart from max_steps, logging, saving and reward limits) or --overwrite_output_dir; a lock file
stops a second process. Checkpoints: every --save_steps steps and every --save_minutes minutes (default 10).

Exit codes: 0 done; 2 a user error or a disk error (nothing trained or lost); 3 the run stopped itself
(failing rewards, NaN/inf or rolled-back updates; a checkpoint is saved); 130 Ctrl-C (the last finished step
is saved); 143 / 138 / 129 SIGTERM / SIGUSR1 / SIGHUP (a checkpoint is saved at the next step boundary):
rerun with --resume, or --resume auto (which starts fresh, setting the earlier files aside in
previous-TIME/, when the directory has no usable checkpoint).

Several processes / GPUs:  accelerate launch --num_processes 2 [--cpu] -m trapo.cli train ...
Sharded parameters (FSDP2): torchrun --nproc_per_node 8 -m trapo.cli train --fsdp full_shard ...
  (CPU: ACCELERATE_USE_CPU=true torchrun ...; each process holds 1/N of the weights, gradients, AdamW state)
"""
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        dataclass_types=[TRAPOConfig],
        help="Train with TRAPO or a baseline (SFT, GRPO, LUFFY ...).",
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
    )
    for action in parser._actions:
        if action.dest == "scale_rewards":  # a former bool: bare --scale_rewards still means "group"
            action.nargs, action.const = "?", "group"
    parser.add_argument("--config", help="YAML file of TRAPOConfig fields (flags override it).")
    parser.add_argument(
        "--model",
        required=True,
        help="Local model directory (config, safetensors, tokenizer). A Hub id must be downloaded "
        "first (hf download ORG/NAME --local-dir DIR).",
    )
    parser.add_argument("--data", required=True, nargs="+", help="Training data: parquet/JSONL files or a directory.")
    parser.add_argument("--output", dest="output_dir", help="Same as --output_dir.")
    parser.add_argument(
        "--reward",
        default=None,
        nargs="+",
        help="Reward(s) as module:function, file.py:function or math, in TRL, verl or "
        "(completion, ground_truth) form; several are summed with --reward_weights and each "
        "logged as rewards/NAME. Default: trapo.rewards.math_reward.",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        help="Resume from the latest checkpoint in output_dir (falling back to the one before "
        "when it is corrupt or holds NaN/inf weights), or from the given checkpoint; the config, the "
        "data rows, the rewards and the expert key must be the run's. 'auto': resume when output_dir "
        "has a usable checkpoint, else move its earlier files to previous-TIME/ and start fresh.",
    )
    parser.add_argument("--prompt-key", default="prompt", help="Field holding the prompt (dotted for nesting).")
    parser.add_argument("--answer-key", default="reward_model.ground_truth", help="Field holding the answer.")
    parser.add_argument("--lora_r", "--lora-r", type=int, default=None, help="LoRA rank (0: train all weights).")
    parser.add_argument("--lora_alpha", "--lora-alpha", type=int, default=None, help="LoRA alpha (16).")
    parser.add_argument(
        "--lora_target_modules",
        "--lora-target-modules",
        nargs="+",
        default=None,
        help="LoRA target modules: all-linear (the default) or module names.",
    )
    add_threads_argument(parser)
    parser.set_defaults(func=run, parser=parser)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, and every flag's default in its help."""


def _typed_flag(argv: list[str], field: str) -> str | None:
    """The spelling of ``field``'s flag the user typed (``--max-steps``), or None when it came from YAML."""
    for token in argv:
        flag = token.split("=", 1)[0]
        if flag.startswith("--") and flag[2:].replace("-", "_") == field:
            return flag
    return None


def _name_flags(message: str, argv: list[str], yaml: tuple[str, dict] | None = None) -> str:
    """``message`` with the config fields it names written as the flags the user typed; a field that came
    from the ``--config`` file (``yaml``: its path and values) is named with the file."""
    names = sorted([*config_fields(), *LORA_KEYWORDS], key=len, reverse=True)  # lora_r ... are flags too
    for name in names:
        flag = _typed_flag(argv, name)
        mentioned = re.search(rf"(?<![\w-]){name}(?!\w)", message)
        if mentioned and not flag and yaml and name in yaml[1]:
            return f"{yaml[0]}: field {name!r}: {message}"
        if flag and mentioned:
            if "_" not in name:  # a plain word ("method") may be prose, not the field: name the flag in front only
                return f"argument {flag}: {message}"
            return f"argument {flag}: " + re.sub(rf"(?<![\w-]){name}(?!\w)", flag, message)
    return message


def _check_yaml_strings(path: str, values: dict) -> None:
    """A YAML string where a number or a bool belongs is converted as a flag would be (PyYAML reads ``1e-3``
    as a string); one that does not convert is an error naming the file and the field, not argparse's."""
    from transformers.hf_argparser import string_to_bool

    hints = {**typing.get_type_hints(TRAPOConfig), **LORA_TYPES}
    for name, value in values.items():
        if name not in hints:
            continue  # an unknown key: the config names it
        kinds = {int, float, bool} & ({hints[name]} | set(typing.get_args(hints[name])))
        if not isinstance(value, str) or not kinds or name == "scale_rewards":
            continue
        kind = bool if bool in kinds else float if float in kinds else int
        try:
            string_to_bool(value) if kind is bool else kind(value)
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            what = {bool: "true or false", float: "a number", int: "an integer"}[kind]
            raise ValueError(f"{path}: field {name!r}: {name} must be {what}, got {value!r}") from None


def config_from_args(args: argparse.Namespace) -> TRAPOConfig:
    """The config from flags layered over ``--config`` (flags win); errors name the flag the user typed."""
    parser = args.parser
    yaml = None
    if args.config:
        yaml = (args.config, read_yaml(args.config))
        _check_yaml_strings(*yaml)
        parser.set_defaults(**yaml[1])
        args = parser.parse_args(args.argv[1:])
    names = set(TRAPOConfig.__dataclass_fields__) | set(LORA_KEYWORDS)
    try:
        config = TRAPOConfig(
            **{k: v for k, v in vars(args).items() if k in names and not (k in LORA_KEYWORDS and v is None)}
        )
    except ValueError as err:
        raise ValueError(_name_flags(str(err), getattr(args, "argv", []), yaml)) from None
    if config.engine == "vllm":  # before any work
        from trapo.rollout.vllm import import_vllm

        import_vllm()
    return config


def _warn_unverifiable(unverifiable: dict[int, str], data, strict: bool) -> None:
    """Rows whose ground truth the math reward cannot verify: a warning, or with --strict an error."""
    if not unverifiable:
        return
    where = [f"{data.where(row)} ({why})" for row, why in list(unverifiable.items())[:5]]
    message = (
        f"{len(unverifiable)} row(s) have a ground truth the math reward cannot verify: "
        f"{'; '.join(where)}{'; ...' if len(unverifiable) > 5 else ''}"
    )
    if strict:
        raise ValueError(message)
    print(f"warning: {message}")


def _isolated(reward):
    """A --reward runs in a worker process, so that its time bound holds for any code (the built-in math
    reward bounds each check itself)."""
    import dataclasses

    return reward if reward.checks_math else dataclasses.replace(reward, process=True)


def run(args: argparse.Namespace) -> int:
    import sys

    apply_threads(getattr(args, "threads", None))
    from trapo.data import load_examples
    from trapo.data.loaders import DEFAULT_EXPERT_KEY
    from trapo.models import load_model_and_tokenizer
    from trapo.rewards import load_reward
    from trapo.trainer import TRAPOTrainer
    from trapo.trainer.safety import EXIT_STOPPED, Preempted, TrainingStopped

    config = config_from_args(args)  # TRAPOConfig checks the method; a missing vllm extra is said here
    data = load_examples(
        args.data,
        prompt_key=args.prompt_key,
        answer_key=args.answer_key,
        expert_key=config.expert_key or DEFAULT_EXPERT_KEY,
        strict=config.strict,
        split="train",
    )
    print(f"data: {data.summary()}")
    problem = data.expert_problem()
    if problem and config.uses_expert:  # before the model is loaded
        raise ValueError(
            f"--method {config.method} trains on expert solutions, but {problem}. --method grpo trains RL only."
        )
    rewards = [_isolated(load_reward(spec)) for spec in args.reward or ("math",)]
    model, tokenizer = load_model_and_tokenizer(args.model)
    trainer = TRAPOTrainer(model, rewards, config, data, processing_class=tokenizer)
    _warn_unverifiable(trainer.data_report.unverifiable, data, config.strict)
    resume = None if args.resume is None else (True if args.resume == "latest" else args.resume)
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except Preempted as err:
        print(f"trapo train: {err}", file=sys.stderr)
        return err.exit_code
    except TrainingStopped as err:
        print(f"trapo train: stopped: {err}", file=sys.stderr)
        return EXIT_STOPPED
    if trainer.is_main:
        keys = ("reward/mean", "reward/unguided", "loss/total", "entropy", "perf/step_s")
        print(
            json.dumps(
                {
                    "final_model": str(result.final_model_dir),
                    "steps": result.steps,
                    **{k: round(result.last_metrics[k], 4) for k in keys if k in result.last_metrics},
                }
            )
        )
    return 0
