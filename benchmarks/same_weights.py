"""Fixed-seed 5-step runs of four methods; prints the sha256 of each run's final/model.safetensors.

A refactor that claims "behaviour unchanged" runs this before and after and compares the hashes:
    python benchmarks/same_weights.py WORKDIR [--steps 5]
The tiny model (tests/conftest.py's factory) and data (hand-made rows) are rebuilt identically each time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_tiny_model

from trapo.cli import main
from trapo.data import Example, write_examples

METHODS = ("trapo", "luffy", "sft-then-grpo", "trapo-sft")


def rows(n: int = 6) -> list[Example]:
    out = []
    for i in range(n):
        a, b = 3 + i, 4 + 2 * i
        solutions = (
            f"{a}+{b}={a + b}\n\nso we have {a + b}\n\ncheck: yes\n\n\\boxed{{{a + b}}}",
            f"\\boxed{{{a + b}}}",
        )
        out.append(Example([{"role": "user", "content": f"{a}+{b}"}], str(a + b), solutions, data_source="toy"))
    return out


def main_(argv: list[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = make_tiny_model(args.workdir / "model")
    data = args.workdir / "train.jsonl"
    write_examples(rows(), data)
    hashes = {}
    for method in METHODS:
        out = args.workdir / method
        flags = ["--method", method, "--max_steps", str(args.steps), "--seed", "0", "--threads", "1"]
        flags += ["--prompts_per_step", "2", "--max_completion_length", "24", "--overwrite_output_dir"]
        rc = main(["train", "--model", str(model), "--data", str(data), "--output", str(out), *flags])
        assert rc == 0, f"{method}: exit {rc}"
        hashes[method] = hashlib.sha256((out / "final" / "model.safetensors").read_bytes()).hexdigest()
    print(json.dumps(hashes, indent=1))
    return hashes


if __name__ == "__main__":
    main_()
