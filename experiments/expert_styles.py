"""Is an expert style worth imitating for the embedded base model? Off-policy share vs what SFT on it does.

A faithful miniature needs expert solutions that are off-policy for the student (≥ 20% of tokens below
p = 0.1), as R1 traces are for a 7B student. The paper's conditions also include a second property that is easy to
miss: imitating the expert *helps* in-domain (its SFT row beats the base model on math) while it costs
general abilities. This experiment measures both properties for several expert styles of the same
training problems of the earlier task design (``trapo data make --task place-value``):

- ``native``: the base model's own format (``180-28=152``), the on-policy control;
- ``place-value``: the earlier design's default, tens-first and units-first place-value decompositions
  (``180-28=160-8=152``; :func:`trapo_lab.tasks.expert_solution`);
- ``commuted``: native, but ``+`` and ``*`` steps written operand first (``26+152=178``);
- ``restated``: native, and after each step a paragraph restating what is left of the chain
  (``152+26-23``), a verbose, state-tracking style.

For each style: the share of expert tokens with base-model probability below 0.1 and 0.01 (teacher-forced,
:func:`trapo_lab.pretrain.expert_token_probabilities`), then plain SFT (``trapo`` method ``sft``, token-mean NLL)
from the base model and sampled accuracy on the validation split, in-domain tiers and retained skills.

    trapo data make --task place-value --output artifacts/data-pv
    trapo base --task place-value --output artifacts/base-pv
    python experiments/expert_styles.py --steps 400 --lr 1e-4 --out docs/results

(13 minutes on one CPU thread with two comparisons running beside it; writes expert_styles.md and .json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from trapo.config import TRAPOConfig
from trapo.data import Example, load_examples
from trapo.evaluate import evaluate
from trapo.models import load_model_and_tokenizer
from trapo.rollout import SamplingParams
from trapo.trainer import TRAPOTrainer
from trapo_lab.compare import first_per_source, format_lr
from trapo_lab.pretrain import expert_token_probabilities, probability_stats
from trapo_lab.tasks import EXPERT_VARIANTS, ChainProblem, expert_solution, native_solution, parse_chain
from trapo_lab.tasks.arithmetic import boxed


def commuted_solution(problem: ChainProblem) -> str:
    """Native steps, with ``+`` and ``*`` written operand first: ``26+152=178``, ``7*23=161``."""
    v = problem.values
    steps = [
        f"{x}{op}{a}={r}" if op in "+*" else f"{a}{op}{x}={r}"
        for a, (op, x), r in zip(v, problem.steps, v[1:], strict=False)
    ]
    return "\n\n".join([*steps, boxed(problem.answer)])


def restated_solution(problem: ChainProblem) -> str:
    """Native steps, each followed (but the last) by a paragraph restating the rest of the chain from the
    running value: ``180-28=152\\n\\n152+26-23\\n\\n152+26=178 ...``."""
    v, paragraphs = problem.values, []
    for i, (a, (op, x), r) in enumerate(zip(v, problem.steps, v[1:], strict=False)):
        paragraphs.append(f"{a}{op}{x}={r}")
        rest = "".join(f"{o}{y}" for o, y in problem.steps[i + 1 :])
        if rest:
            paragraphs.append(f"{r}{rest}")
    return "\n\n".join([*paragraphs, boxed(problem.answer)])


STYLES: dict[str, Callable[[ChainProblem], tuple[str, ...]]] = {
    "native": lambda p: (native_solution(p),),
    "place-value": lambda p: tuple(dict.fromkeys(expert_solution(p, v) for v in EXPERT_VARIANTS)),
    "commuted": lambda p: (commuted_solution(p),),
    "restated": lambda p: (restated_solution(p),),
}


def with_style(examples: list[Example], style: str) -> list[Example]:
    return [replace(ex, expert_solutions=STYLES[style](parse_chain(ex.prompt_text))) for ex in examples]


def in_domain_and_retained(groups: dict[str, float]) -> tuple[float, float]:
    arith = [v for k, v in groups.items() if k.startswith("arith")]
    skills = [v for k, v in groups.items() if not k.startswith("arith")]
    return 100 * sum(arith) / len(arith), 100 * sum(skills) / len(skills)


def accuracy(model, tokenizer, examples: list[Example], seed: int) -> dict[str, float]:
    report = evaluate(
        model,
        tokenizer,
        examples,
        k=1,
        sampling=SamplingParams(temperature=1.0),
        max_new_tokens=128,
        seed=seed,
        progress=False,
    )
    return {name: g.avg_at_k for name, g in report.groups.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--data", default="artifacts/data-pv", help="`trapo data make --task place-value` directory")
    parser.add_argument("--base", default="artifacts/base-pv", help="`trapo base --task place-value` directory")
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=list(STYLES))
    parser.add_argument("--steps", type=int, default=400, help="SFT optimizer steps")
    parser.add_argument("--lr", type=float, default=1e-4, help="SFT learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-per-tier", type=int, default=200, help="validation problems per tier and skill")
    parser.add_argument("--probe", type=int, default=1000, help="training problems whose expert tokens are scored")
    parser.add_argument("--out", default="docs/results", help="where expert_styles.{md,json} go")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    data = Path(args.data)
    train = load_examples([data / "train.parquet"]).examples
    chains = [ex for ex in train if ex.data_source.startswith("arith")]
    val = load_examples([data / "val.parquet", data / "val_skills.parquet"]).examples
    val = first_per_source(val, args.val_per_tier, "val")

    base, tokenizer = load_model_and_tokenizer(args.base)
    rows: dict[str, dict] = {"base": {"val": accuracy(base, tokenizer, val, args.seed)}}
    for style in args.styles:
        started = time.perf_counter()
        examples = with_style(chains, style)
        probs = expert_token_probabilities(base, tokenizer, examples[: args.probe])
        model, tokenizer = load_model_and_tokenizer(args.base)
        with tempfile.TemporaryDirectory() as tmp:
            config = TRAPOConfig(
                method="sft",
                learning_rate=args.lr,
                max_steps=args.steps,
                seed=args.seed,
                output_dir=tmp,
                report_to="none",
            )
            TRAPOTrainer(model, processing_class=tokenizer, train_dataset=examples, args=config).train()
        rows[style] = {
            "off_policy": probability_stats(probs),
            "val": accuracy(model, tokenizer, val, args.seed),
            "seconds": round(time.perf_counter() - started, 1),
        }
        ind, ret = in_domain_and_retained(rows[style]["val"])
        print(
            f"{style}: {rows[style]['off_policy']['share_below_0.1']:.1%} below 0.1; after SFT in-domain {ind:.1f}, "
            f"retained {ret:.1f}",
            flush=True,
        )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "expert_styles.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    sources = sorted(rows["base"]["val"])
    lines = [
        "# Expert styles: how off-policy, and what imitating them does",
        "",
        f"Reproduce with `python experiments/expert_styles.py --data {args.data} --base {args.base} "
        f"--styles {' '.join(args.styles)} --steps {args.steps} --lr {format_lr(args.lr)} --seed {args.seed} "
        f"--out {args.out}` "
        "(its docstring says what each style is).",
        "",
        f"Off-policy share: expert tokens of {args.probe} training problems with base-model probability below "
        f"0.1 / 0.01. Accuracy: sampled (T = 1) on the validation split, {args.val_per_tier} problems per tier and "
        f"skill, of the base model and of the base model after {args.steps} steps of SFT (lr {args.lr:g}, 8 "
        "problems per step, token-mean NLL) on the training problems written in that style.",
        "",
        "| style | p < 0.1 | p < 0.01 | " + " | ".join(sources) + " | in-domain | retained |",
        "|---|---|---|" + "---|" * (len(sources) + 2),
    ]
    for name, row in rows.items():
        ind, ret = in_domain_and_retained(row["val"])
        off = row.get("off_policy")
        shares = f"{100 * off['share_below_0.1']:.1f}% | {100 * off['share_below_0.01']:.1f}%" if off else "– | –"
        label = "base (no SFT)" if name == "base" else f"SFT on {name}"
        cells = " | ".join(f"{100 * row['val'][s]:.1f}" for s in sources)
        lines.append(f"| {label} | {shares} | {cells} | **{ind:.1f}** | **{ret:.1f}** |")
    (out / "expert_styles.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'expert_styles.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
