"""What keeps a run from losing work or doing damage: the output directory's owner, signals, the update guard.

- The output directory belongs to one run (:mod:`trapo.trainer.run` applies these). A fresh run refuses a
  directory that holds another run's files (:func:`run_files`) unless ``overwrite_output_dir``
  (:func:`clear_run`); a resumed run must have the stored config (:func:`config_differences`, apart from
  :data:`MAY_CHANGE_ON_RESUME`). A lock file (``.trapo.lock``: an ``flock`` naming the PID and host, see
  :mod:`trapo.locking`; :func:`acquire_lock`) stops a second process; the lock of a process that ended is free.
- :class:`SignalGuard`: SIGTERM, SIGUSR1 (what Slurm, Kubernetes and ``timeout`` send before the end) and
  SIGHUP (a closed terminal or ssh session) ask
  the loop to checkpoint and stop at the next step boundary; SIGINT (Ctrl-C) raises ``KeyboardInterrupt`` as
  usual, except inside the few lines between the optimizer step and the step counter, where it waits for
  their end (so a checkpoint never holds an update its step count does not).
- :class:`UpdateGuard`: an optimizer step whose relative size ``|dw| / |w|`` would be non-finite, above an
  absolute bound, or far above the run's recent steps is not applied (judged from the gradients and the
  optimizer state before the step, so nothing needs undoing).
"""

from __future__ import annotations

import math
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trapo.locking import FileLock
from trapo.trainer.sharding import local

LOCK_FILE = ".trapo.lock"
RUN_FILES = ("run_config.json", "metrics.jsonl", "samples.jsonl", "final")
# Config fields a resumed run may change: how long to run, how often to log/save, where to report.
MAY_CHANGE_ON_RESUME = frozenset(
    {
        "output_dir",
        "max_steps",
        "logging_steps",
        "save_steps",
        "save_minutes",
        "save_total_limit",
        "sample_log_steps",
        "report_to",
        "max_nonfinite_steps",
        "generation_batch_size",
        "overwrite_output_dir",
        "reward_timeout",
        "max_reward_failure_share",
        "max_reward_failure_steps",
        "update_guard_factor",
        "max_update_ratio",
        "strict",
        "save_dtype",
    }
)
# Exit codes of ``trapo train`` besides 0 (done) and 2 (a user error, nothing trained).
EXIT_STOPPED = 3  # the run stopped itself (rewards failing, NaN/inf, every step rolled back); see the message
EXIT_INTERRUPTED = 130  # Ctrl-C: the last finished step was saved
# SIGTERM / SIGUSR1 / SIGHUP: 128 + the signal number (143 / 138 / 129), after saving a checkpoint.


class TrainingStopped(RuntimeError):
    """The run stopped itself with a reason the user must act on (the message says which)."""


class Preempted(Exception):
    """SIGTERM / SIGUSR1 / SIGHUP arrived; a checkpoint was saved at the step boundary that followed."""

    def __init__(self, signum: int, step: int, output_dir: Path):
        self.signum, self.step, self.output_dir = signum, step, output_dir
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} received: saved a checkpoint at step {step} in {output_dir}; "
            f"rerun with --resume (or --resume auto) to continue"
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# ---------------------------------------------------------------------------------------- the directory
_LOCKS: dict[Path, FileLock] = {}


def acquire_lock(output_dir: Path) -> Path:
    """Lock ``output_dir`` for this process (:class:`trapo.locking.FileLock` on ``output_dir/.trapo.lock``);
    ``FileExistsError`` naming the holder's host and PID when another process holds it."""
    lock = FileLock(output_dir / LOCK_FILE, f"{output_dir}").acquire()
    _LOCKS[lock.path] = lock
    return lock.path


def release_lock(output_dir: Path) -> None:
    lock = _LOCKS.pop(output_dir / LOCK_FILE, None)
    if lock is not None:
        lock.release()


def config_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"name: stored -> current"`` for every field that differs and may not change on resume."""
    out = []
    for name in sorted(set(stored) | set(current)):
        if name in MAY_CHANGE_ON_RESUME or name not in current:
            continue  # a field this version does not know is ignored
        if name in stored and stored[name] != current[name]:
            out.append(f"{name}: {stored[name]!r} -> {current[name]!r}")
    return out


def run_files(output_dir: Path) -> list[str]:
    """Names of the files in ``output_dir`` that belong to a run (metrics, checkpoints, final model ...)."""
    if not output_dir.is_dir():
        return []
    return sorted(p.name for p in output_dir.iterdir() if p.name in RUN_FILES or p.name.startswith("checkpoint-"))


def clear_run(output_dir: Path) -> None:
    """Remove a previous run's files (``overwrite_output_dir``)."""
    for name in run_files(output_dir):
        path = output_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def remove_orphans(output_dir: Path) -> list[str]:
    """Remove temporary directories a killed process left behind (``.checkpoint-N.tmp-*``, ``.final.tmp-*``)."""
    removed = []
    for p in output_dir.glob(".*.tmp-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"output_dir {str(output_dir)!r} is a file, not a directory")


# ---------------------------------------------------------------------------------------- signals
class SignalGuard:
    """Installs the handlers (main thread only) for the length of a ``with`` block; see the module docstring."""

    STOP_SIGNALS = tuple(
        getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGHUP") if hasattr(signal, name)
    )  # SIGHUP: the terminal or ssh session went away

    def __init__(self) -> None:
        self.stop_signal: int | None = None
        self._critical = False
        self._pending_interrupt = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in self.STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_stop)
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_interrupt)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _on_stop(self, signum, frame) -> None:
        self.stop_signal = signum

    def _on_interrupt(self, signum, frame) -> None:
        if self._critical:
            self._pending_interrupt = True
            return
        raise KeyboardInterrupt

    def enter_critical(self) -> None:
        self._critical = True

    def leave_critical_quietly(self) -> None:
        """Leave the critical section dropping a held Ctrl-C (the run is ending anyway)."""
        self._critical = self._pending_interrupt = False

    def leave_critical(self) -> None:
        self._critical = False
        if self._pending_interrupt:
            self._pending_interrupt = False
            raise KeyboardInterrupt


