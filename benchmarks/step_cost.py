"""Cost of a TRAPO step relative to a GRPO step, by rollout mode and precision, at the miniature's settings.

Side by side in one process, interleaved round by round so that machine noise hits every variant alike: each
round trains every variant for ``--steps`` optimizer steps from the same base model on the same prompts (8
prompts x 8 trajectories, <= 128 tokens, lr 1e-4, the comparison's defaults otherwise). A variant's figure in
a round is the median step time over its steps after the first; ratios are medians over rounds of the
per-round ratio.

    python benchmarks/step_cost.py --base artifacts/base --data artifacts/data/train.parquet --rounds 3 --steps 5

Without ``--base`` the model is the shortcut task's 4.27M-parameter student with random weights (the step cost
depends on the shape and on the lengths generated, which the report states). Writes docs/results/step_cost.json
and docs/results/step_cost.md.
"""

from __future__ import annotations

import argparse
import json
import os
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

# Names as the lab's equal-time view looks them up (trapo_lab.compare.readings.benchmark_ratio): the method, or
# "<method> (<rollout_mode> rollouts)".
VARIANTS = {
    "grpo": dict(method="grpo", rollout_mode="sequential"),
    "grpo (pipelined rollouts)": dict(method="grpo", rollout_mode="pipelined"),
    "trapo (sequential rollouts)": dict(method="trapo", rollout_mode="sequential"),
    "trapo (speculative rollouts)": dict(method="trapo", rollout_mode="speculative"),
    "trapo (pipelined rollouts)": dict(method="trapo", rollout_mode="pipelined"),
    "grpo (sequential rollouts, bf16)": dict(method="grpo", rollout_mode="sequential", bf16=True),
    "trapo (sequential rollouts, bf16)": dict(method="trapo", rollout_mode="sequential", bf16=True),
    "trapo (pipelined rollouts, bf16)": dict(method="trapo", rollout_mode="pipelined", bf16=True),
    "sft": dict(method="sft"),
    # the comparison's other methods, at its defaults, for its equal-time view (trapo compare reads
    # step_time_ratio_to_grpo; sft-then-grpo is derived: half its steps are sft's, half grpo's)
    "luffy": dict(method="luffy"),
    "trapo-sft": dict(method="trapo-sft"),
    "trapo-fixed": dict(method="trapo-fixed"),
}
KEYS = ("step_s", "generation_s", "generated_tokens", "completion_length")


def load_model(base: str | None, tokenizer):
    if base:
        return AutoModelForCausalLM.from_pretrained(base)
    from trapo_lab.pretrain import BaseModelConfig, new_student

    return new_student(BaseModelConfig(), tokenizer)  # the shortcut recipe's student, random weights


def run_variant(args, tokenizer, examples, overrides: dict, seed: int) -> dict[str, float]:
    model = load_model(args.base, tokenizer)
    with tempfile.TemporaryDirectory() as out:
        cfg = TRAPOConfig(
            output_dir=out,
            max_steps=args.steps,
            prompts_per_step=8,
            learning_rate=1e-4,
            seed=seed,
            max_completion_length=128,
            sample_log_steps=0,
            save_minutes=0,
            **overrides,
        )
        TRAPOTrainer(model, processing_class=tokenizer, train_dataset=examples, args=cfg).train()
        rows = read_metrics(out)[1:]  # the first step warms up (allocations, caches)
    return {
        "step_s": statistics.median(r["perf/step_s"] for r in rows),
        "generation_s": statistics.median(r.get("perf/generation_s", 0.0) for r in rows),
        "generated_tokens": statistics.median(r.get("perf/generated_tokens", 0.0) for r in rows),
        "completion_length": statistics.mean(r.get("length/completion", 0.0) for r in rows),
    }


def ratio(per_round: dict, a: str, b: str) -> float | None:
    """Median over rounds of ``a``'s step time over ``b``'s (None where ``--variants`` left either out)."""
    if a not in per_round or b not in per_round:
        return None
    return statistics.median(x["step_s"] / y["step_s"] for x, y in zip(per_round[a], per_round[b], strict=True))


def ratios_to_grpo(per_round: dict) -> dict[str, float | None]:
    """Each variant's step cost over grpo's; sft-then-grpo's (the first half of its steps sft, then grpo) is
    the mean of sft's ratio and 1."""
    if "grpo" not in per_round:
        return {}
    out = {n: ratio(per_round, n, "grpo") for n in per_round}
    if out.get("sft") is not None:
        out["sft-then-grpo"] = (out["sft"] + 1.0) / 2
    return out


