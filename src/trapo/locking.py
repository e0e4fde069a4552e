"""A lock file that two processes can never both hold: ``flock`` on the file, which records its holder.

:class:`FileLock` opens (creating) the file, takes an exclusive non-blocking ``flock`` on it, checks that
the path still names the file it locked (a holder that was releasing may have removed it meanwhile: then it
tries again), and writes ``{"pid", "host"}`` into it. Release removes the file while still holding the lock.
The kernel drops an ``flock`` when its process ends, however it ends (``kill -9`` included), so a lock file
left behind by a dead process is simply taken: there is no stale lock to clear on a local file system. On a
network file system that kept a crashed host's lock, the message names the holder's host and PID; when
that process is gone, delete the lock file and run again.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path


class FileLock:
    """``with FileLock(path, what):`` or :meth:`acquire` / :meth:`release`; ``what`` names the thing locked
    in the message (``"output_dir runs/x"``)."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path, self.what = Path(path), what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict:
        """What the lock file says about its holder (``{}`` when unreadable)."""
        try:
            holder = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def acquire(self) -> FileLock:
        """Take the lock; ``FileExistsError`` naming the holder's host and PID when another process has it."""
        for _ in range(50):
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = self.holder()
                raise FileExistsError(
                    f"{self.what} is in use by another trapo process (pid {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')}; lock file {self.path}). Wait for it to end or use another "
                    f"directory; if that process is gone (a network file system may keep a crashed host's "
                    f"lock), delete {self.path} and run again"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed it between our open and our flock: try the new file
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
            self._fd = fd
            return self
        raise FileExistsError(f"could not take the lock {self.path}: it kept changing under us")

    def release(self) -> None:
        """Remove the lock file and let go (a no-op when not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