# ---------------------------------------------------------------------------------------- the update guard
class UpdateGuard:
    """Judge an AdamW step *before* it is taken, from the gradients and the optimizer state.

    The step's size is ``|dw| / |w|`` over all trained parameters (``dw`` is what AdamW would subtract:
    the bias-corrected ``m / (sqrt(v) + eps)`` times the lr, plus the decoupled weight decay), divided by
    the learning rate so that a warm-up or a decay does not look like an anomaly. A step is refused (not
    applied: weights and optimizer state stay as they were) when it would make weights NaN/inf, when the
    relative change exceeds ``max_ratio``, or when its lr-normalised size is more than ``factor`` times the
    median of the last ``window`` accepted steps (once ``min_history`` are known). Nothing is copied: the
    check costs one extra elementwise pass over the parameters, in chunks of ``chunk`` elements.
    """

    def __init__(self, factor: float, max_ratio: float, window: int = 20, min_history: int = 5, chunk: int = 1 << 24):
        self.factor, self.max_ratio, self.window, self.min_history = factor, max_ratio, window, min_history
        self.chunk = chunk
        self.history: list[float] = []

    @property
    def enabled(self) -> bool:
        return self.factor > 0 or self.max_ratio > 0

    def _sums(self, optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
        """[sum dw^2, sum w^2] of the AdamW step ``optimizer`` would take (None: not AdamW-like)."""
        sums = torch.zeros(2, dtype=torch.float64)
        for group in optimizer.param_groups:
            if "betas" not in group or group.get("amsgrad") or group.get("maximize"):
                return None
            lr, (b1, b2), eps, wd = float(group["lr"]), group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = optimizer.state.get(p, {})
                step = float(state["step"]) + 1 if "step" in state else 1.0
                bc1, bc2 = 1 - b1**step, math.sqrt(1 - b2**step)
                # this process's slice where parameters are sharded (--fsdp); ``reduce`` adds the slices up
                w, g = local(p.detach()).reshape(-1), local(p.grad.detach()).reshape(-1)
                m_old, v_old = state.get("exp_avg"), state.get("exp_avg_sq")
                m_old = local(m_old).reshape(-1) if m_old is not None else None
                v_old = local(v_old).reshape(-1) if v_old is not None else None
                for i in range(0, w.numel(), self.chunk):
                    sl = slice(i, i + self.chunk)
                    gc, wc = g[sl].float(), w[sl].float()
                    m = gc.mul(1 - b1)
                    v = gc.mul(gc).mul_(1 - b2)
                    if m_old is not None:
                        m.add_(m_old[sl].float(), alpha=b1)
                        v.add_(v_old[sl].float(), alpha=b2)
                    dw = m.div_(v.sqrt_().div_(bc2).add_(eps)).mul_(lr / bc1)
                    if wd:
                        dw.add_(wc, alpha=lr * wd)
                    # a NaN/inf anywhere makes the sum of squares non-finite: no separate pass needed
                    sums += torch.stack([torch.dot(dw, dw), torch.dot(wc, wc)]).double().cpu()
        return sums

    def judge(
        self, optimizer: torch.optim.Optimizer, lr: float, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[bool, float, str]:
        """(apply, lr-normalised size, reason when refused) of the step ``optimizer.step()`` would take now.
        ``reduce`` sums the partial sums over processes (sharded parameters; replicated ones scale both
        norms alike)."""
        sums = self._sums(optimizer)
        if sums is None:
            return True, 0.0, ""
        if reduce is not None:
            sums = reduce(sums)
        diff, norm = (float(x) for x in sums)
        ratio = math.sqrt(diff) / max(math.sqrt(norm), 1e-12) if math.isfinite(diff) else math.inf
        size = ratio / lr if lr > 0 else ratio
        if not math.isfinite(ratio):
            return False, size, "the update would make weights NaN/inf"
        if self.max_ratio > 0 and ratio > self.max_ratio:
            return (
                False,
                size,
                (
                    f"the update would change the weights by {ratio:.3g} of their norm "
                    f"(> max_update_ratio {self.max_ratio})"
                ),
            )
        if self.factor > 0 and len(self.history) >= self.min_history:
            recent = sorted(self.history[-self.window :])
            median = recent[len(recent) // 2]
            if median > 0 and size > self.factor * median:
                return (
                    False,
                    size,
                    (
                        f"the update was {size / median:.3g}x the median of the last {len(recent)} "
                        f"steps (> update_guard_factor {self.factor})"
                    ),
                )
        return True, size, ""

    def accept(self, size: float) -> None:
        """Count an applied step's size into the recent range."""
        self.history = [*self.history, size][-self.window :]