def summarize(per_round: dict, args, wall_s: float) -> dict:
    medians = {key: {n: statistics.median(x[key] for x in v) for n, v in per_round.items()} for key in KEYS}
    return {
        "command": "python benchmarks/step_cost.py " + " ".join(args.argv),
        "model": args.base or "shortcut student (4.27M parameters), random weights",
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}",
        "load_average": args.load,
        "wall_s": round(wall_s, 1),
        "trapo_over_grpo": ratio(per_round, "trapo (pipelined rollouts)", "grpo"),
        "trapo_over_grpo_sequential": ratio(per_round, "trapo (sequential rollouts)", "grpo"),
        "pipelined_over_sequential": ratio(per_round, "trapo (pipelined rollouts)", "trapo (sequential rollouts)"),
        "speculative_over_sequential": ratio(per_round, "trapo (speculative rollouts)", "trapo (sequential rollouts)"),
        "grpo_pipelined_over_sequential": ratio(per_round, "grpo (pipelined rollouts)", "grpo"),
        "bf16_over_fp32": {
            "trapo (sequential rollouts)": ratio(
                per_round, "trapo (sequential rollouts, bf16)", "trapo (sequential rollouts)"
            ),
            "trapo (pipelined rollouts)": ratio(
                per_round, "trapo (pipelined rollouts, bf16)", "trapo (pipelined rollouts)"
            ),
            "grpo": ratio(per_round, "grpo (sequential rollouts, bf16)", "grpo"),
        },
        "step_time_ratio_to_grpo": ratios_to_grpo(per_round),
        **{f"median_{key}": value for key, value in medians.items()},
        "per_round": per_round,
    }


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def markdown(result: dict) -> str:
    lines = [
        "# Step cost: TRAPO vs GRPO by rollout mode and precision (8 prompts x 8 trajectories, <= 128 tokens)",
        "",
        f"`{result['command']}` on {result['machine']}; {result['wall_s']} s in all. Model: {result['model']}. "
        f"{result['rounds']} interleaved rounds of {result['steps_per_round']} steps per variant in one process "
        "(lr 1e-4, the comparison's defaults otherwise); per round the median step after the first; ratios are "
        "medians over rounds of per-round ratios.",
        "",
        "| variant | median step (s) | generation (s) | generated tokens / step | mean completion (tokens) | "
        "step / grpo |",
        "|---|---|---|---|---|---|",
    ]
    to_grpo = result["step_time_ratio_to_grpo"]
    for n in result["median_step_s"]:
        lines.append(
            f"| {n} | {result['median_step_s'][n]:.3f} | {result['median_generation_s'][n]:.3f} | "
            f"{result['median_generated_tokens'][n]:.0f} | {result['median_completion_length'][n]:.1f} | "
            f"{_x(to_grpo.get(n))} |"
        )
    bf16 = result["bf16_over_fp32"]
    lines += [
        "",
        f"- trapo (pipelined) / grpo: **{_x(result['trapo_over_grpo'])}** (target <= 1.10); trapo (sequential) / "
        f"grpo: {_x(result['trapo_over_grpo_sequential'])}",
        f"- trapo pipelined / sequential: **{_x(result['pipelined_over_sequential'])}** (target < 1); "
        f"speculative / sequential: {_x(result['speculative_over_sequential'])}; grpo pipelined / sequential: "
        f"{_x(result['grpo_pipelined_over_sequential'])}",
        "- bf16 / fp32: " + ", ".join(f"{n} {_x(v)}" for n, v in bf16.items()),
        f"- sft-then-grpo / grpo (derived: half its steps sft, half grpo): {_x(to_grpo.get('sft-then-grpo'))}",
        f"- load average (1, 5, 15 min) at the start and the end: {result['load_average']}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=None, help="Base model directory (trapo base); default: random weights.")
    parser.add_argument("--data", default="artifacts/data/train.parquet", help="Training data (trapo data make).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per run (the first is dropped)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="docs/results")
    import sys

    args = parser.parse_args()
    args.argv = sys.argv[1:]
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.base) if args.base else _lab_tokenizer()
    examples = load_examples([args.data]).examples
    per_round: dict[str, list[dict]] = {name: [] for name in args.variants}
    started = time.time()
    args.load = {"start": [round(x, 1) for x in os.getloadavg()]}
    for r in range(args.rounds):
        for name in args.variants:
            per_round[name].append(run_variant(args, tokenizer, examples, VARIANTS[name], seed=r))
            print(f"round {r} {name}: {per_round[name][-1]}", flush=True)
    args.load["end"] = [round(x, 1) for x in os.getloadavg()]
    result = summarize(per_round, args, time.time() - started)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_cost.json").write_text(json.dumps(result, indent=2))
    (out / "step_cost.md").write_text(markdown(result))
    print(markdown(result))


def _lab_tokenizer():
    from trapo_lab.models.tokenizer import build_tokenizer

    return build_tokenizer()


if __name__ == "__main__":
    main()
