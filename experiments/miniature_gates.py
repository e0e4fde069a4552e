"""Issue 15's gates: is the embedded task's expert off-policy AND worth imitating? Measured on validation.

The gates (docs/results/miniature_gates.md):

- G1 headroom: base in-domain average (tiers 1..5) <= 35%, with single operations (tier 1) >= 85%;
- G2 worth imitating: plain SFT on the expert solutions (learning rate chosen on validation from a small
  grid, a comparison-sized step budget) raises the in-domain average by >= 10 points over the base;
- G3 off-policy: >= 10% of expert-solution tokens have base probability < 0.1, and <= 10% of the base's
  own sampled solutions of multi-operation problems (tiers 2..5) are in the expert's form.

Everything is measured on the validation split (sampled at T = 1, one sample per problem), the OOD column
(tiers 6 and 7) and the retained skills beside it. Each run is recorded as one *attempt* in
``miniature_gates.json`` (earlier attempts kept, a run with the same label replaces its own), and the
markdown is rendered from all attempts, the last one in full::

    python experiments/miniature_gates.py --data artifacts/data --base artifacts/base --label default

builds the data (``trapo data make``) and the base model (``trapo base``, the default recipe) where
missing; ``--base-overrides '{"steps": 3000}'`` / ``--task`` / ``--data-task`` try other designs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from trapo.config import TRAPOConfig
from trapo.data import Example, load_examples
from trapo.evaluate import evaluate
from trapo.models import load_model_and_tokenizer
from trapo.rollout import SamplingParams
from trapo.trainer import TRAPOTrainer
from trapo_lab.pretrain import (
    BASE_INFO,
    BaseModelConfig,
    build_base_model,
    expert_token_probabilities,
    probability_stats,
    read_base_info,
)
from trapo_lab.tasks import make_splits, solution_style
from trapo_lab.tasks.arithmetic import writes_steps

GATES = {
    "G1": "base in-domain avg <= 35% and single ops (t1) >= 85%",
    "G2": "SFT on expert solutions raises in-domain avg by >= 10 points",
    "G3": ">= 10% of expert tokens below p = 0.1 and <= 10% of base multi-op solutions in expert form",
}


def first_per_source(examples: list[Example], n: int) -> list[Example]:
    by_source: dict[str, list[Example]] = {}
    for ex in examples:
        by_source.setdefault(ex.data_source, []).append(ex)
    return [ex for rows in by_source.values() for ex in rows[:n]]


def measure(model, tokenizer, examples: list[Example], task: str, seed: int) -> dict:
    """Sampled pass@1 per data source, and per source the share of completions in the expert's form,
    without a \\boxed answer (degenerate), and mean completion tokens."""
    report = evaluate(
        model,
        tokenizer,
        examples,
        k=1,
        sampling=SamplingParams(temperature=1.0),
        max_new_tokens=128,
        seed=seed,
        progress=False,
        keep_completions=True,
    )
    from trapo.rewards import extract_boxed

    out: dict[str, dict] = {}
    for name, group in report.groups.items():
        completions = [c for p in report.problems if p.group == name for c in (p.completions or [])]
        out[name] = {
            "acc": round(100 * (group.avg_at_k or 0.0), 2),
            "expert_form": round(
                100 * sum(solution_style(c, task) == "expert" for c in completions) / max(len(completions), 1), 2
            ),
            "writes_steps": round(100 * sum(writes_steps(c) for c in completions) / max(len(completions), 1), 2),
            "degenerate": round(100 * sum(extract_boxed(c) is None for c in completions) / max(len(completions), 1), 2),
            "mean_tokens": round(group.mean_completion_tokens or 0.0, 1),
        }
    return out


def summary(groups: dict[str, dict]) -> dict:
    def avg(keys, field="acc"):
        vals = [groups[k][field] for k in keys if k in groups]
        return round(sum(vals) / len(vals), 2) if vals else None

    tiers = sorted(k for k in groups if k.startswith("arith-"))
    multi = [k for k in tiers if k != "arith-t1"]
    ood = sorted(k for k in groups if k.startswith("ood-"))
    skills = sorted(k for k in groups if not k.startswith(("arith-", "ood-")))
    return {
        "in_domain": avg(tiers),
        "single_op": groups.get("arith-t1", {}).get("acc"),
        "multi_op": avg(multi),
        "ood": avg(ood),
        "retained": avg(skills),
        "expert_form_multi_op": avg(multi, "expert_form"),
        "writes_steps_multi_op": avg(multi, "writes_steps"),
        "degenerate_in_domain": avg(tiers, "degenerate"),
    }


def low_probability_tokens_by_place(model, tokenizer, examples: list[Example], alpha: float = 0.1) -> dict:
    """Where the expert tokens below ``alpha`` are: the solution's first token, a paragraph boundary
    (the ``\\n\\n`` token or the token right after it), or inside a step / the answer; each as a percent
    of all expert tokens (EOS included)."""
    from trapo.data.encoding import encode_prompt, encode_response
    from trapo_lab.pretrain import sequence_token_probabilities

    pairs = [
        (encode_prompt(tokenizer, ex), encode_response(tokenizer, sol))
        for ex in examples
        for sol in ex.expert_solutions
    ]
    probs = sequence_token_probabilities(model, tokenizer, pairs)
    boundary = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("\n\n"))[0]
    counts = {"first": 0, "boundary": 0, "inside": 0}
    total = 0
    for (_, ids), p in zip(pairs, probs, strict=True):
        total += len(ids)
        for i, (tid, pi) in enumerate(zip(ids, p.tolist(), strict=True)):
            if pi >= alpha:
                continue
            place = "first" if i == 0 else "boundary" if tid == boundary or ids[i - 1] == boundary else "inside"
            counts[place] += 1
    return {k: round(100 * v / max(total, 1), 2) for k, v in counts.items()}


def sft(base_dir: Path, train: list[Example], lr: float, steps: int, seed: int):
    model, tokenizer = load_model_and_tokenizer(base_dir)
    with tempfile.TemporaryDirectory() as tmp:
        config = TRAPOConfig(
            method="sft",
            learning_rate=lr,
            max_steps=steps,
            seed=seed,
            output_dir=tmp,
            report_to="none",
            max_completion_length=128,
        )
        TRAPOTrainer(model, processing_class=tokenizer, train_dataset=train, args=config).train()
    model.eval()
    return model, tokenizer


def render(record: dict) -> str:
    last = record["attempts"][-1]
    lines = [
        "# Miniature gates: is the expert off-policy AND worth imitating?",
        "",
        "Measured on the validation split, sampled (T = 1) pass@1, one sample per problem. Gates:",
        "",
        *[f"- **{g}**: {text}" for g, text in GATES.items()],
        "",
        f"Reproduce the last attempt with `{last['command']}` ({last['cpu_seconds']:.0f} s of CPU time, "
        f"{last['wall_seconds']:.0f} s wall, torch threads 1; data and base built if missing, their build "
        "time not included when they existed).",
        "",
        "## All attempts",
        "",
        "| attempt | design | base t1 (single op) | base in-domain | base multi-op in expert form (any written "
        "steps) | expert tokens "
        "p < 0.1 / < 0.01 | SFT lr chosen | SFT in-domain | gain | base OOD → SFT OOD | base retained → SFT "
        "retained | G1 | G2 | G3 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in record["attempts"]:
        g = a["gates"]
        b, s = a["base"]["summary"], a["sft_chosen"]["summary"]
        lines.append(
            f"| {a['label']} | {a['design']} | {b['single_op']:.1f} | {b['in_domain']:.1f} | "
            f"{b['expert_form_multi_op']:.1f} ({b.get('writes_steps_multi_op', b['expert_form_multi_op']):.1f}) | "
            f"{a['expert_tokens']['share_below_0.1_pct']:.1f} / "
            f"{a['expert_tokens']['share_below_0.01_pct']:.1f} | {a['sft_chosen']['lr']:g} | {s['in_domain']:.1f} | "
            f"{s['in_domain'] - b['in_domain']:+.1f} | {b['ood']} → {s['ood']} | {b['retained']} → {s['retained']} | "
            f"{'pass' if g['G1'] else 'FAIL'} | {'pass' if g['G2'] else 'FAIL'} | {'pass' if g['G3'] else 'FAIL'} |"
        )
    lines += [
        "",
        f"## The last attempt in full: {last['label']}",
        "",
        f"Design: {last['design']}",
        "",
        f"Base model: `{last['base_dir']}` (config `{last['base_config_hash']}`, {last['parameters']:,} "
        f"parameters, {last['base_pretraining'].get('steps')} pre-training steps, "
        f"{last['base_pretraining'].get('seconds')} s); data: `{last['data_dir']}`.",
        "",
    ]
    sources = list(last["base"]["groups"])
    lines += [
        "| model | " + " | ".join(sources) + " | in-domain | OOD | retained | multi-op in expert form |",
        "|---|" + "---|" * (len(sources) + 4),
    ]
    rows = [("base", last["base"])] + [
        (f"SFT lr {r['lr']:g}" + (" (chosen)" if r["lr"] == last["sft_chosen"]["lr"] else ""), r) for r in last["sft"]
    ]
    for name, r in rows:
        su = r["summary"]
        cells = " | ".join(f"{r['groups'][k]['acc']:.1f}" for k in sources)
        lines.append(
            f"| {name} | {cells} | **{su['in_domain']:.1f}** | {su['ood']} | {su['retained']} | "
            f"{su['expert_form_multi_op']:.1f}% |"
        )
    lines += [
        "",
        f"SFT: {last['sft_steps']} steps × 8 prompts (token-mean NLL on the expert solution, "
        f"`trapo` method `sft`, TRAPOConfig defaults otherwise), learning rate chosen on the "
        f"validation in-domain average from {', '.join(f'{x:g}' for x in last['sft_lrs'])}.",
        "",
        "Expert-token probabilities under the base (teacher-forced, EOS included), "
        f"{last['expert_tokens']['problems']} training problems: "
        f"{last['expert_tokens']['share_below_0.1_pct']:.1f}% below 0.1, "
        f"{last['expert_tokens']['share_below_0.01_pct']:.1f}% below 0.01 "
        f"(mean p {last['expert_tokens']['mean']}, {last['expert_tokens']['tokens']} tokens). Where the tokens "
        "below 0.1 are, in percent of all expert tokens: "
        + ", ".join(f"{k} {v}" for k, v in last["expert_tokens"].get("below_0_1_by_place_pct", {}).items())
        + " (first: the solution's first token; boundary: a paragraph break or the token after it; "
        "inside: within a step or the answer).",
        "",
    ]
    notes = record.get("notes")
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--data", default="artifacts/data", help="`trapo data make` directory (made if missing)")
    parser.add_argument("--base", default="artifacts/base", help="`trapo base` directory (built if missing)")
    parser.add_argument("--task", default="shortcut", help="task design of data and base when they are built")
    parser.add_argument("--expert-style", default=None, help="expert style of the data when it is built")
    parser.add_argument(
        "--base-overrides",
        default="{}",
        help="JSON of BaseModelConfig fields (mix: a dict of PretrainMix fields) for a missing base",
    )
    parser.add_argument("--label", default="default", help="name of this attempt (replaces an attempt of that name)")
    parser.add_argument("--design", default="", help="one-line description of the design, for the table")
    parser.add_argument("--val-per-tier", type=int, default=200, help="validation problems per tier / skill")
    parser.add_argument("--probe", type=int, default=1000, help="training problems whose expert tokens are scored")
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--sft-lrs", type=float, nargs="+", default=[3e-5, 1e-4, 3e-4])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/results", help="where miniature_gates.{md,json} go")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    wall, cpu = time.perf_counter(), time.process_time()

    data, base_dir = Path(args.data), Path(args.base)
    if not (data / "manifest.json").is_file():
        make_splits(data, task=args.task, expert_style=args.expert_style)
    if not (base_dir / BASE_INFO).is_file():  # an existing base is used as it is (its config is recorded)
        overrides = json.loads(args.base_overrides)
        build_base_model(base_dir, config=BaseModelConfig.for_task(args.task, **overrides), threads=1)
    info = read_base_info(base_dir) or {}

    val = load_examples([data / "val.parquet", data / "val_ood.parquet", data / "val_skills.parquet"]).examples
    val = first_per_source(val, args.val_per_tier)
    train = [ex for ex in load_examples([data / "train.parquet"]).examples if ex.data_source.startswith("arith")]
    base, tokenizer = load_model_and_tokenizer(base_dir)
    base.eval()
    probs = expert_token_probabilities(base, tokenizer, train[: args.probe])
    stats = probability_stats(probs)
    expert_tokens = {
        **stats,
        "problems": min(args.probe, len(train)),
        "share_below_0.1_pct": round(100 * stats["share_below_0.1"], 2),
        "share_below_0.01_pct": round(100 * stats["share_below_0.01"], 2),
    }
    expert_tokens["below_0_1_by_place_pct"] = low_probability_tokens_by_place(base, tokenizer, train[: args.probe])
    groups = measure(base, tokenizer, val, args.task, args.seed)
    base_row = {"groups": groups, "summary": summary(groups)}
    print("base", base_row["summary"], "expert tokens < 0.1:", expert_tokens["share_below_0.1_pct"], flush=True)

    sft_rows = []
    for lr in args.sft_lrs:
        model, tok = sft(base_dir, train, lr, args.sft_steps, args.seed)
        g = measure(model, tok, val, args.task, args.seed)
        sft_rows.append({"lr": lr, "groups": g, "summary": summary(g)})
        print(f"sft lr {lr:g}", sft_rows[-1]["summary"], flush=True)
    chosen = max(sft_rows, key=lambda r: r["summary"]["in_domain"])

    b, s = base_row["summary"], chosen["summary"]
    gates = {
        "G1": b["in_domain"] <= 35 and b["single_op"] >= 85,
        "G2": s["in_domain"] - b["in_domain"] >= 10,
        # strict: a written step in any layout counts as the expert's form
        "G3": expert_tokens["share_below_0.1_pct"] >= 10
        and max(b["expert_form_multi_op"], b["writes_steps_multi_op"]) <= 10,
    }
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    attempt = {
        "label": args.label,
        "design": args.design or f"task {args.task}, base overrides {args.base_overrides}",
        "command": command,
        "data_dir": str(data),
        "base_dir": str(base_dir),
        "base_config_hash": info.get("config_hash"),
        "base_config": info.get("config"),
        "base_pretraining": info.get("pretraining", {}),
        "parameters": info.get("parameters", 0),
        "val_per_tier": args.val_per_tier,
        "sft_steps": args.sft_steps,
        "sft_lrs": args.sft_lrs,
        "seed": args.seed,
        "expert_tokens": expert_tokens,
        "base": base_row,
        "sft": sft_rows,
        "sft_chosen": {"lr": chosen["lr"], "summary": chosen["summary"]},
        "gates": gates,
        # the keys, in percent
        "base_in_domain": b["in_domain"],
        "base_single_op": b["single_op"],
        "sft_in_domain": s["in_domain"],
        "expert_tokens_below_0_1": expert_tokens["share_below_0.1_pct"],
        "expert_tokens_below_0_01": expert_tokens["share_below_0.01_pct"],
        "base_expert_form_share": b["expert_form_multi_op"],
        "base_writes_steps_share": b["writes_steps_multi_op"],
        "base_ood": b["ood"],
        "sft_ood": s["ood"],
        "base_retained": b["retained"],
        "sft_retained": s["retained"],
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "miniature_gates.json"
    record = json.loads(path.read_text()) if path.is_file() else {"attempts": []}
    record["attempts"] = [a for a in record["attempts"] if a["label"] != args.label] + [attempt]
    # the top-level keys describe the last attempt
    for key in (
        "base_in_domain",
        "base_single_op",
        "sft_in_domain",
        "expert_tokens_below_0_1",
        "expert_tokens_below_0_01",
        "base_expert_form_share",
        "base_writes_steps_share",
        "base_ood",
        "sft_ood",
        "base_retained",
        "sft_retained",
        "gates",
        "command",
    ):
        record[key] = attempt[key]
    record["units"] = "percent"
    path.write_text(json.dumps(record, indent=2) + "\n")
    (out / "miniature_gates.md").write_text(render(record))
    print(
        json.dumps(
            {
                k: attempt[k]
                for k in (
                    "base_in_domain",
                    "base_single_op",
                    "sft_in_domain",
                    "expert_tokens_below_0_1",
                    "base_expert_form_share",
                    "gates",
                )
            }
        )
    )
    print(f"wrote {path} and {out / 'miniature_gates.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
