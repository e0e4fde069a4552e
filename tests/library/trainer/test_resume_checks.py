"""Resume that always has a way forward and checks what it resumes (issue 24 #2, #3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from safetensors.torch import load_file, save_file

from trapo.cli import main
from trapo.trainer import checkpoint

FLAGS = ["--prompts_per_step", "2", "--max_completion_length", "12", "--learning_rate", "1e-3"]


def _args(setup, out, steps, *extra):
    model_dir, data = setup
    return ["train", "--model", str(model_dir), "--data", str(data), "--output", str(out), "--max_steps", str(steps)]


def _train(setup, out, steps, *extra) -> int:
    return main([*_args(setup, out, steps), *FLAGS, *extra])


def _poison(ckpt_dir) -> None:
    f = ckpt_dir / "model.safetensors"
    weights = load_file(f)
    name = next(iter(weights))
    weights[name] = weights[name].clone().fill_(float("nan"))
    save_file(weights, f, metadata={"format": "pt"})


def test_resume_auto_without_a_checkpoint_starts_fresh_keeping_the_old_files(setup, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run_config.json").write_text('{"from": "a run killed before its first checkpoint"}')
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    assert _train(setup, out, 1, "--resume", "auto") == 0
    assert "--resume auto: no checkpoint in" in capsys.readouterr().out
    (aside,) = out.glob("previous-*")
    assert json.loads((aside / "run_config.json").read_text())["from"].startswith("a run killed")
    assert (aside / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert (out / "final").is_dir() and [json.loads(x)["step"] for x in (out / "metrics.jsonl").open()] == [1]
    assert _train(setup, out, 2, "--resume", "auto") == 0  # and now it resumes


def test_a_nan_checkpoint_is_not_resumed_and_the_sound_one_is_not_pruned(setup, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(setup, out, 2, "--save_steps", "1", "--save_total_limit", "2") == 0
    _poison(out / "checkpoint-2")
    assert _train(setup, out, 3, "--save_steps", "1", "--save_total_limit", "2", "--resume") == 0
    captured = capsys.readouterr()
    assert "checkpoint-2 is corrupt" in captured.out and "its weights hold NaN/inf" in captured.out
    assert "resumed from" in captured.out and "checkpoint-1 at step 1" in captured.out
    names = sorted(p.name for p in checkpoint.checkpoints(out))
    assert names == ["checkpoint-2", "checkpoint-3"]  # rewritten from the sound step 1, then pruned to 2
    assert all(bool(t.isfinite().all()) for t in load_file(out / "checkpoint-2" / "model.safetensors").values())


def test_resume_auto_with_only_unusable_checkpoints_starts_fresh(setup, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(setup, out, 1) == 0
    _poison(out / "checkpoint-1")
    assert _train(setup, out, 1, "--resume", "auto") == 0
    assert "its weights hold NaN/inf" in capsys.readouterr().out
    (aside,) = out.glob("previous-*")
    assert (aside / "checkpoint-1").is_dir() and (out / "checkpoint-1").is_dir()


def test_sighup_saves_a_checkpoint_like_sigterm(setup, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trapo.cli", *_args(setup, out, 400), *FLAGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 1) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 129, err[-2000:]
    assert "SIGHUP received: saved a checkpoint at step" in err and "Traceback" not in err
    assert checkpoint.latest_checkpoint(out) is not None
