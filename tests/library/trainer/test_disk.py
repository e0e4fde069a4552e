"""Disk trouble while training (issue 24 #8): a file-size limit or a full disk is reported as such, with no
traceback and nothing lost; new files and folders get the user's umask; a checkpoint that cannot be pruned
is reported."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

from trapo.cli import main
from trapo.trainer import checkpoint

FLAGS = ["--prompts_per_step", "2", "--max_completion_length", "12", "--learning_rate", "1e-3"]


def _args(setup, out: Path, steps: int, *extra: str) -> list[str]:
    model_dir, data = setup
    return ["train", "--model", str(model_dir), "--data", str(data), "--output", str(out), "--max_steps", str(steps)]


def test_a_file_size_limit_is_reported_as_such_and_loses_nothing(setup, tmp_path):
    out = tmp_path / "run"
    assert main([*_args(setup, out, 1), *FLAGS]) == 0  # checkpoint-1 and final/ written without a limit
    before = sorted(p.name for p in out.iterdir())
    state = (out / "checkpoint-1" / "training_state.pt").stat().st_size
    limit = state // 2  # the next checkpoint's optimizer state cannot be written whole

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "trapo.cli", *_args(setup, out, 2), *FLAGS, "--resume"],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=limited,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "a file would exceed the size limit (ulimit -f" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".trapo")) == sorted(before)
    assert checkpoint.latest_checkpoint(out).name == "checkpoint-1"
    assert not list(out.glob(".*.tmp-*"))  # no half-written directory left behind


def test_outputs_get_the_users_umask(setup, tmp_path):
    old = os.umask(0o022)
    try:
        assert main([*_args(setup, tmp_path / "run", 1), *FLAGS, "--save_steps", "1"]) == 0
    finally:
        os.umask(old)
    for path in (tmp_path / "run" / "final", tmp_path / "run" / "checkpoint-1"):
        assert path.stat().st_mode & 0o777 == 0o755, oct(path.stat().st_mode)
    assert (tmp_path / "run" / "final" / "config.json").stat().st_mode & 0o777 == 0o644


def test_a_checkpoint_that_cannot_be_pruned_is_reported(tmp_path, capsys, monkeypatch):
    old = [tmp_path / "checkpoint-1", tmp_path / "checkpoint-2", tmp_path / "checkpoint-3"]
    for path in old:
        path.mkdir()
        (path / checkpoint.STATE_FILE).write_text("{}")
        (path / ("stuck" if path is old[0] else "f")).write_text("x")
    unlink = os.unlink

    def refuse_stuck(name, *args, **kwargs):
        if str(name).endswith("stuck"):
            raise PermissionError(13, "Permission denied", str(name))
        return unlink(name, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refuse_stuck)
    failures = checkpoint.prune(tmp_path, keep=1)
    assert [f.split(" ")[0] for f in failures] == ["checkpoint-1"]
    err = capsys.readouterr().err
    assert "could not remove 1 old checkpoint(s) beyond save_total_limit 1: checkpoint-1 (stuck:" in err
    assert "Permission denied" in err
    assert old[0].exists() and not old[1].exists() and old[2].exists()
