"""Run by tests/library/trainer/test_distributed.py and test_fsdp.py under ``torchrun`` (and in-process for
1 process): ``dist_worker.py OUT METHOD [METHOD ...] [--fsdp full_shard] [--max_steps N] ...``."""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch
from transformers import Qwen2ForCausalLM

from trapo.config import TRAPOConfig
from trapo.data import Example
from trapo.trainer import TRAPOTrainer
from trapo.trainer.sharding import element_counts
from trapo_lab.models.config import tiny_config
from trapo_lab.models.tokenizer import build_tokenizer

ROWS = [
    Example(
        prompt=[{"role": "user", "content": f"{a}+{b}"}],
        answer=str(a + b),
        expert_solutions=(f"{a}+{b}={a + b}\n\nso {a + b}\n\n\\boxed{{{a + b}}}",),
    )
    for a, b in ((3, 4), (5, 9), (12, 7), (8, 8))
]


class _Trainer(TRAPOTrainer):
    kill_at: int | None = None

    def training_step(self, step: int) -> dict[str, float]:
        if step == self.kill_at:  # the whole job lost mid-run, as by the OOM killer: torchrun and every process
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return super().training_step(step)


def run(method: str, out: Path, kill_at: int | None = None, resume: bool = False, **overrides) -> Path:
    torch.set_num_threads(1)
    tok = build_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(
        tiny_config(
            len(tok),
            hidden_size=32,
            num_layers=2,
            num_heads=2,
            intermediate_size=64,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    settings = {
        "max_steps": 2,
        "prompts_per_step": 4,
        "max_completion_length": 24,
        "temperature": 0.0,
        "learning_rate": 1e-2,
        "sample_log_steps": 0,
        "loss_normalization": "token_mean",
        "seed": 0,
    }
    cfg = TRAPOConfig(method=method, output_dir=str(out / method), **{**settings, **overrides})
    trainer = _Trainer(model, processing_class=tok, train_dataset=ROWS, args=cfg)
    trainer.kill_at = kill_at
    final = trainer.train(resume_from_checkpoint=resume or None).final_model_dir
    local, total = element_counts(trainer.model)
    rank = trainer.accelerator.process_index
    (out / method / f"elements-{rank}.json").write_text(json.dumps({"local": local, "total": total}))
    if trainer.is_main:
        (out / method / "processes.txt").write_text(str(trainer.accelerator.num_processes))
    return final


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("methods", nargs="+")
    parser.add_argument("--fsdp", default="")
    parser.add_argument("--max_steps", type=int, default=2)
    parser.add_argument("--save_steps", type=int, default=0)
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--prompts_per_step", type=int, default=4)
    parser.add_argument("--mini_batch_size", type=int, default=64)
    parser.add_argument("--kill_at", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    for name in args.methods:
        run(
            name,
            args.out,
            kill_at=args.kill_at,
            resume=args.resume,
            fsdp=args.fsdp,
            max_steps=args.max_steps,
            save_steps=args.save_steps,
            beta=args.beta,
            prompts_per_step=args.prompts_per_step,
            mini_batch_size=args.mini_batch_size,
            bf16=args.bf16,
        )
