"""``trapo train`` argument lists for the trainer tests: the command's set-up spelled in one place."""

from __future__ import annotations

from pathlib import Path


def train_argv(model: Path | str, data: Path | str, out: Path | str, *flags: str, **options: object) -> list[str]:
    """``trapo train --model MODEL --data DATA --output OUT``, then ``flags`` as typed, then ``--name value`` for
    each of ``options`` (a list or tuple gives several values: ``lora_target_modules=("q_proj", "v_proj")``)."""
    argv = ["train", "--model", str(model), "--data", str(data), "--output", str(out), *flags]
    for name, value in options.items():
        argv += [f"--{name}", *(map(str, value) if isinstance(value, list | tuple) else [str(value)])]
    return argv
