"""Cost of a TRAPO step relative to a GRPO step with the same number of trajectories (target: <= 1.3x).

Side by side in one run, interleaved round by round so that machine noise hits every variant alike:
each round trains every variant for ``--steps`` optimizer steps from the same base model on the same prompts,
and the figure reported is the median over rounds of (median TRAPO step time / median GRPO step time).

    python benchmarks/step_cost.py --base artifacts/base --data artifacts/data --rounds 3 --steps 6

Writes docs/results/step_cost.json and docs/results/step_cost.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trapo.config import TRAPOConfig
from trapo.data import load_examples
from trapo.trainer import TRAPOTrainer, read_metrics

VARIANTS = {
    "grpo": dict(method="grpo"),
    "trapo (speculative rollouts)": dict(method="trapo", rollout_mode="speculative"),
    "trapo (sequential rollouts)": dict(method="trapo", rollout_mode="sequential"),
    "sft": dict(method="sft"),
}


def run_variant(base: Path, examples, overrides: dict, steps: int, seed: int) -> dict[str, float]:
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    with tempfile.TemporaryDirectory() as out:
        cfg = TRAPOConfig(
            output_dir=out,
            max_steps=steps,
            prompts_per_step=8,
            learning_rate=1e-5,
            seed=seed,
            max_completion_length=128,
            sample_log_steps=0,
            **overrides,
        )
        trainer = TRAPOTrainer(model, processing_class=tokenizer, train_dataset=examples, args=cfg)
        trainer.train()
        rows = read_metrics(out)
    return {
        "step_s": statistics.median(r["perf/step_s"] for r in rows),
        "generation_s": statistics.median(r.get("perf/generation_s", 0.0) for r in rows),
        "generated_tokens": statistics.median(r.get("perf/generated_tokens", 0.0) for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="artifacts/base", help="Base model directory (trapo base).")
    parser.add_argument("--data", default="artifacts/data/train.parquet", help="Training data (trapo data make).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    examples = load_examples([args.data]).examples
    per_round: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    started = time.time()
    for r in range(args.rounds):
        for name, overrides in VARIANTS.items():
            per_round[name].append(run_variant(Path(args.base), examples, overrides, args.steps, seed=r))
            print(f"round {r} {name}: {per_round[name][-1]}", flush=True)
    ratios = {
        name: statistics.median(x["step_s"] / g["step_s"] for x, g in zip(rounds, per_round["grpo"], strict=True))
        for name, rounds in per_round.items()
    }
    result = {
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "threads": args.threads,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        "wall_s": round(time.time() - started, 1),
        **{
            f"median_{key}": {n: statistics.median(x[key] for x in v) for n, v in per_round.items()}
            for key in ("step_s", "generation_s", "generated_tokens")
        },
        "step_time_ratio_to_grpo": ratios,
        "per_round": per_round,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_cost.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Step cost: TRAPO vs GRPO (same 8 trajectories per prompt, 8 prompts per step)",
        "",
        f"`python benchmarks/step_cost.py --rounds {args.rounds} --steps {args.steps}` on {result['machine']}; "
        f"{result['wall_s']} s in all. Ratios are medians over interleaved rounds.",
        "",
        "| variant | median step (s) | generation (s) | generated tokens / step | step time / GRPO |",
        "|---|---|---|---|---|",
    ]
    for n in VARIANTS:
        lines.append(
            f"| {n} | {result['median_step_s'][n]:.3f} | {result['median_generation_s'][n]:.3f} | "
            f"{result['median_generated_tokens'][n]:.0f} | {ratios[n]:.2f}x |"
        )
    (out / "step_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
