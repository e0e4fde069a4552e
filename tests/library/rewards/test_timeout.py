"""call_with_timeout: bounds Python work in the main thread (SIGALRM) and in other threads (watchdog)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from trapo.rewards import CallTimeout, call_with_timeout


def spin(seconds: float) -> str:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return "done"


def test_returns_the_value_and_restores_the_alarm_handler():
    before = signal.getsignal(signal.SIGALRM)
    assert call_with_timeout(lambda: 7, 1.0) == 7
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_main_thread_bound():
    start = time.perf_counter()
    with pytest.raises(CallTimeout):
        call_with_timeout(lambda: spin(5), 0.2)
    assert time.perf_counter() - start < 1.0


def test_an_armed_timer_is_not_clobbered():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(CallTimeout):  # bounded by the watchdog instead
            call_with_timeout(lambda: spin(5), 0.1)
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0  # the caller's timer is still armed
        spin(0.6)
        assert fired == [True]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_worker_thread_bound_and_exceptions_pass_through():
    outcome = {}

    def work():
        start = time.perf_counter()
        try:
            call_with_timeout(lambda: spin(5), 0.2)
        except CallTimeout:
            outcome["elapsed"] = time.perf_counter() - start
        outcome["quick"] = call_with_timeout(lambda: spin(0.01), 0.5)
        try:
            call_with_timeout(lambda: 1 / 0, 0.5)
        except ZeroDivisionError:
            outcome["error"] = True
        spin(0.7)  # a late watchdog would raise here
        outcome["finished"] = True

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert outcome["elapsed"] < 1.0 and outcome["quick"] == "done" and outcome["error"] and outcome["finished"]


def test_a_c_call_past_the_bound_times_out_once_in_a_worker_thread():
    """time.sleep is one C call: the watchdog's exception waits until it returns, then lands inside the bound
    call (raised by call_with_timeout), never in the caller's code after it."""
    import functools

    outcome = []

    def work():
        try:
            call_with_timeout(functools.partial(time.sleep, 0.3), 0.05)
        except CallTimeout:
            outcome.append("timeout")
        spin(0.3)  # a pending exception that escaped would surface here
        outcome.append("finished")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert outcome == ["timeout", "finished"]


def test_no_bound():
    assert call_with_timeout(lambda: spin(0.05), None) == "done"
    assert call_with_timeout(lambda: 3, 0) == 3


def _start_child_and_hang(pid_file: str) -> None:
    import subprocess

    child = subprocess.Popen(["sleep", "60"])
    with open(pid_file, "w") as f:
        f.write(str(child.pid))
    time.sleep(60)


def test_a_worker_that_times_out_is_ended_with_the_processes_it_started(tmp_path):
    """Issue 24 #5: the reward's subprocess does not outlive the timed-out worker."""
    import os

    from trapo.rewards.timeout import ProcessCaller

    pid_file = tmp_path / "child.pid"
    caller = ProcessCaller(_start_child_and_hang)
    with pytest.raises(CallTimeout):
        caller(str(pid_file), timeout_s=2.0)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the reward's child process {child} still runs after the timeout")
    caller.close()


TRACED_TIMEOUT_THEN_SIGNAL = """
import signal, sys, threading, time
from trapo.rewards import CallTimeout, call_with_timeout

def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass

sys.settrace(lambda *args: None)  # as coverage, a debugger or a profiler does
threading.settrace(lambda *args: None)
outcome = []

def work():
    try:
        call_with_timeout(lambda: spin(5), 0.1)
    except CallTimeout:
        outcome.append("timeout")

thread = threading.Thread(target=work)
thread.start()
thread.join()
signal.signal(signal.SIGALRM, lambda *args: outcome.append("alarm"))
signal.setitimer(signal.ITIMER_REAL, 0.05)
spin(0.3)
print(outcome)
"""


def test_a_timeout_under_a_tracer_leaves_the_interpreter_working():
    """A watchdog timeout once cleared its exception with PyThreadState_SetAsyncExc(id, NULL), which leaves
    CPython's pending-exception flag set with nothing to deliver; under a tracer the next signal handler then
    looped forever (this test hung, and so did the suite under coverage)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", TRACED_TIMEOUT_THEN_SIGNAL], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['timeout', 'alarm']"
