"""A run that is preempted, reused, fed a broken reward or blown up loses nothing and says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trapo.cli import main
from trapo.config import TRAPOConfig
from trapo.data import load_examples, write_examples
from trapo.trainer import TRAPOTrainer
from trapo.trainer.safety import LOCK_FILE, TrainingStopped

FLAGS = ["--prompts_per_step", "2", "--max_completion_length", "24", "--learning_rate", "1e-3"]


def _train_args(setup, out, steps, *extra):
    model_dir, data = setup
    return [
        "train",
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--output",
        str(out),
        "--max_steps",
        str(steps),
        *FLAGS,
        *extra,
    ]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


def _same(a, b) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def _steps(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def _subprocess(args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-m", "trapo.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )


def _wait_for(predicate, timeout=120.0):
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError
        time.sleep(0.05)


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_is_exact(tmp_path, setup):
    steps = 12
    assert main(_train_args(setup, tmp_path / "full", steps)) == 0
    out = tmp_path / "cut"
    proc = _subprocess(_train_args(setup, out, steps), tmp_path)
    metrics = out / "metrics.jsonl"
    _wait_for(lambda: (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2) or proc.poll() is not None)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM received: saved a checkpoint at step" in err and "Traceback" not in err
    saved = [p.name for p in out.glob("checkpoint-*")]
    assert len(saved) == 1 and not (out / "final").exists() and not (out / LOCK_FILE).exists()
    assert main(_train_args(setup, out, steps, "--resume", "auto")) == 0
    _same(_weights(tmp_path / "full"), _weights(out))
    assert _steps(out) == list(range(1, steps + 1))


def test_two_runs_cannot_share_a_directory(tmp_path, setup, capsys):
    out = tmp_path / "run"
    first = _subprocess(_train_args(setup, out, 400), tmp_path)
    _wait_for(lambda: (out / "metrics.jsonl").is_file() or first.poll() is not None)
    assert main(_train_args(setup, out, 2)) == 2
    assert f"is in use by another trapo process (pid {first.pid}" in capsys.readouterr().err
    assert main(_train_args(setup, out, 2, "--resume")) == 2  # resuming does not bypass the lock either
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    assert first.returncode == 143
    steps = _steps(out)
    assert steps == list(range(1, len(steps) + 1))  # the first run's log, untouched
    # a lock left by a process that is gone is taken over
    (out / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename}))
    assert main(_train_args(setup, out, len(steps) + 1, "--resume")) == 0
    assert not (out / LOCK_FILE).exists()


def test_a_fresh_run_refuses_another_runs_directory_unless_told(tmp_path, setup, capsys):
    out = tmp_path / "run"
    assert main(_train_args(setup, out, 2)) == 0
    before = (out / "metrics.jsonl").read_text()
    assert main(_train_args(setup, out, 3)) == 2
    err = capsys.readouterr().err
    assert "holds another run" in err and "--overwrite_output_dir" in err and "Traceback" not in err
    assert (out / "metrics.jsonl").read_text() == before and (out / "final").is_dir()
    assert main(_train_args(setup, out, 3, "--resume", "--seed", "7", "--learning_rate", "0.01")) == 2
    err = capsys.readouterr().err
    assert "learning_rate: 0.001 -> 0.01" in err and "seed: 0 -> 7" in err
    assert main(_train_args(setup, out, 1, "--overwrite_output_dir")) == 0
    assert _steps(out) == [1] and sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]


def test_resume_auto_starts_fresh_then_resumes(tmp_path, setup, capsys):
    out = tmp_path / "run"
    assert main(_train_args(setup, out, 1, "--resume", "auto")) == 0
    assert "no checkpoint" in capsys.readouterr().out
    assert main(_train_args(setup, out, 2, "--resume", "auto")) == 0
    assert "resumed from" in capsys.readouterr().out and _steps(out) == [1, 2]


def _small(tmp_path, name="run", **kw) -> TRAPOConfig:
    base = dict(
        output_dir=str(tmp_path / name),
        max_steps=4,
        prompts_per_step=2,
        max_completion_length=24,
        learning_rate=1e-3,
        sample_log_steps=1,
        seed=0,
        lr_scheduler_type="cosine",
        warmup_steps=1,
    )
    base.update(kw)
    return TRAPOConfig(**base)


def test_ctrl_c_between_the_optimizer_step_and_the_count_waits_for_the_step(tmp_path, tokenizer, rows, make_model):
    """A Ctrl-C right after an optimizer step is held until the step is counted: the checkpoint then holds
    exactly the steps it says, and the resumed run is not one step ahead (a double-applied update)."""
    full = TRAPOTrainer(
        make_model(tokenizer), processing_class=tokenizer, train_dataset=rows, args=_small(tmp_path, "full")
    ).train()
    trainer = TRAPOTrainer(
        make_model(tokenizer), processing_class=tokenizer, train_dataset=rows, args=_small(tmp_path, "cut")
    )
    sync, calls = trainer.engine.sync_weights, {"n": 0}

    def ctrl_c_after_the_third_update(model):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the weights of step 3 are in, the step is not counted yet
        sync(model)

    trainer.engine.sync_weights = ctrl_c_after_the_third_update
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert (tmp_path / "cut" / "checkpoint-3").is_dir() and _steps(tmp_path / "cut") == [1, 2, 3]
    resumed = TRAPOTrainer(
        make_model(tokenizer, seed=5), processing_class=tokenizer, train_dataset=rows, args=_small(tmp_path, "cut")
    ).train(resume_from_checkpoint=True)
    _same(
        load_file(full.final_model_dir / "model.safetensors"), load_file(resumed.final_model_dir / "model.safetensors")
    )


def test_an_error_between_the_optimizer_step_and_the_count_saves_nothing(tmp_path, tokenizer, rows, model, capsys):
    trainer = TRAPOTrainer(model, processing_class=tokenizer, train_dataset=rows, args=_small(tmp_path))

    def broken_engine(model):
        raise RuntimeError("engine lost")

    trainer.engine.sync_weights = broken_engine
    with pytest.raises(RuntimeError, match="engine lost"):
        trainer.train()
    assert "not saving it" in capsys.readouterr().out and not list((tmp_path / "run").glob("checkpoint-*"))


def test_the_update_guard_predicts_adamw_exactly(tmp_path, tokenizer, rows, model):
    trainer = TRAPOTrainer(
        model,
        processing_class=tokenizer,
        train_dataset=rows,
        args=_small(tmp_path, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.1),
    )
    for step in range(2):
        trainer.optimizer.zero_grad()
        trainer.update(trainer.rollout(step), trainer.advantages(trainer.rollout(step)), _metrics())
        params = [p for p in model.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in params]
        sums = trainer.update_guard._sums(trainer.optimizer)
        trainer.optimizer.step()
        diff = sum(float((p.detach().double() - q.double()).pow(2).sum()) for p, q in zip(params, before, strict=True))
        assert diff == pytest.approx(float(sums[0]), rel=1e-4)


def _metrics():
    from trapo.trainer.metrics import Metrics

    return Metrics()


def test_resume_falls_back_past_a_corrupt_checkpoint_and_a_cut_metrics_line(
    tmp_path, tokenizer, rows, make_model, capsys
):
    def cfg(name, **kw):  # a constant schedule: the 3-step run is the 4-step run's beginning
        return _small(
            tmp_path, name, lr_scheduler_type="constant", warmup_steps=0, save_steps=1, save_total_limit=0, **kw
        )

    full = TRAPOTrainer(make_model(tokenizer), processing_class=tokenizer, train_dataset=rows, args=cfg("full")).train()
    TRAPOTrainer(
        make_model(tokenizer), processing_class=tokenizer, train_dataset=rows, args=cfg("cut", max_steps=3)
    ).train()
    out = tmp_path / "cut"
    (out / "checkpoint-3" / "model.safetensors").write_bytes(b"\0" * 100)  # corrupt the newest
    (out / ".checkpoint-4.tmp-abc").mkdir()  # what a kill during a checkpoint write leaves
    (out / ".checkpoint-4.tmp-abc" / "model.safetensors").write_bytes(b"x")
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "loss/to')  # a line cut off by the kill
    capsys.readouterr()
    resumed = TRAPOTrainer(
        make_model(tokenizer), processing_class=tokenizer, train_dataset=rows, args=cfg("cut")
    ).train(resume_from_checkpoint=True)
    printed = capsys.readouterr().out
    assert "checkpoint-3 is corrupt" in printed and "resuming from checkpoint-2" in printed
    assert "removed 1 unfinished temporary" in printed and not list(out.glob(".*.tmp-*"))
    _same(
        load_file(full.final_model_dir / "model.safetensors"), load_file(resumed.final_model_dir / "model.safetensors")
    )
    assert _steps(out) == [1, 2, 3, 4]


def test_an_exploding_update_is_rolled_back_and_nothing_garbage_is_saved(tmp_path, tokenizer, rows, make_model):
    model = make_model(tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = TRAPOTrainer(
        model,
        processing_class=tokenizer,
        train_dataset=rows,
        args=_small(tmp_path, learning_rate=1e6, max_steps=5, lr_scheduler_type="constant", warmup_steps=0),
    )
    with pytest.raises(TrainingStopped, match="3 steps in a row"):
        trainer.train()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # never applied
    assert not (tmp_path / "run" / "final").exists()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["rolled_back"] for x in lines] == [1.0, 1.0, 1.0]
    assert not trainer.optimizer.state  # nothing was applied, so the optimizer has no state yet


def test_an_outlier_update_is_rolled_back_against_the_recent_range(tmp_path, tokenizer, rows, model):
    trainer = TRAPOTrainer(
        model,
        processing_class=tokenizer,
        train_dataset=rows,
        args=_small(tmp_path, max_steps=8, lr_scheduler_type="constant", warmup_steps=0),
    )
    trainer.update_guard.history = [1e-6] * 10  # recent steps were tiny: a normal one is now 'far outside'
    metrics = trainer.training_step(0)
    assert metrics["rolled_back"] == 1.0 and "median" in trainer._rollback_reason
    assert trainer.totals["rolled_back_steps"] == 1


def test_a_reward_that_always_fails_stops_the_run_with_a_clear_message(tmp_path, tokenizer, rows, model, capsys):
    def broken(completions, examples):
        return ["n/a"] * len(completions)

    cfg = _small(tmp_path, max_steps=10, max_reward_failure_steps=2)
    with pytest.raises(TrainingStopped, match=r"the reward failed on 100% of the rollouts for 2 steps in a row"):
        TRAPOTrainer(model, processing_class=tokenizer, train_dataset=rows, args=cfg, reward_fn=broken).train()
    printed = capsys.readouterr().out
    assert "step 1: 100% of rewards failed (non_number 100%)" in printed and "not a number" in printed
    assert (tmp_path / "run" / "checkpoint-2").is_dir()


def test_a_data_directory_trains_on_its_training_files_once(tmp_path, rows):
    for split, part in (("train", rows[:4]), ("val", rows[4:5]), ("test", rows[5:]), ("val_skills", rows[:1])):
        write_examples(part, tmp_path / f"{split}.parquet")
        write_examples(part, tmp_path / f"{split}.jsonl")
    loaded = load_examples(tmp_path, split="train")
    assert len(loaded) == 4 and [Path(f).name for f in loaded.files] == ["train.parquet"]
    assert "skipped as copies" in loaded.summary() and "not test.parquet" in loaded.summary()
    assert len(load_examples(tmp_path)) == 4 + 1 + 1 + 1  # no split asked: every file, each format once
    (tmp_path / "train.parquet").unlink()
    (tmp_path / "train.jsonl").unlink()
    with pytest.raises(ValueError, match="has no train files"):
        load_examples(tmp_path, split="train")


def test_time_based_checkpoints(tmp_path, tokenizer, rows, model):
    cfg = _small(tmp_path, max_steps=3, save_minutes=1e-9, save_total_limit=0)  # due after every step
    TRAPOTrainer(model, processing_class=tokenizer, train_dataset=rows, args=cfg).train()
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == [f"checkpoint-{i}" for i in (1, 2, 3)]
    assert TRAPOConfig().save_minutes == 10.0  # on by default: a SIGKILL loses minutes, not the run
