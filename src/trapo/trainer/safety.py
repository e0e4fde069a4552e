"""What keeps a run from losing work or doing damage: the output directory's owner, signals, the update guard.

- :func:`claim_output_dir`: an output directory belongs to one run. A fresh run refuses a directory that
  holds another run's files unless ``overwrite_output_dir``; a resumed run must have the stored config
  (apart from :data:`MAY_CHANGE_ON_RESUME`). A lock file (``.trapo.lock``, holding the PID and host) stops a
  second process; a lock left by a dead process on this host is taken over.
- :class:`SignalGuard`: SIGTERM and SIGUSR1 (what Slurm, Kubernetes and ``timeout`` send before the end) ask
  the loop to checkpoint and stop at the next step boundary; SIGINT (Ctrl-C) raises ``KeyboardInterrupt`` as
  usual, except inside the few lines between the optimizer step and the step counter, where it waits for
  their end (so a checkpoint never holds an update its step count does not).
- :class:`UpdateGuard`: an optimizer step whose relative size ``|dw| / |w|`` is non-finite, above an absolute
  bound, or far above the run's recent steps is rolled back before anything else sees it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

LOCK_FILE = ".trapo.lock"
RUN_FILES = ("run_config.json", "metrics.jsonl", "samples.jsonl", "final")
# Config fields a resumed run may change: how long to run, how often to log/save, where to report.
MAY_CHANGE_ON_RESUME = frozenset({
    "output_dir", "max_steps", "logging_steps", "save_steps", "save_minutes", "save_total_limit",
    "sample_log_steps", "report_to", "max_nonfinite_steps", "generation_batch_size", "overwrite_output_dir",
    "reward_timeout", "max_reward_failure_share", "max_reward_failure_steps", "update_guard_factor",
    "max_update_ratio", "strict",
})
# Exit codes of ``trapo train`` besides 0 (done) and 2 (a user error, nothing trained).
EXIT_STOPPED = 3  # the run stopped itself (rewards failing, NaN/inf, every step rolled back); see the message
EXIT_INTERRUPTED = 130  # Ctrl-C: the last finished step was saved
# SIGTERM / SIGUSR1: 128 + the signal number (143 / 138), after saving a checkpoint.


class TrainingStopped(RuntimeError):
    """The run stopped itself with a reason the user must act on (the message says which)."""


class Preempted(Exception):
    """SIGTERM / SIGUSR1 arrived; a checkpoint was saved at the step boundary that followed."""

    def __init__(self, signum: int, step: int, output_dir: Path):
        self.signum, self.step, self.output_dir = signum, step, output_dir
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: saved a checkpoint at step {step} in {output_dir}; "
                         f"rerun with --resume (or --resume auto) to continue")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# ---------------------------------------------------------------------------------------- the directory
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(output_dir: Path) -> Path:
    """Create ``output_dir/.trapo.lock`` for this process; ``FileExistsError`` when a live process holds it."""
    lock = output_dir / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            pid, host = holder.get("pid"), holder.get("host")
            if isinstance(pid, int) and (host != me["host"] or _pid_alive(pid)) and pid != me["pid"]:
                raise FileExistsError(
                    f"{output_dir} is in use by another trapo process (pid {pid} on {host}; lock file {lock}). "
                    "Use another --output_dir, or wait for that run to end") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone (or the file is unreadable)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return lock
    raise FileExistsError(f"could not take the lock {lock}")


def release_lock(output_dir: Path) -> None:
    lock = output_dir / LOCK_FILE
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return
    if holder.get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


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
    return sorted(p.name for p in output_dir.iterdir()
                  if p.name in RUN_FILES or p.name.startswith("checkpoint-"))


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

    STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)

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
    """Snapshot before an optimizer step, judge its size after, restore when it is out of range.

    The size is ``|w_new - w_old| / |w_old|`` over all trained parameters, divided by the learning rate
    (so a warm-up or decay does not look like an anomaly). A step is rolled back when the new weights are
    not finite, when the relative change exceeds ``max_update_ratio``, or when the lr-normalised size is more
    than ``factor`` times the median of the last ``window`` accepted steps (once ``min_history`` are known).
    The snapshot costs one copy of the parameters and of the optimizer state on their device.
    """

    def __init__(self, factor: float, max_ratio: float, window: int = 20, min_history: int = 5):
        self.factor, self.max_ratio, self.window, self.min_history = factor, max_ratio, window, min_history
        self.history: list[float] = []
        self._params: list[torch.Tensor] | None = None
        self._opt_state: dict | None = None

    @property
    def enabled(self) -> bool:
        return self.factor > 0 or self.max_ratio > 0

    def snapshot(self, params: Iterable[torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
        self._params = [p.detach().clone() for p in params]
        self._opt_state = {id(k): {n: (v.clone() if torch.is_tensor(v) else v) for n, v in s.items()}
                           for k, s in optimizer.state.items()}

    def judge(self, params: list[torch.Tensor], lr: float,
              reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[bool, float, str]:
        """(accept, lr-normalised size, reason when rejected) of the step just taken. ``reduce`` sums the
        three partial sums over processes (sharded parameters; replicated ones scale both norms alike)."""
        assert self._params is not None
        sums = torch.zeros(3, dtype=torch.float64)
        for p, q in zip(params, self._params, strict=True):
            new, old = p.detach().double(), q.double()
            sums += torch.stack([(new - old).pow(2).sum(), old.pow(2).sum(), (~torch.isfinite(new)).sum()]).cpu()
        if reduce is not None:
            sums = reduce(sums)
        diff, norm, nonfinite = (float(x) for x in sums)
        ratio = (diff ** 0.5) / max(norm ** 0.5, 1e-12)
        size = ratio / lr if lr > 0 else ratio
        if nonfinite or not math.isfinite(ratio):
            return False, size, "the update made weights NaN/inf"
        if self.max_ratio > 0 and ratio > self.max_ratio:
            return False, size, f"the update changed the weights by {ratio:.3g} of their norm (> {self.max_ratio})"
        if self.factor > 0 and len(self.history) >= self.min_history:
            recent = sorted(self.history[-self.window:])
            median = recent[len(recent) // 2]
            if median > 0 and size > self.factor * median:
                return False, size, (f"the update was {size / median:.3g}x the median of the last {len(recent)} "
                                     f"steps (> {self.factor}x)")
        return True, size, ""

    @property
    def has_snapshot(self) -> bool:
        return self._params is not None

    def accept(self, size: float) -> None:
        """Count an accepted step's size into the recent range."""
        self.history = [*self.history, size][-self.window:]

    def restore(self, params: list[torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
        assert self._params is not None and self._opt_state is not None
        with torch.no_grad():
            for p, q in zip(params, self._params, strict=True):
                p.copy_(q)
        for k in list(optimizer.state):
            saved = self._opt_state.get(id(k))
            if saved is None:
                del optimizer.state[k]  # state created by the rejected step (the first one)
                continue
            state = optimizer.state[k]
            for n, v in saved.items():
                if torch.is_tensor(v) and torch.is_tensor(state.get(n)):
                    state[n].copy_(v)
                else:
                    state[n] = v
        self.release()

    def release(self) -> None:
        self._params, self._opt_state = None, None
