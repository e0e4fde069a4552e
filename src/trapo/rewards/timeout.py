"""Run a Python callable with a wall-clock bound, in the main thread or any other.

math-verify bounds its own work with ``signal.alarm``, which (a) only accepts whole seconds and (b) only
works in the main thread: called from a worker thread (a data-loader, a thread pool scoring rewards) it
raises. We switch math-verify's own timeouts off and bound the whole check here instead:

- in the main thread, with no timer already armed, by ``signal.setitimer`` (fractions of a second; the
  previous ``SIGALRM`` handler is restored afterwards);
- anywhere else, by a watchdog timer thread that raises :class:`CallTimeout` inside the running thread
  with CPython's ``PyThreadState_SetAsyncExc`` (the same mechanism as ``KeyboardInterrupt`` delivery).

Both interrupt Python code between bytecodes, which is where sympy spends its time; neither can stop a
single long call into C. :class:`CallTimeout` derives from ``BaseException`` so that the ``except Exception``
blocks inside math-verify and sympy cannot swallow it.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class CallTimeout(BaseException):
    """Raised inside a call that ran past its bound."""


def _signal_handler(signum, frame):
    raise CallTimeout("timed out")


def _can_use_signal() -> bool:
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return False
    return signal.getitimer(signal.ITIMER_REAL)[0] == 0  # don't clobber a timer someone else armed


def _with_signal(fn: Callable[[], T], timeout_s: float) -> T:
    previous = signal.signal(signal.SIGALRM, _signal_handler)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


def _with_watchdog(fn: Callable[[], T], timeout_s: float) -> T:
    target = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def fire() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                _set_async_exc(target, CallTimeout)

    timer = threading.Timer(timeout_s, fire)
    timer.daemon = True
    timer.start()
    try:
        result = fn()
    finally:
        with lock:
            state["done"] = True
            fired = state["fired"]
        timer.cancel()
        if fired:
            # The exception may still be pending (not yet delivered): clear it so it cannot surface later,
            # outside this call, then report the timeout ourselves.
            _set_async_exc(target, None)
    if fired:
        raise CallTimeout("timed out")
    return result


def call_with_timeout(fn: Callable[[], T], timeout_s: float | None) -> T:
    """Return ``fn()``, or raise :class:`CallTimeout` once it has run for ``timeout_s`` seconds.

    ``timeout_s=None`` (or ``<= 0``) runs ``fn`` unbounded.
    """
    if timeout_s is None or timeout_s <= 0:
        return fn()
    if _can_use_signal():
        return _with_signal(fn, timeout_s)
    return _with_watchdog(fn, timeout_s)


# ------------------------------------------------------------------------------------ in a worker process
def _serve(fn: Callable, conn) -> None:
    """The worker's loop: call ``fn(*args)`` for each request, send back (ok, value or error)."""
    import os
    import signal as _signal

    os.setpgid(0, 0)  # its own process group: a timeout ends the worker and every process it started
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for name in ("SIGTERM", "SIGUSR1"):
        if hasattr(_signal, name):
            _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        try:
            reply = (True, fn(*args))
        except BaseException as err:
            reply = (False, f"{type(err).__name__}: {err}")
        try:
            conn.send(reply)
        except Exception as err:  # an unpicklable result
            conn.send((False, f"the reward returned an unpicklable {type(reply[1]).__name__}: {err}"))


class WorkerError(Exception):
    """The call raised in the worker process (the message is the worker's ``Type: message``)."""


class ProcessCaller:
    """Call ``fn`` in a forked worker process with a hard wall-clock bound, from any thread.

    The worker is started on the first call (``fork``: it inherits ``fn`` and everything it closes over) and
    serves calls until one runs past its bound; then it is killed with every process it started (the worker
    leads its own process group), :class:`CallTimeout` is raised, and the
    next call starts a new one. Arguments and results are pickled. A single call costs a round trip through
    a pipe (well under a millisecond for a batch of short completions); a restart costs a fork.
    """

    def __init__(self, fn: Callable):
        self.fn = fn
        self._proc = None
        self._conn = None
        self._lock = threading.Lock()

    def _start(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(self.fn, child), daemon=True, name="trapo-reward")
        self._proc.start()
        child.close()
        self._conn = parent

    def close(self) -> None:
        """End the worker and the processes it started (its process group), then reap it."""
        if self._proc is not None:
            import os
            import signal as _signal

            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, _signal.SIGKILL)
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def __call__(self, *args, timeout_s: float | None = None):
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                self.close()
                self._start()
            try:
                self._conn.send(args)
                ready = self._conn.poll(timeout_s if timeout_s and timeout_s > 0 else None)
            except (BrokenPipeError, EOFError, OSError) as err:
                self.close()
                raise WorkerError(f"the reward's worker process died ({err})") from None
            if not ready:
                self.close()
                raise CallTimeout(f"timed out after {timeout_s} s")
            try:
                ok, value = self._conn.recv()
            except (EOFError, OSError):
                code = self._proc.exitcode if self._proc is not None else None
                self.close()
                raise WorkerError(f"the reward's worker process died (exit code {code})") from None
        if not ok:
            raise WorkerError(value)
        return value

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
