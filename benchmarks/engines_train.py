"""`trapo train --engine hf` beside `--engine vllm`: the same short run on a trapo base, and what each logs.

Both runs use the same Python (a venv with vLLM, e.g. .venv-vllm, so the two share one transformers), the same
flags and seed, one torch thread, one after the other. The engines sample different tokens from the same seed
(each its own random stream), so rewards and losses agree in distribution, not step for step; the importance
weights and ``sampling/logprob_diff`` say how closely vLLM's log-probs of its own samples match the trainer's.

    trapo base --output /tmp/base && trapo data make --output /tmp/data
    .venv-vllm/bin/python benchmarks/engines_train.py --base /tmp/base --data /tmp/data   # docs/results/engines_train.*
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

FLAGS = ["--method", "trapo", "--learning_rate", "1e-4", "--prompts_per_step", "8", "--max_completion_length", "128"]
FLAGS += ["--threads", "1", "--save_steps", "0", "--seed", "0", "--overwrite_output_dir"]
KEYS = (
    "reward/mean", "reward/unguided", "reward/guided", "guidance/level_0", "guidance/level_1", "guidance/level_2",
    "guidance/level_3", "loss/total", "loss/policy", "loss/prefix", "entropy", "grad_norm", "length/completion",
    "length/prefix", "perf/step_s", "perf/generation_s", "perf/weight_sync_s", "sampling/importance_weight",
    "sampling/masked", "sampling/logprob_diff",
)  # fmt: skip


def train(engine: str, args: argparse.Namespace) -> dict:
    """One ``trapo train`` run with ``engine``; its metrics, per step, and its wall time."""
    out = Path(args.runs) / engine
    cmd = [sys.executable, "-m", "trapo.cli", "train", "--model", args.base, "--data", args.data, *FLAGS]
    cmd += ["--max_steps", str(args.steps), "--engine", engine, "--output_dir", str(out)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"command": " ".join(["python", *cmd[1:]]), "wall_s": time.perf_counter() - start, "rows": rows}


def summary(rows: list[dict]) -> dict[str, float | None]:
    """Each key's mean over the steps; ``perf/*`` over the steps after the first (vLLM's first request warms up)."""
    out: dict[str, float | None] = {}
    for key in KEYS:
        values = [r[key] for r in (rows[1:] if key.startswith("perf/") else rows) if key in r]
        out[key] = statistics.fmean(values) if values else None
    return out


def report(result: dict) -> str:
    engines = list(result["runs"])
    lines = [
        "# `trapo train --engine hf` vs `--engine vllm` on the trained base",
        "",
        f"`benchmarks/engines_train.py`: {result['steps']} steps of TRAPO each, same flags and seed, one thread, "
        f"one run after the other; base `{result['base']}`, data `{result['data']}`. Load average (1/5/15 min) "
        f"before {result['load_before']}, after {result['load_after']}. Means over the steps (`perf/*`: steps 2 on).",
        "",
        "| metric | " + " | ".join(engines) + " |",
        "|---|" + "---|" * len(engines),
    ]
    for key in KEYS:
        cells = [result["runs"][e]["summary"][key] for e in engines]
        lines.append(f"| `{key}` | " + " | ".join("-" if c is None else f"{c:.4g}" for c in cells) + " |")
    lines.append(
        "| wall s (start to end) | " + " | ".join(f"{result['runs'][e]['wall_s']:.0f}" for e in engines) + " |"
    )
    lines += ["", "Commands (`python`: the venv with vLLM):", ""]
    lines += [f"- `{result['runs'][e]['command']}`" for e in engines]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="a trapo base directory (trapo base --output DIR)")
    parser.add_argument("--data", required=True, help="the embedded task's data (trapo data make --output DIR)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", default="/tmp/trapo-engines-train", help="where the two runs are written")
    parser.add_argument("--out", default="docs/results/engines_train")
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs = {}
    for engine in ("hf", "vllm"):
        print(f"--engine {engine} ...", file=sys.stderr, flush=True)
        runs[engine] = train(engine, args)
        runs[engine]["summary"] = summary(runs[engine]["rows"])
    result = {
        "base": args.base,
        "data": args.data,
        "steps": args.steps,
        "threads": 1,
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "runs": runs,
    }
    Path(args.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
    Path(args.out + ".md").write_text(report(result))
    print(report(result))


if __name__ == "__main__":
    main()
