"""The run: claim or resume the output directory, drive the steps to ``max_steps``, stop, save, log.

The run knows the step (:class:`trapo.trainer.step.TrainingStep`) through two calls, ``training_step(step)``
and, once the step is logged, ``step_counted()``, and one flag, ``_uncounted_update``: whether memory holds an
update the run has not counted (then a crash must not be saved over the last checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from trapo.atomic import atomic_directory
from trapo.config_trl import defaults_notice
from trapo.trainer import checkpoint as ckpt
from trapo.trainer import precision, resume, safety, sharding
from trapo.trainer.metrics import append_jsonl, log_samples, truncate_jsonl
from trapo.trainer.trl_surface import console_line, is_logging_step, tracker_kwargs

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

    from trapo.config import TRAPOConfig
    from trapo.rewards import RewardSet
    from trapo.rollout import RolloutEngine
    from trapo.trainer.data_prep import DataReport
    from trapo.trainer.rollouts import RolloutBatch
    from trapo.trainer.trl_surface import Callbacks


@dataclass
class TrainResult:
    """Where a finished run left its outputs, and its last step's metrics."""

    output_dir: Path
    final_model_dir: Path
    steps: int
    last_metrics: dict[str, float]


class TrainingRun:
    """The run half of :class:`~trapo.trainer.TRAPOTrainer`; its state is built by the trainer's ``__init__``."""

    config: TRAPOConfig
    accelerator: Accelerator
    output_dir: Path
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    update_guard: safety.UpdateGuard
    data_report: DataReport
    step: int
    totals: dict[str, int]
    _signals: safety.SignalGuard
    _unapplied_in_a_row: int
    _reward_failures_in_a_row: int
    _rollback_reason: str
    _reward_error: str
    _last_batch: RolloutBatch | None
    _uncounted_update: bool
    callbacks: Callbacks
    state: Any
    reward_fn: RewardSet
    fingerprint: dict[str, Any]  # data, rewards, expert key (trapo.trainer.resume)
    input_dtype: torch.dtype  # the dtype the model came in: final/'s by default (trapo.trainer.precision)

    unwrapped: torch.nn.Module
    model: torch.nn.Module
    fsdp: bool
    engine: RolloutEngine

    def training_step(self, step: int) -> dict[str, float]:
        """One step (the step half's); returns its metrics."""
        raise NotImplementedError

    def step_counted(self) -> None:
        """The step is logged: its update is part of the run (the step half's)."""
        raise NotImplementedError

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def train(self, resume_from_checkpoint: str | bool | None = None) -> TrainResult:
        """Run to ``config.max_steps``.

        ``resume_from_checkpoint``: True (the latest complete checkpoint in output_dir, falling back to the
        one before when it is unreadable or holds NaN/inf weights), a checkpoint path, or ``"auto"`` (resume
        when output_dir has a usable checkpoint, else set its earlier files aside and start fresh). A fresh
        run refuses an output_dir holding another run unless ``config.overwrite_output_dir``; a resumed one
        refuses a different config or other inputs (see :mod:`.safety`, :mod:`.resume`).

        Raises :class:`~trapo.trainer.safety.Preempted` after saving a checkpoint on SIGTERM / SIGUSR1 / SIGHUP,
        :class:`~trapo.trainer.safety.TrainingStopped` when the run stops itself (failing rewards, NaN/inf,
        rolled-back updates), ``KeyboardInterrupt`` on Ctrl-C (after saving the last finished step).
        """
        safety.check_output_dir(self.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            safety.acquire_lock(self.output_dir)
        try:
            return self._train(resume_from_checkpoint)
        finally:
            if self.is_main:
                safety.release_lock(self.output_dir)

    # ------------------------------------------------------------------ start: resume or claim
    def _start(self, resume_from_checkpoint: str | bool | None) -> None:
        """Resume, or claim the output directory for a fresh run."""
        acc, out = self.accelerator, self.output_dir
        if self.is_main:
            removed = safety.remove_orphans(out)
            if removed:
                acc.print(
                    f"removed {len(removed)} unfinished temporary directories left by a killed run: "
                    f"{', '.join(removed[:3])}"
                )
        auto = resume_from_checkpoint == "auto"
        if auto and not ckpt.checkpoints(out):
            resume.start_afresh(acc, out, f"no checkpoint in {out}", self.is_main)
        elif resume_from_checkpoint:
            try:
                return self._resume(self._load_checkpoint(True if auto else resume_from_checkpoint))
            except resume.NoUsableCheckpoint as err:
                if not auto:
                    raise
                resume.start_afresh(acc, out, str(err), self.is_main)
        self._claim_output_dir()

    def _resume(self, loaded: tuple[Path, dict[str, Any]]) -> None:
        out, (path, state) = self.output_dir, loaded
        if int(state["step"]) > self.config.max_steps:
            raise ValueError(
                f"max_steps {self.config.max_steps} is below the step of the checkpoint resumed ({path.name}, "
                f"step {state['step']}): the run is already past it. Pass max_steps >= {state['step']}"
            )
        self.engine.sync_weights(self.unwrapped)  # an engine with its own copy of the weights (vLLM) gets these
        self.step = int(state["step"])
        self.totals.update(state.get("totals", {}))
        self.update_guard.history = [float(x) for x in state.get("update_history", [])]
        if self.is_main:
            truncate_jsonl(out / "metrics.jsonl", self.step)
            truncate_jsonl(out / "samples.jsonl", self.step)
            (out / "run_config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
        self.accelerator.print(f"resumed from {path} at step {self.step}")

    def _claim_output_dir(self) -> None:
        """A fresh run: refuse a directory holding another run unless ``overwrite_output_dir``."""
        acc, out = self.accelerator, self.output_dir
        acc.wait_for_everyone()  # every process looks before the main one writes run_config.json
        existing = safety.run_files(out)
        acc.wait_for_everyone()
        if existing and not self.config.overwrite_output_dir:
            raise FileExistsError(
                f"output_dir {str(out)!r} holds another run ({', '.join(existing[:6])}); pass --resume to "
                "continue it, --overwrite_output_dir to replace it, or choose another --output_dir"
            )
        if self.is_main:
            if existing:
                safety.clear_run(out)
                acc.print(f"--overwrite_output_dir: removed the previous run in {out}")
            (out / "run_config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
        acc.wait_for_everyone()

    def _checkpoint_candidates(self, which: str | bool) -> list[Path]:
        if which is True:
            candidates = list(reversed(ckpt.checkpoints(self.output_dir)))
            if not candidates:
                raise FileNotFoundError(f"no complete checkpoint to resume from in {self.output_dir}")
            return candidates
        path = Path(which)
        if not (path / ckpt.STATE_FILE).is_file():
            raise FileNotFoundError(f"no complete checkpoint to resume from in {path}")
        return [path]

    def _load_checkpoint(self, which: str | bool) -> tuple[Path, dict[str, Any]]:
        """Load the newest readable checkpoint (or the one named); returns it and its trainer state."""
        failures = []
        for path in self._checkpoint_candidates(which):
            try:
                stored = json.loads((path / ckpt.STATE_FILE).read_text())
            except (OSError, ValueError) as err:
                failures.append(f"{path.name}: unreadable {ckpt.STATE_FILE} ({err})")
                self.accelerator.print(f"warning: {path} is corrupt ({failures[-1]}); trying the one before")
                continue
            differences = safety.config_differences(stored.get("config", {}), self.config.to_dict())
            inputs = resume.fingerprint_differences(stored.get("fingerprint"), self.fingerprint)
            if differences or inputs:
                what = [f"a different config ({'; '.join(differences)})"] if differences else []
                what += [f"other inputs ({'; '.join(inputs)})"] if inputs else []
                raise ValueError(
                    f"cannot resume {path}: it was trained with {' and '.join(what)}. "
                    "Use the same settings (only max_steps, logging, saving and reward limits may change), "
                    "or start a new run with --overwrite_output_dir / another --output_dir"
                )
            try:
                if self.fsdp:
                    state = sharding.load_checkpoint(self.model, self.optimizer, self.scheduler, path)
                else:
                    blob = ckpt.read_training_state(path)  # read everything before changing anything
                    ckpt.load_weights(self.unwrapped, path)  # refuses NaN/inf weights
                    state = ckpt.load_training_state(path, self.optimizer, self.scheduler, blob)
            except Exception as err:  # a truncated, garbled or NaN checkpoint: fall back to the previous one
                failures.append(f"{path.name}: {type(err).__name__}: {str(err)[:200]}")
                self.accelerator.print(f"warning: {path} is corrupt ({failures[-1]}); trying the one before")
                continue
            if failures:
                self.accelerator.print(f"resuming from {path.name} instead of the corrupt newer checkpoint(s)")
            return path, state
        raise resume.NoUsableCheckpoint(
            f"no readable checkpoint to resume from in {self.output_dir}: {'; '.join(failures)}"
        )

    # ------------------------------------------------------------------ the loop
    def _train(self, resume_from_checkpoint: str | bool | None) -> TrainResult:
        cfg, acc = self.config, self.accelerator
        self._start(resume_from_checkpoint)
        if cfg.report_to:
            acc.init_trackers(**tracker_kwargs(cfg))
        acc.print(f"data: {self.data_report.summary()}")
        if defaults_notice(cfg):
            acc.print(defaults_notice(cfg))
        self.state.global_step = self.step
        self.callbacks.fire("on_train_begin")
        disable = not self.is_main or bool(cfg.disable_tqdm)
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=disable, desc=f"{cfg.method}", dynamic_ncols=True)
        last: dict[str, float] = {}
        last_save = time.monotonic()
        with self._signals:
            try:
                while self.step < cfg.max_steps and not self.callbacks.should_stop:
                    self.callbacks.fire("on_step_begin")
                    last = self.training_step(self.step)
                    self.step = self.state.global_step = self.step + 1
                    self.state.epoch, self.state.num_input_tokens_seen = last["epoch"], int(last["num_tokens"])
                    self._log_step(last, bar)
                    self._check_stop(last)
                    self.callbacks.fire("on_step_end")
                    last_save = self._save_when_due(last_save)
            except safety.Preempted:
                raise
            except BaseException as err:
                self._on_crash(err)
                raise
            finally:
                bar.close()
        return self._finish(last)

    def _log_step(self, last: dict[str, float], bar: Any) -> None:
        """Write the step's metrics and samples, count it, then show it."""
        cfg, logs = self.config, is_logging_step(self.config, self.step)
        if self.is_main:
            if logs:
                append_jsonl(self.output_dir / "metrics.jsonl", [{"step": self.step, **last}])
            samples = cfg.sample_log_steps and self.step % cfg.sample_log_steps == 0
            if (samples or (logs and cfg.log_completions)) and not last["sft_step"]:
                log_samples(self._last_batch, self.tokenizer, self.step, self.output_dir / "samples.jsonl")
        self.step_counted()
        self._signals.leave_critical()  # a Ctrl-C held during the update is raised here
        if self.is_main:
            self._report_problems(last, bar)
            bar.set_postfix({k: f"{last[k]:.3g}" for k in ("reward/unguided", "loss/total", "entropy") if k in last})
            bar.update(1)
            if logs:
                bar.write(console_line(self.step, cfg.max_steps, last))
        if logs:
            self.callbacks.log(self.step, last)
        if cfg.report_to:
            self.accelerator.log(last, step=self.step)

    def _save_when_due(self, last_save: float) -> float:
        """Checkpoint and stop on SIGTERM / SIGUSR1 / SIGHUP; checkpoint every save_steps / save_minutes. Returns the
        time of the last save."""
        cfg, stop = self.config, self._signals.stop_signal
        if self._any_process(stop is not None):
            self.save_checkpoint()
            raise safety.Preempted(stop or signal.SIGTERM, self.step, self.output_dir)
        due = cfg.save_strategy == "steps" and bool(cfg.save_steps and self.step % cfg.save_steps == 0)
        due = due or bool(cfg.save_minutes and time.monotonic() - last_save >= 60 * cfg.save_minutes)
        if self.step < cfg.max_steps and (self._any_process(due) or self.callbacks.control.should_save):
            self.callbacks.control.should_save = False
            self.save_checkpoint()
            return time.monotonic()
        return last_save

    def _on_crash(self, err: BaseException) -> None:
        """Nothing lost on a crash or Ctrl-C: save the last finished step, unless memory holds a half-done one."""
        self._signals.leave_critical_quietly()
        if self._uncounted_update:  # saving it would repeat the update on resume
            self.accelerator.print(
                f"\ninterrupted in the middle of an update: not saving it; the last checkpoint in "
                f"{self.output_dir} is the place to --resume from"
            )
        elif self.step > 0 and not resume.nonfinite_weights(self.unwrapped):  # NaN weights: the error stands
            self.save_checkpoint()
            what = "stopped" if isinstance(err, safety.TrainingStopped) else "interrupted"
            self.accelerator.print(
                f"\n{what}: saved a checkpoint at step {self.step} in {self.output_dir}; "
                "rerun with --resume to continue"
            )

    def _finish(self, last: dict[str, float]) -> TrainResult:
        self.save_checkpoint()
        skipped = self.totals["nonfinite_steps"] + self.totals["rolled_back_steps"]
        if skipped:
            self.accelerator.print(
                f"warning: {skipped} of {self.step} steps were not applied ({self.totals['nonfinite_steps']} "
                f"NaN/inf, {self.totals['rolled_back_steps']} rolled back as out of range)"
            )
        if skipped >= self.step:
            raise safety.TrainingStopped(
                f"no step of the run was applied ({skipped} skipped or rolled back); no final model written. "
                "Lower learning_rate or check the data and reward"
            )
        final = self.save_final()
        self.callbacks.fire("on_train_end")
        if self.config.report_to:
            self.accelerator.end_training()
        return TrainResult(self.output_dir, final, self.step, last)

    def _any_process(self, flag: bool) -> bool:
        """True when ``flag`` is true on any process (every process gets the same answer)."""
        if self.accelerator.num_processes == 1:
            return flag
        import torch

        t = torch.tensor([float(flag)], dtype=torch.float64, device=self.accelerator.device)
        return bool(self.accelerator.reduce(t, reduction="sum").cpu()[0] > 0)

    # ------------------------------------------------------------------ stop conditions
    def _report_problems(self, last: dict[str, float], bar: Any) -> None:
        """Reward failures and skipped updates of the step just taken, on the console."""
        notes = []
        if last.get("reward/failed", 0) > 0:
            kinds = ", ".join(
                f"{k.removeprefix('reward/failed_')} {last[k]:.0%}"
                for k in sorted(last)
                if k.startswith("reward/failed_") and last[k] > 0
            )
            notes.append(
                f"{last['reward/failed']:.0%} of rewards failed ({kinds})"
                + (f": {self._reward_error}" if self._reward_error else "")
            )
        if last.get("skipped_nonfinite"):
            notes.append("update skipped: NaN/inf loss or gradient")
        if last.get("rolled_back"):
            notes.append(f"update not applied: {self._rollback_reason}")
        if notes:
            bar.write(f"step {self.step}: " + "; ".join(notes))

    def _check_stop(self, last: dict[str, float]) -> None:
        cfg = self.config
        if self._unapplied_in_a_row >= cfg.max_nonfinite_steps:
            raise safety.TrainingStopped(
                f"{self._unapplied_in_a_row} steps in a row had a NaN/inf loss or gradient or an update out of "
                f"range (last at step {self.step}); stopping. Lower learning_rate, check the data, or raise "
                "max_nonfinite_steps."
            )
        if last.get("sft_step"):
            return
        failed = last.get("reward/failed", 0.0)
        self._reward_failures_in_a_row = (
            self._reward_failures_in_a_row + 1 if failed >= cfg.max_reward_failure_share - 1e-9 else 0
        )
        if cfg.max_reward_failure_steps and self._reward_failures_in_a_row >= cfg.max_reward_failure_steps:
            raise safety.TrainingStopped(
                f"the reward failed on {failed:.0%} of the rollouts for {self._reward_failures_in_a_row} steps in "
                f"a row (last at step {self.step}; {self._reward_error or 'see the step lines above'}); stopping. "
                "Fix the reward function or the ground truths (max_reward_failure_share / "
                "max_reward_failure_steps set this rule)."
            )

    # ------------------------------------------------------------------ outputs
    def save_checkpoint(self) -> None:
        bad = resume.nonfinite_weights(self.unwrapped)
        if bad:  # never written over (nor pruning) a sound checkpoint
            raise safety.TrainingStopped(
                f"the weights hold NaN/inf at step {self.step} ({', '.join(bad)}); not saved, no checkpoint "
                f"pruned: --resume continues from the last sound one in {self.output_dir}"
            )
        self.accelerator.wait_for_everyone()
        state = {
            "totals": dict(self.totals),
            "config": self.config.to_dict(),
            "update_history": self.update_guard.history,
            "fingerprint": self.fingerprint,
        }
        parts = (self.output_dir, self.step, self.unwrapped, self.tokenizer, self.optimizer, self.scheduler, state)
        if self.fsdp:  # every process takes part: the weights are gathered, the optimizer state written sharded
            sharding.save_checkpoint(*parts, keep=self.config.save_total_limit, is_main=self.is_main)
        elif self.is_main:
            ckpt.save_checkpoint(*parts, keep=self.config.save_total_limit)
        self.accelerator.wait_for_everyone()
        self.callbacks.fire("on_save")

    def save_model(self, output_dir: str | os.PathLike | None = None, merged: bool = False) -> Path:
        """Save the model and tokenizer to ``output_dir`` (default ``args.output_dir``), as TRL does: a LoRA
        run saves its adapter (``merged=True``: the model with LoRA merged in). A directory that exists (the
        run's own output_dir) gets the files beside what it holds; a new one is written whole or not at all."""
        return self.save_final(Path(output_dir) if output_dir is not None else self.output_dir, merged=merged)

    def end(self) -> None:
        """Release what the run holds beyond ``train()``: the reward worker processes (TRL's ``end()``)."""
        self.reward_fn.close()

    def save_final(self, final: Path | None = None, merged: bool = True) -> Path:
        """The trained model (LoRA merged in unless ``merged=False``: then the adapter) with its tokenizer,
        loadable with ``from_pretrained`` (default: ``output_dir/final``, written through a temporary directory
        renamed at the end)."""
        final = final if final is not None else self.output_dir / "final"
        self.accelerator.wait_for_everyone()
        weights = sharding.full_state_dict(self.model) if self.fsdp else None  # gathered to the main process
        if self.is_main:
            model = self.unwrapped
            if merged and hasattr(model, "merge_and_unload"):
                import copy

                model = copy.deepcopy(model).merge_and_unload()
            dtype = precision.resolve_save_dtype(self.config.save_dtype, self.input_dtype)
            with contextlib.nullcontext(final) if final.is_dir() else atomic_directory(final) as target:
                if weights is None:
                    precision.save_pretrained_as(model, target, dtype)
                else:  # --fsdp: the gathered whole state dict, in float32
                    model.save_pretrained(target, state_dict=weights)
                self.tokenizer.save_pretrained(target)
        self.accelerator.wait_for_everyone()
        return final
