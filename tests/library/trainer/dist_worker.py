"""Run by tests/trainer/test_distributed.py under ``accelerate launch`` (and in-process for 1 process)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import Qwen2ForCausalLM

from trapo.config import TRAPOConfig
from trapo.data import Example
from trapo.trainer import TRAPOTrainer
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


def run(method: str, out: Path) -> Path:
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
    cfg = TRAPOConfig(
        method=method,
        output_dir=str(out / method),
        max_steps=2,
        prompts_per_step=4,
        max_completion_length=24,
        temperature=0.0,
        learning_rate=1e-2,
        sample_log_steps=0,
        loss_normalization="token_mean",
        seed=0,
    )
    trainer = TRAPOTrainer(model, processing_class=tok, train_dataset=ROWS, args=cfg)
    final = trainer.train().final_model_dir
    if trainer.is_main:
        (out / method / "processes.txt").write_text(str(trainer.accelerator.num_processes))
    return final


if __name__ == "__main__":
    for method in sys.argv[2:]:
        run(method, Path(sys.argv[1]))
