"""``trapo eval``: sample k completions per problem from a local model and report avg@k / pass@k."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from trapo.atomic import write_text_atomic
from trapo.cli.threads import add_threads_argument, apply_threads
from trapo.locking import FileLock

DESCRIPTION = """\
Evaluate a local causal LM on math benchmarks: sample k completions per problem, check each final answer
(the last \\boxed{...}) against the ground truth with math-verify, and print a table per benchmark
(the data_source column) and overall.

avg@k is the mean accuracy over all k samples (the expected accuracy of a single sample; the paper reports
AIME and AMC as avg@32). pass@k is the chance that at least one of k samples is right (unbiased estimator
from the k samples). The verl benchmark files store each AIME/AMC problem 32 times so that k=1 runs average
over 32 samples; `trapo eval` merges repeated rows first, so use --k 32 to get avg@32 on them
(valid.math / minerva / olympiad_bench have one row per problem).

Ground truths math-verify cannot parse are reported in the 'unverifiable' column and left out of the
accuracies. Sampling is reproducible: the same --seed and --batch-size give the same completions.
"""

EPILOG = """\
examples:
  trapo eval --model runs/trapo/final --data benchmarks/valid.math.parquet --k 4 --max-tokens 1024
  trapo eval --model runs/trapo/final --data benchmarks/ --k 32 --limit 20 --output eval.json
"""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, keep the description's paragraphs."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model: avg@k and pass@k on math benchmarks",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="local model directory (save_pretrained format)")
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        metavar="FILE",
        help="verl parquet / JSONL files or directories of them; a directory whose file names name splits "
        "(trapo data make: train, val, test ...) gives its test files only (--split to choose another)",
    )
    p.add_argument("--split", default="test", help="the split read from a directory whose file names name splits")
    p.add_argument("--k", type=int, default=1, help="samples per problem (avg@k, pass@k up to k)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold")
    p.add_argument("--max-tokens", type=int, default=512, help="completion budget in tokens")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="problem×sample rows per generation batch; None: as many as keep the KV cache within "
        "2 GiB on CPU or half the free GPU memory, 8 to 256",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    _add_data_and_output_arguments(p)
    add_threads_argument(p)
    p.set_defaults(func=run)


def _add_data_and_output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="evaluate only the first N problems of each benchmark (data source), after merging repeats",
    )
    p.add_argument(
        "--output",
        default=None,
        metavar="JSON",
        help="write the full report (settings, metrics, per-problem correctness) here; checked (and locked "
        "against a second eval) before anything is generated; an existing file is kept unless --overwrite",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--prompt-key", default="prompt", help="dotted key of the prompt (chat messages or a string)")
    p.add_argument("--answer-key", default="reward_model.ground_truth", help="dotted key of the ground truth")
    p.add_argument(
        "--group-by",
        default="data_source",
        help="what the table groups problems by: data_source, answer, or an extra_info key some row has",
    )
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1...")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="model weights dtype (auto: as saved)",
    )
    p.add_argument("--keep-completions", action="store_true", help="store the completion texts in --output")
    p.add_argument(
        "--prompt-template",
        default="chat",
        help="how prompts become text, as in training: chat (the tokenizer's template), none, trapo (the "
        "authors' prompt) or a file with {problem}",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


GROUP_ATTRIBUTES = ("data_source", "answer")


def _check_numbers(args: argparse.Namespace) -> None:
    """Every number flag in its domain, named as the user would type it."""
    for name in ("k", "max_tokens", "batch_size", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not 0 <= args.temperature < math.inf:
        raise ValueError(f"--temperature must be a finite number >= 0 (0: greedy), got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")


def check_device(device: str) -> str:
    """``device`` as torch reads it, or a ``ValueError`` saying why it cannot be used here."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, auto): {err}") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {device}: no CUDA GPU is available here; use --device cpu (or auto)")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"--device {device}: only {count} CUDA GPU(s) here (cuda:0 to cuda:{count - 1})")
    elif parsed.type not in ("cpu", "mps") or (parsed.type == "mps" and not torch.backends.mps.is_available()):
        raise ValueError(f"--device {device}: not available here; use --device cpu (or auto)")
    return device


