"""FileLock: never held by two processes at once, names its holder, and is free once its holder is gone."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time

import pytest

from trapo.locking import FileLock


def _contend(lock_path: str, marker: str, tries: int, doubles) -> None:
    for _ in range(tries):
        lock = FileLock(lock_path, "the directory")
        try:
            lock.acquire()
        except FileExistsError:
            continue
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # exists: someone else holds it too
            os.close(fd)
            time.sleep(0.0005)
            os.unlink(marker)
        except FileExistsError:
            with doubles.get_lock():
                doubles.value += 1
        finally:
            lock.release()


def test_three_processes_never_hold_the_lock_together(tmp_path):
    """The stale-lock takeover race of issue 24 #6 (21 of 300 trials held twice) cannot happen."""
    ctx = multiprocessing.get_context("fork")
    doubles = ctx.Value("i", 0)
    args = (str(tmp_path / ".trapo.lock"), str(tmp_path / "holder"), 300, doubles)
    procs = [ctx.Process(target=_contend, args=args) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert doubles.value == 0
    assert not (tmp_path / ".trapo.lock").exists()


def _hold(lock_path: str, ready) -> None:
    FileLock(lock_path, "x").acquire()
    ready.set()
    time.sleep(60)


def test_the_message_names_host_and_pid_and_a_killed_holder_frees_the_lock(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    path = tmp_path / ".trapo.lock"
    holder = ctx.Process(target=_hold, args=(str(path), ready))
    holder.start()
    assert ready.wait(30)
    with pytest.raises(FileExistsError, match=rf"runs/x is in use by another trapo process \(pid {holder.pid} on "):
        FileLock(path, "runs/x").acquire()
    with pytest.raises(FileExistsError, match=r"delete .*\.trapo\.lock and run again"):
        FileLock(path, "runs/x").acquire()
    os.kill(holder.pid, signal.SIGKILL)  # no clean-up: the file stays, the flock goes
    holder.join(timeout=30)
    assert path.exists()
    with FileLock(path, "runs/x") as lock:
        assert json.loads(path.read_text())["pid"] == os.getpid() and lock.held
    assert not path.exists()


def test_a_lock_file_naming_another_host_is_not_a_dead_end(tmp_path):
    path = tmp_path / ".trapo.lock"
    path.write_text(json.dumps({"pid": 1, "host": "some-other-host"}))
    with FileLock(path, "runs/x"):
        assert json.loads(path.read_text())["host"] != "some-other-host"
