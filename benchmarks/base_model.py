"""Build the default embedded base model and measure it: docs/results/base_model.{json,md}.

Measures, for a fresh build with the default recipe (``trapo_lab.pretrain.BaseModelConfig()``), or for an
existing build of it (``--base DIR``: its build time is the one recorded in its ``trapo_base.json``):
- build wall time (pre-training + the build's own validation measurements) and peak resident memory;
- per-tier pass@1 on the *test* split, sampled (T = 1) and greedy: the in-domain tiers, the
  out-of-distribution tiers (6, 7) and the retained skills;
- the share of expert-solution tokens (post-training set) the base model gives probability < 0.1.

Usage:  .venv/bin/python benchmarks/base_model.py [--base DIR] [--n-per-tier 500] [--threads 1] [--output DIR]
The machine's load average is recorded: on a shared machine timings are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from trapo.evaluate import evaluate
from trapo.models import load_model_and_tokenizer
from trapo.rollout import SamplingParams
from trapo_lab.pretrain import BaseModelConfig, build_base_model, read_base_info
from trapo_lab.tasks import ALL_TIERS, arithmetic_examples, skill_examples

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-per-tier", type=int, default=500, help="test problems per tier and per skill")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--base", default=None, help="measure this existing build of the default recipe instead of building one"
    )
    parser.add_argument("--output", default=None, help="keep the model here (default: a temporary directory)")
    parser.add_argument("--results", default=str(RESULTS), help="where base_model.{json,md} go")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    config = BaseModelConfig()
    tmp = None if args.output or args.base else tempfile.mkdtemp(prefix="trapo-base-bench-")
    if args.base:
        out = Path(args.base)
        info = read_base_info(out)
        if info is None or info.get("config_hash") != config.hash():
            raise SystemExit(f"{out}: not a build of the default recipe (config {config.hash()})")
        build_s, rss_build = info["build_seconds"], None
    else:
        out = Path(args.output or tmp) / "base"
        start = time.perf_counter()
        build_base_model(out, config, force=True)
        build_s = time.perf_counter() - start
        rss_build = peak_rss_mib()
        info = read_base_info(out)

    model, tokenizer = load_model_and_tokenizer(out)
    problems = arithmetic_examples("test", dict.fromkeys(ALL_TIERS, args.n_per_tier), seed=0)
    problems += skill_examples("test", args.n_per_tier, seed=0)
    measured = {}
    eval_start = time.perf_counter()
    for name, temperature in (("sampled", 1.0), ("greedy", 0.0)):
        report = evaluate(
            model,
            tokenizer,
            problems,
            k=1,
            sampling=SamplingParams(temperature=temperature),
            max_new_tokens=160,
            seed=0,
        )
        measured[name] = {g: round(m.avg_at_k, 4) for g, m in report.groups.items()}
        measured[f"{name}_truncated"] = {g: round(m.truncated_rate, 4) for g, m in report.groups.items()}
    eval_s = time.perf_counter() - eval_start
    load_after = os.getloadavg()

    result = {
        "config": config.to_dict(),
        "config_hash": config.hash(),
        "parameters": info["parameters"],
        "pretraining": info["pretraining"],
        "build_seconds": round(build_s, 1),
        "test_eval_seconds": round(eval_s, 1),
        "peak_rss_mib_build": None if rss_build is None else round(rss_build, 1),
        "measured_existing_build": str(out) if args.base else None,
        "build_torch_threads": info.get("torch_threads"),
        "peak_rss_mib_total": round(peak_rss_mib(), 1),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "test_n_per_tier": args.n_per_tier,
        "test_pass@1_sampled": measured["sampled"],
        "test_pass@1_greedy": measured["greedy"],
        "test_truncated_sampled": measured["sampled_truncated"],
        "val_pass@1_sampled": info.get("sampled_pass@1"),
        "val_pass@1_greedy": info.get("greedy_pass@1"),
        "expert_token_probability": info.get("expert_token_probability"),
        "expert_token_probability_by_tier": info.get("expert_token_probability_by_tier"),
        "native_token_probability": info.get("native_token_probability"),
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "base_model.json").write_text(json.dumps(result, indent=2) + "\n")
    (results / "base_model.md").write_text(render(result) + "\n")
    print(render(result))
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


def render(r: dict) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    sources = list(r["test_pass@1_sampled"])
    rss_scope = "test evaluation" if r.get("measured_existing_build") else "build + test evaluation"
    build_rss = "not measured (existing build)" if r["peak_rss_mib_build"] is None else f"{r['peak_rss_mib_build']} MiB"
    expert = f"expert ({r['config']['mix'].get('task', 'place-value')} task)"
    lines = [
        "# The embedded base model",
        "",
        f"Default recipe (`trapo base`, config `{r['config_hash']}`): {r['parameters']:,}-parameter Qwen2, "
        f"{r['pretraining']['steps']} pre-training steps of batch {r['config']['batch_size']} "
        f"(final loss {r['pretraining']['final_loss']}).",
        "",
        f"Measured on {r['cpu_count']} CPU cores, torch {r['torch']}, {r['torch_threads']} thread(s); load average "
        f"{r['load_average_before'][0]} before / {r['load_average_after'][0]} after: the cores were shared with "
        "other jobs, so the times are upper bounds for an idle machine.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| build time (pre-training + validation measurements; {r.get('build_torch_threads') or '?'} thread(s)) "
        f"| {r['build_seconds']} s |",
        f"| of which pre-training | {r['pretraining']['seconds']} s |",
        f"| peak resident memory (build) | {build_rss} |",
        f"| peak resident memory ({rss_scope}) | {r['peak_rss_mib_total']} MiB |",
        f"| test evaluation time (sampled + greedy) | {r['test_eval_seconds']} s |",
        "",
        f"## pass@1 on the test split ({r['test_n_per_tier']} problems per tier / skill)",
        "",
        "| data source | sampled (T = 1) | greedy | validation sampled | validation greedy |",
        "|---|---|---|---|---|",
    ]
    val_s, val_g = r.get("val_pass@1_sampled") or {}, r.get("val_pass@1_greedy") or {}
    for s in sources:
        lines.append(
            f"| {s} | {pct(r['test_pass@1_sampled'][s])} | {pct(r['test_pass@1_greedy'][s])} | "
            f"{pct(val_s[s]) if s in val_s else '-'} | {pct(val_g[s]) if s in val_g else '-'} |"
        )
    e, n = r["expert_token_probability"], r["native_token_probability"]
    lines += [
        "",
        "## How off-policy the expert solutions are",
        "",
        "Teacher-forced probability the base model gives each token of the post-training set's expert "
        "solutions (both variants, EOS included), against the same problems' native-style solutions:",
        "",
        "| solutions | tokens | share p < 0.1 | share p < 0.01 | mean p | median p |",
        "|---|---|---|---|---|---|",
        f"| {expert} | {e['tokens']} | {pct(e['share_below_0.1'])} | {pct(e['share_below_0.01'])} "
        f"| {e['mean']:.3f} | {e['median']:.3f} |",
        f"| native (pre-training style) | {n['tokens']} | {pct(n['share_below_0.1'])} | "
        f"{pct(n['share_below_0.01'])} | {n['mean']:.3f} | {n['median']:.3f} |",
        "",
        "Per tier (expert solutions): "
        + ", ".join(f"{k} {pct(v['share_below_0.1'])}%" for k, v in r["expert_token_probability_by_tier"].items()),
        "",
        "How the recipe was chosen (ten attempts, each with its numbers): `docs/results/miniature_gates.md`.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--render-only"]:  # re-write the .md from an existing .json
        saved = json.loads((RESULTS / "base_model.json").read_text())
        (RESULTS / "base_model.md").write_text(render(saved) + "\n")
    else:
        main()
