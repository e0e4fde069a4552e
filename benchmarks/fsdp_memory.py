"""Peak memory per process and rollout cost: ``--fsdp full_shard`` (torch's FSDP2) against DDP and one process.

The same 50.6M-parameter Qwen2 (built from a config: hidden 768, 8 layers, MLP 2048, the embedded byte-level
tokenizer) is trained for ``--steps`` GRPO steps (rollouts + update, AdamW) three ways, one after the other:
one process; 2 CPU processes with DDP (each holds the whole model, its gradients and AdamW state); 2 CPU
processes with ``--fsdp full_shard`` (each holds half). Every process runs 1 thread (gloo between them).

Per process: the resident memory once the trainer is built, the peak resident memory of the training itself
(``VmHWM`` of /proc/self/status, reset through /proc/self/clear_refs once the trainer is built, so that building
the model is not counted), the bytes of the parameters and AdamW state it holds at the end, the step and
generation times (medians over steps after the first), and under FSDP the time spent gathering the parameters
for rollouts. glibc's malloc is run with a fixed mmap threshold (``MALLOC_MMAP_THRESHOLD_``): by default it
raises the threshold after large frees and then keeps freed tensors' memory in its heap, so that resident memory
no longer falls when tensors are freed.

    nice -n 10 python benchmarks/fsdp_memory.py --steps 3

Writes docs/results/fsdp_memory.json and docs/results/fsdp_memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MMAP_THRESHOLD = 1 << 20  # bytes: tensors this large or larger are returned to the system when freed
MODES = {"one process": ("single", 1), "DDP, 2 processes": ("ddp", 2), "FSDP full_shard, 2 processes": ("fsdp", 2)}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    from trapo.trainer.sharding import local

    held = sum(local(p).numel() * p.element_size() for p in model.parameters())
    for state in optimizer.state.values():
        held += sum(local(t).numel() * t.element_size() for t in state.values() if torch.is_tensor(t) and t.dim())
    return held


def worker(mode: str, out: Path, steps: int) -> None:
    """One process of one mode: train, then write this process's measurements to ``out/MODE-RANK.json``."""
    from contextlib import contextmanager

    from transformers import Qwen2Config, Qwen2ForCausalLM

    from trapo.config import TRAPOConfig
    from trapo.data import Example
    from trapo.trainer import TRAPOTrainer, read_metrics, sharding
    from trapo_lab.models.tokenizer import build_tokenizer

    torch.set_num_threads(1)
    tok = build_tokenizer()
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=768,
        num_hidden_layers=8,
        num_attention_heads=12,
        num_key_value_heads=4,
        intermediate_size=2048,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    rows = [
        Example(prompt=[{"role": "user", "content": f"{a}+{b}"}], answer=str(a + b))
        for a, b in ((3, 4), (5, 9), (12, 7), (8, 8))
    ]
    gather_s: list[float] = []
    timed = sharding.gathered

    @contextmanager
    def gathered_timed(m):
        t0 = time.perf_counter()
        with timed(m) as inner:
            gather_s.append(time.perf_counter() - t0)  # the all-gather of every parameter
            yield inner

    sharding.gathered = gathered_timed
    run_dir = out / mode
    cfg = TRAPOConfig(
        method="grpo",
        output_dir=str(run_dir),
        max_steps=steps,
        prompts_per_step=2,
        max_completion_length=32,
        learning_rate=1e-5,
        sample_log_steps=0,
        save_minutes=0,
        fsdp="full_shard" if mode == "fsdp" else "",
    )
    trainer = TRAPOTrainer(model, tok, rows, cfg)
    rss_built = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here on: the training only
    trainer.train()
    metrics = read_metrics(run_dir)[1:] or read_metrics(run_dir)
    local, total = sharding.element_counts(trainer.model)
    rank = trainer.accelerator.process_index
    result = {
        "mode": mode,
        "rank": rank,
        "processes": trainer.accelerator.num_processes,
        "param_elements_local": local,
        "param_elements_total": total,
        "rss_after_build_mib": rss_built / 1024,
        "peak_rss_training_mib": _status_kib("VmHWM") / 1024,
        "state_mib": _state_bytes(trainer.model, trainer.optimizer) / 2**20,
        "step_s": statistics.median(r["perf/step_s"] for r in metrics),
        "generation_s": statistics.median(r["perf/generation_s"] for r in metrics),
        "gather_s": statistics.median(gather_s) if gather_s else 0.0,
    }
    (out / f"{mode}-{rank}.json").write_text(json.dumps(result))


