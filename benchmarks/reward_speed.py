"""Speed and accuracy of ``math_reward`` on every ground truth of the six shared benchmarks (target: <= 50 ms
per call on average).

For every distinct problem (AIME/AMC rows repeat 32x; they are merged) two calls are timed:

- accept: a completion that boxes the problem's own ground truth inside some text: should score 1;
- reject: a completion that boxes the ground truth of the next problem whose answer is written differently:
  should score 0.

All accepting calls run first, with every cache cold (the ground truth is parsed); then the candidate caches
(ours and math-verify's) are cleared and the rejecting calls run with the ground truths cached and every
candidate parsed afresh, as in training, where a prompt's 8 completions share its parsed ground truth.
Writes docs/results/reward_speed.{json,md}.

    python benchmarks/reward_speed.py [--benchmarks ../shared/benchmarks] [--out docs/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import Counter
from pathlib import Path

from trapo.data import load_examples
from trapo.rewards import check_answer
from trapo.rewards.math_answers import DEFAULT_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[1]


def _canonical(answer: str) -> str:
    return answer.replace("$", "").replace(" ", "")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _stats(ms: list[float]) -> dict[str, float]:
    return {
        "calls": len(ms),
        "mean_ms": statistics.fmean(ms),
        "median_ms": statistics.median(ms),
        "p99_ms": _percentile(ms, 0.99),
        "max_ms": max(ms),
    }


def _clear_parse_caches() -> None:
    """Forget every parsed candidate: ours and math-verify's own caches of parsed LaTeX / expressions."""
    import math_verify.parser as mv_parser

    from trapo.rewards import math_answers

    math_answers._parse_candidate.cache_clear()
    for name in ("parse_latex_cached", "parse_expr_cached"):
        clear = getattr(getattr(mv_parser, name, None), "cache_clear", None)
        if clear:
            clear()


def measure(benchmarks: Path) -> dict:
    examples = load_examples(benchmarks, dedupe=True).examples
    others = []
    for i, ex in enumerate(examples):
        j = (i + 1) % len(examples)
        while _canonical(examples[j].answer) == _canonical(ex.answer):
            j = (j + 1) % len(examples)
        others.append(examples[j].answer)
    check_answer("\\boxed{1}", "1")  # imports and parser start-up, outside the timings

    def timed(text: str, answer: str) -> tuple[str, float]:
        start = time.perf_counter()
        verdict = check_answer(text, answer)
        return verdict.status, 1000 * (time.perf_counter() - start)

    # pass 1, everything cold: the ground truth is parsed (the boxed copy reuses that parse)
    accepts = [
        timed(f"Let me work through this.\n\nSo the answer is \\boxed{{{ex.answer}}}.", ex.answer) for ex in examples
    ]
    # pass 2, as in training: ground truths parsed already, every candidate parsed afresh
    _clear_parse_caches()
    rejects = [
        timed(f"Hence the result is \\boxed{{{other}}}.", ex.answer) for ex, other in zip(examples, others, strict=True)
    ]
    rows = [
        {
            "source": ex.data_source,
            "answer": ex.answer,
            "other": other,
            "accept": a[0],
            "reject": r[0],
            "accept_ms": a[1],
            "reject_ms": r[1],
        }
        for ex, other, a, r in zip(examples, others, accepts, rejects, strict=True)
    ]

    def block(subset: list[dict]) -> dict:
        accept_ms = [r["accept_ms"] for r in subset]
        reject_ms = [r["reject_ms"] for r in subset]
        return {
            "problems": len(subset),
            "accept_rate": sum(r["accept"] == "correct" for r in subset) / len(subset),
            "reject_rate": sum(r["reject"] != "correct" for r in subset) / len(subset),
            "all_calls": _stats(accept_ms + reject_ms),
            "accept_calls": _stats(accept_ms),
            "reject_calls": _stats(reject_ms),
            "statuses": dict(Counter(r["accept"] for r in subset) + Counter(r["reject"] for r in subset)),
        }

    sources = list(dict.fromkeys(r["source"] for r in rows))
    return {
        "timeout_s": DEFAULT_TIMEOUT_S,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "overall": block(rows),
        "per_source": {s: block([r for r in rows if r["source"] == s]) for s in sources},
        "not_accepted": [(r["source"], r["answer"], r["accept"]) for r in rows if r["accept"] != "correct"],
        "wrongly_accepted": [(r["source"], r["answer"], r["other"]) for r in rows if r["reject"] == "correct"],
        "timeouts": [(r["source"], r["answer"], r["other"]) for r in rows if "timeout" in (r["accept"], r["reject"])],
    }


def markdown(result: dict) -> str:
    o = result["overall"]
    lines = [
        "# math_reward speed and accuracy on the benchmark ground truths",
        "",
        "`python benchmarks/reward_speed.py` — every distinct problem of the six `../shared/benchmarks` files; "
        "per problem one accepting call (its own answer boxed) in a first pass with every cache cold, and one "
        "rejecting call (the next problem's differently written answer boxed) in a second pass with the ground "
        "truths cached and every candidate parsed afresh, as in training. Target: <= 50 ms per call on average. "
        f"Time bound per call {result['timeout_s']} s. One process, one thread ({result['machine']}, "
        f"Python {result['python']}); the machine is shared, so times are indicative.",
        "",
        "| source | problems | accepted | rejected | mean ms | median ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, b in [*result["per_source"].items(), ("**all**", o)]:
        s = b["all_calls"]
        lines.append(
            f"| {name} | {b['problems']} | {100 * b['accept_rate']:.2f}% | {100 * b['reject_rate']:.2f}% | "
            f"{s['mean_ms']:.1f} | {s['median_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.0f} |"
        )
    cold, warm = o["accept_calls"], o["reject_calls"]
    lines += [
        "",
        f"Accepting calls (pass 1: ground truth parsed cold): mean {cold['mean_ms']:.1f} ms, "
        f"p99 {cold['p99_ms']:.1f} ms. Rejecting calls (pass 2: ground truth cached, candidate parsed cold): "
        f"mean {warm['mean_ms']:.1f} ms, p99 {warm['p99_ms']:.1f} ms. "
        f"Statuses over all calls: {o['statuses']}.",
        "",
        f"Not accepted ({len(result['not_accepted'])}): {result['not_accepted'] or 'none'}",
        "",
        f"Wrongly accepted ({len(result['wrongly_accepted'])}): {result['wrongly_accepted'] or 'none'}",
        "",
        f"Calls that hit the time bound ({len(result['timeouts'])}): {result['timeouts'] or 'none'}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--benchmarks",
        default=str(ROOT / ".." / "shared" / "benchmarks"),
        help="directory of the verl benchmark parquet files",
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "results"), help="where to write the results")
    args = parser.parse_args()
    result = measure(Path(args.benchmarks))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reward_speed.json").write_text(json.dumps(result, indent=2))
    (out / "reward_speed.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
