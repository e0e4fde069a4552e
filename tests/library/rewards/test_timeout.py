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