def _claim_output(args: argparse.Namespace) -> FileLock | None:
    """Before any work: ``--output`` must be a writable file path that no other eval is writing, and not
    an existing file unless ``--overwrite``. Returns the lock held on it until the report is written."""
    if not args.output:
        return None
    out = Path(args.output)
    if out.is_dir():
        raise ValueError(f"--output {out} is a directory; name a file (e.g. {out / 'eval.json'})")
    if out.exists() and not args.overwrite:
        raise FileExistsError(
            f"--output {out} already exists (another evaluation's result?); pass --overwrite to replace it "
            "or choose another file"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(out.parent / f".{out.name}.lock", f"--output {out}").acquire()
    except (FileExistsError, NotADirectoryError) as err:
        if "in use by another trapo process" in str(err):
            raise
        raise NotADirectoryError(f"--output {out}: cannot create its folder ({err.filename} is a file)") from None
    except PermissionError as err:
        raise PermissionError(f"--output {out}: cannot write there ({err.strerror}: {err.filename})") from None
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        lock.release()
        raise PermissionError(f"--output {out}: not writable")
    return lock


def _load_problems(args: argparse.Namespace) -> list:
    from trapo.data.loaders import load_examples

    examples = []
    for data in args.data:
        loaded = load_examples(
            data, prompt_key=args.prompt_key, answer_key=args.answer_key, dedupe=True, split=args.split
        )
        print(f"{data}: {loaded.summary()}", file=sys.stderr)
        by_file: dict[str, list] = {}
        for ex in loaded.examples:  # --limit applies per benchmark (data source) within each argument
            by_file.setdefault(ex.data_source, []).append(ex)
        for group in by_file.values():
            examples.extend(group[: args.limit] if args.limit else group)
    return examples


def check_group_by(examples: list, group_by: str) -> None:
    """``--group-by`` must name something the problems have: an attribute, or an extra_info key of some row."""
    if group_by in GROUP_ATTRIBUTES:
        return
    keys = sorted({k for ex in examples for k in ex.meta})
    if not any(group_by in ex.meta for ex in examples):
        raise ValueError(
            f"--group-by {group_by!r}: no problem has it; choose one of {', '.join(GROUP_ATTRIBUTES)} or an "
            f"extra_info key the rows have: {', '.join(keys) or '(none)'}"
        )


def run(args: argparse.Namespace) -> int:
    threads = apply_threads(getattr(args, "threads", None))
    _check_numbers(args)
    device = check_device(args.device)
    lock = _claim_output(args)
    try:
        return _evaluate(args, device, threads)
    finally:
        if lock is not None:
            lock.release()


def _evaluate(args: argparse.Namespace, device: str, threads: int) -> int:
    from trapo.evaluate import evaluate
    from trapo.models import load_model_and_tokenizer
    from trapo.rollout.base import SamplingParams

    sampling = SamplingParams(temperature=args.temperature, top_p=args.top_p)
    examples = _load_problems(args)
    check_group_by(examples, args.group_by)
    model, tokenizer = load_model_and_tokenizer(args.model, device, args.dtype)
    print(f"torch threads: {threads}", file=sys.stderr)
    report = evaluate(
        model,
        tokenizer,
        examples,
        k=args.k,
        sampling=sampling,
        max_new_tokens=args.max_tokens,
        seed=args.seed,
        batch_size=args.batch_size,
        group_by=args.group_by,
        progress=not args.no_progress,
        keep_completions=args.keep_completions,
        prompt_template=args.prompt_template,
    )
    print(report.table())
    if args.output:
        result = report.to_dict()
        result["settings"].update(model=str(args.model), data=[str(d) for d in args.data])
        write_text_atomic(args.output, json.dumps(result, indent=2))
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
