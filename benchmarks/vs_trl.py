"""Our grpo and trapo steps against TRL's GRPOTrainer, side by side in one run.

Matched settings: the same 1.09M-parameter Qwen2 and embedded tokenizer, the same exact-match reward (the last
\\boxed{...} equals the ground truth), 8 prompts x 8 completions per step, at most 64 new tokens, lr 1e-5,
fp32, beta = 0, entropy coefficient 0.001, Dr. GRPO normalisation (a constant: max_completion_length x
completions) and no reward-std scaling in all three; TRL with gradient checkpointing off and plain
``model.generate`` (no vLLM). What it measures, all in one invocation:

- s/step of TRL GRPOTrainer, our grpo and our trapo, at each ``--threads`` setting. A *run* is ``--steps``
  optimizer steps from the base model in a fresh process (so its peak RSS is its own); the first step of each
  run is dropped; the variants run interleaved, round after round, so machine noise hits them alike. A step
  is the wall time between consecutive step ends (each framework's whole loop: generation, reward, update,
  logging). Reported: medians over rounds, the median over rounds of the per-round ratios, generated tokens
  per step and s per 1000 generated tokens;
- generation tokens/s of our engine (trapo.rollout.HFEngine) against ``model.generate`` on the same 64
  sequences (8 prompts x 8), sampling at T = 1, with every sequence forced to 64 tokens and stopping at EOS;
- the share of real tokens in the update batch: one right-padded batch of whole sequences (before) and the
  length-sorted mini-batches the trainer now uses (after; their rows are last prompt token + response where
  the trainer computes each distinct prompt once, trapo.trainer.shared_prompts);
- peak RSS of every run and the machine's 1-minute load average around every run.

    pip install -e ".[bench]"       # TRL, in an environment of its own: it is never a dependency of trapo
    python benchmarks/vs_trl.py --base artifacts/base --data artifacts/data/train.parquet

Writes docs/results/vs_trl.json and docs/results/vs_trl.md. Without --base, a randomly initialised model of
the same architecture is used (the timings hold; its completions rarely stop at EOS).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("trl", "grpo", "trapo", "trapo-speculative")
PROMPTS_PER_STEP, GENERATIONS, MAX_NEW_TOKENS, LR, ENTROPY_COEF = 8, 8, 64, 1e-5, 0.001
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def exact_match(prompts, completions, answer, **kwargs) -> list[float]:
    """1 when the last \\boxed{...} of the completion equals the ground truth, else 0 (TRL's signature; the same
    function is our trainer's reward)."""
    scores = []
    for completion, truth in zip(completions, answer, strict=True):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        found = BOXED.findall(text)
        scores.append(float(bool(found) and found[-1].strip() == str(truth).strip()))
    return scores


# ------------------------------------------------------------------------------------------------ workers


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _examples(data: str | None, n: int = 512):
    if data:
        from trapo.data import load_examples

        return load_examples([data]).examples[:n]
    from trapo_lab.tasks.splits import SplitConfig, build_split

    return build_split(SplitConfig(n_train=n), "train")


def _load(base: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)


def worker_ours(variant: str, base: str, data: str | None, steps: int, seed: int) -> dict:
    import torch

    from trapo.config import TRAPOConfig
    from trapo.trainer import TRAPOTrainer, read_metrics
    from trapo.trainer.batch import length_sorted_mini_batches, padded_token_share, row_length, sequence_length

    model, tokenizer = _load(base)
    examples = _examples(data)
    ends, shares = [], []
    with tempfile.TemporaryDirectory() as out:
        method, _, mode = variant.partition("-")
        cfg = TRAPOConfig(
            output_dir=out,
            method=method,
            rollout_mode=mode or "sequential",
            max_steps=steps,
            prompts_per_step=PROMPTS_PER_STEP,
            max_completion_length=MAX_NEW_TOKENS,
            learning_rate=LR,
            seed=seed,
            sample_log_steps=0,
            entropy_coef=ENTROPY_COEF,
            beta=0.0,
        )
        trainer = TRAPOTrainer(
            model, processing_class=tokenizer, train_dataset=examples, args=cfg, reward_fn=exact_match
        )
        step_fn, update_fn = trainer.training_step, trainer.update

        def training_step(step):
            result = step_fn(step)
            ends.append(time.perf_counter())
            return result

        def update(batch, advantages, metrics):
            lengths = [sequence_length(t) for t in batch.trajectories]
            shared = trainer._shares_prompts(batch.trajectories)
            rows = [row_length(t, shared) for t in batch.trajectories]  # what the update's mini-batches hold
            shares.append(
                (
                    padded_token_share(lengths, [list(range(len(lengths)))]),
                    padded_token_share(rows, length_sorted_mini_batches(rows, cfg.mini_batch_size)),
                )
            )
            return update_fn(batch, advantages, metrics)

        trainer.training_step, trainer.update = training_step, update
        start = time.perf_counter()
        trainer.train()
        rows = read_metrics(out)
    times = [b - a for a, b in zip([start, *ends], ends, strict=False)]
    return {
        "step_s": times,
        "generated_tokens": [r["perf/generated_tokens"] for r in rows],
        "generation_s": [r.get("perf/generation_s", 0.0) for r in rows],
        "real_token_share_one_batch": [s[0] for s in shares],
        "real_token_share_sorted": [s[1] for s in shares],
        "threads_at_end": torch.get_num_threads(),
    }


def worker_trl(base: str, data: str | None, steps: int, seed: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = _load(base)
    examples = _examples(data)
    dataset = Dataset.from_list(
        [
            {"prompt": list(e.prompt) if not isinstance(e.prompt, str) else e.prompt, "answer": e.answer}
            for e in examples
        ]
    )
    ends, lengths = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=PROMPTS_PER_STEP * GENERATIONS,
            num_generations=GENERATIONS,
            max_completion_length=MAX_NEW_TOKENS,
            learning_rate=LR,
            beta=0.0,
            entropy_coef=ENTROPY_COEF,
            loss_type="dr_grpo",
            scale_rewards="none",
            temperature=1.0,
            gradient_checkpointing=False,
            bf16=False,
            use_cpu=True,
            seed=seed,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=exact_match,
            args=cfg,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[Clock()],
        )
        torch.set_num_threads(threads)  # in case set-up changed it
        start = time.perf_counter()
        trainer.train()
    times = [b - a for a, b in zip([start, *ends], ends, strict=False)]
    return {
        "step_s": times,
        "generated_tokens": [m * PROMPTS_PER_STEP * GENERATIONS for m in lengths],
        "threads_at_end": torch.get_num_threads(),
    }


def worker_generation(base: str, data: str | None, rounds: int) -> dict:
    """Tokens/s of HFEngine vs model.generate on the same 64 sequences, forced length and stop at EOS."""
    import torch

    from trapo.data import encode_prompt
    from trapo.rollout import HFEngine, SamplingParams

    model, tokenizer = _load(base)
    model.eval()
    examples = _examples(data)[:PROMPTS_PER_STEP]
    prompts = [encode_prompt(tokenizer, e) for e in examples for _ in range(GENERATIONS)]
    never = -1  # an EOS id no token has: every sequence runs MAX_NEW_TOKENS

    def ours(eos: int, seed: int) -> tuple[float, int]:
        engine = HFEngine(model, eos, tokenizer.pad_token_id)
        t = time.perf_counter()
        out = engine.generate(prompts, MAX_NEW_TOKENS, SamplingParams(), torch.Generator().manual_seed(seed))
        return time.perf_counter() - t, sum(map(len, out))

    def theirs(eos: int, seed: int) -> tuple[float, int]:
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), tokenizer.pad_token_id)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) :], mask[row, width - len(p) :] = torch.tensor(p), 1
        torch.manual_seed(seed)
        t = time.perf_counter()
        with torch.inference_mode():
            seqs = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                eos_token_id=eos if eos >= 0 else None,
                pad_token_id=tokenizer.pad_token_id,
            )
        seconds = time.perf_counter() - t
        new = seqs[:, width:].tolist()
        if eos >= 0:  # count up to and including EOS, as our engine returns
            new = [row[: row.index(eos) + 1] if eos in row else row for row in new]
        return seconds, sum(map(len, new))

    result: dict[str, list] = {k: [] for k in ("ours_forced", "generate_forced", "ours_eos", "generate_eos")}
    ours(tokenizer.eos_token_id, 0), theirs(tokenizer.eos_token_id, 0)  # warm-up
    for r in range(rounds):
        for name, fn, eos in (
            ("ours_forced", ours, never),
            ("generate_forced", theirs, never),
            ("ours_eos", ours, tokenizer.eos_token_id),
            ("generate_eos", theirs, tokenizer.eos_token_id),
        ):
            seconds, tokens = fn(eos, r + 1)
            result[name].append({"s": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds})
    # What bounds a decode step now: the ops' share of the CPU time of one forced-length pass of our engine.
    from torch.profiler import profile

    with profile() as prof:
        ours(never, 0)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) or 1
    result["decode_profile"] = [
        {"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in ops[:8]
    ]
    return result


def worker(args: argparse.Namespace) -> None:
    _set_threads(args.threads[0])
    if args.worker == "generation":
        result = worker_generation(args.base, args.data, args.rounds)
    elif args.worker == "trl":
        result = worker_trl(args.base, args.data, args.steps, args.seed)
    else:
        result = worker_ours(args.worker, args.base, args.data, args.steps, args.seed)
    result["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------ driver


def run_worker(args: argparse.Namespace, name: str, threads: int, seed: int = 0, rounds: int = 0) -> dict:
    cmd = [
        args.python,
        __file__,
        "--worker",
        name,
        "--threads",
        str(threads),
        "--base",
        args.base,
        "--steps",
        str(args.steps),
        "--seed",
        str(seed),
        "--rounds",
        str(rounds),
    ]
    if args.data:
        cmd += ["--data", args.data]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"worker {name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(line[len("RESULT ") :])
    result.update(load_before=load_before, load_after=os.getloadavg()[0], wall_s=time.perf_counter() - started)
    return result


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _random_base(directory: Path) -> str:
    import torch
    from transformers import AutoModelForCausalLM

    from trapo_lab.models import build_tokenizer, tiny_config

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = tiny_config(len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def summarize(runs: dict, generation: dict, args: argparse.Namespace) -> dict:
    out: dict = {
        "threads": {},
        "settings": {
            "prompts_per_step": PROMPTS_PER_STEP,
            "generations": GENERATIONS,
            "max_new_tokens": MAX_NEW_TOKENS,
            "learning_rate": LR,
            "entropy_coef": ENTROPY_COEF,
            "beta": 0.0,
            "rounds": args.rounds,
            "rounds_other_threads": args.rounds_other,
            "steps_per_run": args.steps,
            "first_step_dropped": True,
            "base": args.base_label,
            "data": args.data,
        },
    }
    for threads, per_variant in runs.items():
        rows: dict = {}
        for v, rounds in per_variant.items():
            per_round = [_median(r["step_s"][1:]) for r in rounds]
            tokens = [_median(r["generated_tokens"][1:]) for r in rounds]
            rows[v] = {
                "median_step_s": _median(per_round),
                "per_round_step_s": per_round,
                "generated_tokens_per_step": _median(tokens),
                "s_per_1000_generated_tokens": _median(
                    [1000 * s / t for s, t in zip(per_round, tokens, strict=True) if t]
                ),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds),
                "threads_at_end": sorted({r["threads_at_end"] for r in rounds}),
            }
            if v != "trl":
                rows[v]["generation_s"] = _median([_median(r["generation_s"][1:]) for r in rounds])
                rows[v]["real_token_share_one_batch"] = _median(
                    [x for r in rounds for x in r["real_token_share_one_batch"]]
                )
                rows[v]["real_token_share_sorted"] = _median([x for r in rounds for x in r["real_token_share_sorted"]])

        def ratio(a: str, b: str, rows: dict = rows) -> float | None:
            if a not in rows or b not in rows:
                return None
            return _median(
                [x / y for x, y in zip(rows[a]["per_round_step_s"], rows[b]["per_round_step_s"], strict=True)]
            )

        loads = [x for rounds in per_variant.values() for r in rounds for x in (r["load_before"], r["load_after"])]
        out["threads"][str(threads)] = {
            "variants": rows,
            "grpo_over_trl": ratio("grpo", "trl"),
            "trapo_over_grpo": ratio("trapo", "grpo"),
            "trapo_over_trl": ratio("trapo", "trl"),
            "speculative_over_sequential": ratio("trapo-speculative", "trapo"),
            "load_1min": {"min": min(loads), "median": _median(loads), "max": max(loads)},
        }
    one = out["threads"].get("1", {})
    out["grpo_over_trl"] = one.get("grpo_over_trl")
    out["trapo_over_grpo"] = one.get("trapo_over_grpo")
    gen = {}
    for threads, g in generation.items():
        tps = {
            k: _median([x["tokens_per_s"] for x in g[k]])
            for k in ("ours_forced", "generate_forced", "ours_eos", "generate_eos")
        }
        gen[str(threads)] = {
            **{f"{k}_tokens_per_s": v for k, v in tps.items()},
            "ours_over_generate_forced": _median(
                [
                    a["tokens_per_s"] / b["tokens_per_s"]
                    for a, b in zip(g["ours_forced"], g["generate_forced"], strict=True)
                ]
            ),
            "ours_over_generate_eos": _median(
                [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(g["ours_eos"], g["generate_eos"], strict=True)]
            ),
            "eos_tokens": _median([x["tokens"] for x in g["ours_eos"]]),
            "eos_tokens_generate": _median([x["tokens"] for x in g["generate_eos"]]),
            "peak_rss_mb": g["peak_rss_mb"],
            "load_before": g["load_before"],
            "load_after": g["load_after"],
            "decode_profile": g["decode_profile"],
        }
    out["generation"] = gen
    return out


def markdown(result: dict, args: argparse.Namespace) -> str:
    f = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = [
        "# Step time: our grpo and trapo vs TRL's GRPOTrainer",
        "",
        f"`{result['command']}` on {result['machine']}; {result['wall_s']:.0f} s in all. "
        f"Base model: {result['settings']['base']}. {PROMPTS_PER_STEP} prompts x {GENERATIONS} completions per "
        f"step, <= {MAX_NEW_TOKENS} new tokens, lr {LR:g}, fp32, beta 0, entropy coefficient {ENTROPY_COEF}, "
        "Dr. GRPO normalisation, no reward-std scaling, exact-match reward; TRL "
        f"{result['versions'].get('trl')} without gradient checkpointing, plain `model.generate`. "
        f"Rounds of {args.steps}-step runs per variant ({args.rounds} at {args.threads[0]} thread(s), "
        f"{args.rounds_other} at more), interleaved, each in a fresh process; the "
        "first step of every run dropped; medians over rounds; ratios are medians of per-round ratios.",
        "",
    ]
    for threads, t in result["threads"].items():
        rows = t["variants"]
        n_rounds = max(len(r["per_round_step_s"]) for r in rows.values())
        lines += [
            f"## {threads} thread{'s' if threads != '1' else ''} ({n_rounds} rounds)",
            "",
            f"Machine load (1-min average, around the runs): min {t['load_1min']['min']:.2f}, median "
            f"{t['load_1min']['median']:.2f}, max {t['load_1min']['max']:.2f} on {os.cpu_count()} cores.",
            "",
            "| | s/step | generated tokens/step | s per 1000 generated tokens | generation s/step | "
            "real tokens in the update: one padded batch -> sorted mini-batches | peak RSS (MB) |",
            "|---|---|---|---|---|---|---|",
        ]
        for v in VARIANTS:
            if v not in rows:
                continue
            r = rows[v]
            share = (
                "-"
                if v == "trl"
                else f"{100 * r['real_token_share_one_batch']:.0f}% -> {100 * r['real_token_share_sorted']:.0f}%"
            )
            label = {
                "trl": "TRL GRPOTrainer",
                "trapo": "our trapo (sequential rollouts, the default)",
                "trapo-speculative": "our trapo (speculative rollouts)",
            }.get(v, "our " + v)
            lines.append(
                f"| {label} | {f(r['median_step_s'])} | "
                f"{f(r['generated_tokens_per_step'], 0)} | {f(r['s_per_1000_generated_tokens'])} | "
                f"{f(r.get('generation_s'))} | {share} | {f(r['peak_rss_mb'], 0)} |"
            )
        lines += [
            "",
            f"grpo / TRL: **{f(t['grpo_over_trl'], 2)}x**; trapo / grpo: **{f(t['trapo_over_grpo'], 2)}x**; "
            f"trapo / TRL: {f(t['trapo_over_trl'], 2)}x; speculative / sequential rollouts: "
            f"{f(t['speculative_over_sequential'], 2)}x.",
            "",
        ]
    lines += [
        "## Generation: our engine vs `model.generate`",
        "",
        f"The same {PROMPTS_PER_STEP * GENERATIONS} sequences ({PROMPTS_PER_STEP} prompts x {GENERATIONS}), "
        f"sampling at T = 1, <= {MAX_NEW_TOKENS} new tokens; interleaved rounds (as many as the step "
        "runs), medians.",
        "",
        "| threads | forced length: ours / generate (tokens/s) | ratio | stop at EOS: ours / generate (tokens/s) "
        "| ratio | tokens at EOS (ours / generate) |",
        "|---|---|---|---|---|---|",
    ]
    for threads, g in result["generation"].items():
        lines.append(
            f"| {threads} | {f(g['ours_forced_tokens_per_s'], 0)} / {f(g['generate_forced_tokens_per_s'], 0)}"
            f" | **{f(g['ours_over_generate_forced'], 2)}x** | {f(g['ours_eos_tokens_per_s'], 0)} / "
            f"{f(g['generate_eos_tokens_per_s'], 0)} | **{f(g['ours_over_generate_eos'], 2)}x** | "
            f"{f(g['eos_tokens'], 0)} / {f(g['eos_tokens_generate'], 0)} |"
        )
    first = next(iter(result["generation"].values()), None)
    if first:
        lines += [
            "",
            "Where a decode pass of our engine spends its CPU time (torch profiler, one forced-length pass, "
            f"{next(iter(result['generation']))} thread(s)): "
            + ", ".join(f"`{o['op']}` {100 * o['share']:.0f}%" for o in first["decode_profile"])
            + ".",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=None, help="base model directory (trapo base); default: random weights")
    parser.add_argument("--data", default=None, help="training data (trapo data make); default: built in memory")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first is dropped)")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="torch threads (torch.set_num_threads and OMP_NUM_THREADS in every worker)",
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--rounds-other", type=int, default=2, help="rounds at the thread settings after the first")
    parser.add_argument(
        "--variants-other",
        nargs="+",
        default=["trl", "grpo", "trapo"],
        choices=VARIANTS,
        help="variants at the thread settings after the first",
    )
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the workers (needs trl)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import torch
    import transformers

    started = time.perf_counter()
    tmp = tempfile.TemporaryDirectory()
    args.base_label = args.base or "random weights (tiny_config + build_tokenizer, seed 0)"
    if args.base is None:
        args.base = _random_base(Path(tmp.name) / "base")
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import trl

        versions["trl"] = trl.__version__
    except ImportError:
        if "trl" in args.variants:
            raise SystemExit("TRL is not installed: pip install -e '.[bench]' (or --variants grpo trapo)") from None

    # The first thread setting gets --rounds rounds of every variant; the others (on a shared machine, runs at
    # 2 threads can take 10-50x longer) --rounds-other rounds of --variants-other.
    plan = {
        t: (args.rounds, list(args.variants))
        if i == 0
        else (args.rounds_other, [v for v in args.variants if v in args.variants_other])
        for i, t in enumerate(args.threads)
    }
    runs: dict = {t: {v: [] for v in variants} for t, (_, variants) in plan.items()}
    generation: dict = {}
    for threads, (rounds, variants) in plan.items():
        for r in range(rounds):
            for v in variants:
                result = run_worker(args, v, threads, seed=r)
                runs[threads][v].append(result)
                print(
                    f"round {r} threads {threads} {v}: step_s {[round(x, 3) for x in result['step_s']]} "
                    f"load {result['load_before']:.2f}",
                    flush=True,
                )
        generation[threads] = run_worker(args, "generation", threads, rounds=rounds)
        print(f"generation threads {threads}: done", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = {"runs": {str(t): v for t, v in runs.items()}, "generation": {str(t): v for t, v in generation.items()}}
    (out / "vs_trl.json").write_text(json.dumps({"raw": raw}, indent=2))  # kept should the summary fail
    result = summarize(runs, generation, args)
    result.update(
        command="python benchmarks/vs_trl.py " + " ".join(sys.argv[1:]),
        machine=f"{platform.machine()} {os.cpu_count()} cores (shared), {platform.python_version()}",
        versions=versions,
        wall_s=time.perf_counter() - started,
        raw=raw,
    )
    (out / "vs_trl.json").write_text(json.dumps(result, indent=2))
    text = markdown(result, args)
    (out / "vs_trl.md").write_text(text)
    print(text)
    tmp.cleanup()


if __name__ == "__main__":
    main()
