"""``trapo eval``: sample k completions per problem from a local model and report avg@k / pass@k."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trapo.cli.threads import add_threads_argument, apply_threads

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
        "--data", required=True, nargs="+", metavar="FILE", help="verl parquet / JSONL files or directories of them"
    )
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
        help="write the full report (settings, metrics, per-problem correctness) here",
    )
    p.add_argument("--prompt-key", default="prompt", help="dotted key of the prompt (chat messages or a string)")
    p.add_argument("--answer-key", default="reward_model.ground_truth", help="dotted key of the ground truth")
    p.add_argument("--group-by", default="data_source", help="Example attribute or extra_info key to group by")
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
    add_threads_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    threads = apply_threads(getattr(args, "threads", None))
    from trapo.data.loaders import load_examples
    from trapo.evaluate import evaluate
    from trapo.rollout.base import SamplingParams

    for name in ("k", "max_tokens", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    sampling = SamplingParams(temperature=args.temperature, top_p=args.top_p)

    examples = []
    for data in args.data:
        loaded = load_examples(data, prompt_key=args.prompt_key, answer_key=args.answer_key, dedupe=True)
        print(f"{data}: {loaded.summary()}", file=sys.stderr)
        by_file: dict[str, list] = {}
        for ex in loaded.examples:  # --limit applies per benchmark (data source) within each argument
            by_file.setdefault(ex.data_source, []).append(ex)
        for group in by_file.values():
            examples.extend(group[: args.limit] if args.limit else group)

    from trapo.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model, args.device, args.dtype)
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
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"wrote {out}", file=sys.stderr)
    return 0