def launch(mode: str, processes: int, out: Path, steps: int) -> list[dict]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "PYTHONPATH": str(ROOT / "src"),
        "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
    }
    args = [str(Path(__file__).resolve()), "--worker", mode, "--out", str(out), "--steps", str(steps)]
    if processes == 1:
        cmd = [sys.executable, *args]
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        torchrun = str(Path(sys.executable).parent / "torchrun")
        cmd = [torchrun, "--nproc_per_node", str(processes), "--master_port", str(port), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return [json.loads((out / f"{mode}-{rank}.json").read_text()) for rank in range(processes)]


def report(results: dict[str, list[dict]], command: str, seconds: float, load: list[float]) -> str:
    ddp = max(r["peak_rss_training_mib"] for r in results["DDP, 2 processes"])
    total = results["one process"][0]["param_elements_total"]
    lines = [
        "# Peak memory per process: FSDP full_shard vs DDP vs one process",
        "",
        f"`{command}` on {platform.machine()}, 1 thread per process, torch {torch.__version__}; {seconds:.0f} s "
        f"in all; 1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (2 cores: other jobs "
        "shared the machine, so times are indicative; memory is not affected). "
        f"A {total / 1e6:.1f}M-parameter Qwen2 (float32, AdamW), GRPO steps with rollouts, "
        f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}. Peak RSS is the training's (reset after the model and trainer "
        "are built); state is the parameters + AdamW moments the process holds.",
        "",
        "| set-up | parameter elements held | RSS when built (MiB) | peak RSS, training (MiB) | peak / DDP's "
        "| params + AdamW state (MiB) | step (s) | generation (s) | parameter gather for rollouts (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, ranks in results.items():
        for r in ranks:
            lines.append(
                f"| {name}, process {r['rank']} | {r['param_elements_local']:,} of {r['param_elements_total']:,} "
                f"({r['param_elements_local'] / r['param_elements_total']:.0%}) | {r['rss_after_build_mib']:.0f} "
                f"| {r['peak_rss_training_mib']:.0f} "
                f"| {r['peak_rss_training_mib'] / ddp:.2f}x | {r['state_mib']:.0f} | {r['step_s']:.2f} "
                f"| {r['generation_s']:.2f} | {r['gather_s']:.3f} |"
            )
    lines += [
        "",
        "Step and generation times are medians over the steps after the first, averaged over the processes; one "
        "process generates both prompts' groups, two processes one group each. Under FSDP a rollout first "
        "all-gathers every parameter once (`trapo.trainer.sharding.gathered`) and generates with the whole model "
        "in memory, so its peak holds the whole parameters once on top of its shards.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", choices=[m for m, _ in MODES.values()], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.out, args.steps)
        return
    start, load = time.perf_counter(), [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: launch(mode, n, Path(tmp), args.steps) for name, (mode, n) in MODES.items()}
    seconds = time.perf_counter() - start
    load.append(os.getloadavg()[0])
    command = f"python benchmarks/fsdp_memory.py --steps {args.steps}"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "fsdp_memory.json").write_text(
        json.dumps(
            {
                "command": command,
                "seconds": seconds,
                "load_average": load,
                "threads_per_process": 1,
                "results": results,
            },
            indent=2,
        )
    )
    (args.results / "fsdp_memory.md").write_text(report(results, command, seconds, load))
    print((args.results / "fsdp_memory.md").read_text())


if __name__ == "__main__":
    main()
