"""What the levers on the base model's build buy: threads and bf16 autocast, timed side by side.

The fresh demo's cost is mostly the base build (3000 pre-training steps of the 4.27M student). This times
``--steps`` pre-training steps of the default recipe for each variant, interleaved round by round in one
process so that machine noise hits every variant alike, from the same initial weights and batches:

    python benchmarks/base_build.py --steps 60 --rounds 3

Variants: 1 or 2 threads x fp32 or bf16 autocast (weights and AdamW state fp32). A variant's figure in a
round is its steps per second over the steps after the first 5; ratios are medians over rounds of the
per-round ratio against 1 thread fp32. Also the mean loss of the last 10 steps (bf16's effect on the
numbers, not only the time). Writes docs/results/base_build.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from trapo_lab.models import build_tokenizer
from trapo_lab.pretrain import (
    BaseModelConfig,
    length_bucketed_batches,
    new_student,
    pretraining_step,
    pretraining_stream,
)

VARIANTS = {
    "1 thread, fp32": (1, False),
    "2 threads, fp32": (2, False),
    "1 thread, bf16": (1, True),
    "2 threads, bf16": (2, True),
}
WARMUP = 5


def time_variant(config: BaseModelConfig, tokenizer, threads: int, bf16: bool) -> dict[str, float]:
    """Steps per second of the recipe's pre-training loop (AdamW, clipping, the recipe's batches)."""
    torch.set_num_threads(threads)
    model = new_student(config, tokenizer).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas)
    batches = length_bucketed_batches(
        tokenizer, pretraining_stream(config.seed, config.mix), config.batch_size, config.bucket_batches, config.seed
    )
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    losses, start = [], 0.0
    for step in range(config.steps):
        if step == WARMUP:
            start = time.perf_counter()
        ids, labels = next(batches)
        losses.append(pretraining_step(model, optimizer, ids, labels, config.grad_clip, autocast))
    return {
        "steps_per_s": (config.steps - WARMUP) / (time.perf_counter() - start),
        "last10_loss": statistics.mean(losses[-10:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--out", default="docs/results")
    args = parser.parse_args()
    config = replace(BaseModelConfig(), steps=args.steps)
    tokenizer = build_tokenizer()
    load = {"start": [round(x, 1) for x in os.getloadavg()]}
    per_round: dict[str, list[dict]] = {n: [] for n in args.variants}
    for r in range(args.rounds):
        for name in args.variants:
            per_round[name].append(time_variant(config, tokenizer, *VARIANTS[name]))
            print(f"round {r} {name}: {per_round[name][-1]}", flush=True)
    load["end"] = [round(x, 1) for x in os.getloadavg()]
    ref = args.variants[0]
    result = {
        "command": f"python benchmarks/base_build.py --steps {args.steps} --rounds {args.rounds}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "load_average": load,
        "reference": ref,
        "speedup": {
            n: statistics.median(x["steps_per_s"] / y["steps_per_s"] for x, y in zip(v, per_round[ref], strict=True))
            for n, v in per_round.items()
        },
        "median_steps_per_s": {n: statistics.median(x["steps_per_s"] for x in v) for n, v in per_round.items()},
        "per_round": per_round,
    }
    lines = [
        "# Base build levers: threads and bf16 (pre-training steps of the 4.27M student, default recipe)",
        "",
        f"`{result['command']}` on {result['machine']}; load average (1, 5, 15 min) {load}. Interleaved rounds "
        f"in one process; steps/s over steps {WARMUP + 1}..{args.steps}; speed-up = median over rounds of the "
        f"per-round ratio to {ref}.",
        "",
        "| variant | median steps/s | speed-up | last-10-step loss per round |",
        "|---|---|---|---|",
    ]
    for n, v in per_round.items():
        losses = ", ".join(f"{x['last10_loss']:.3f}" for x in v)
        lines.append(f"| {n} | {result['median_steps_per_s'][n]:.2f} | {result['speedup'][n]:.2f}x | {losses} |")
    out = Path(args.out)
    (out / "base_build.json").write_text(json.dumps(result, indent=2))
    (out / "base_build.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
