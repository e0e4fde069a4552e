"""Write a directory or a file so that it appears whole or not at all (no half-written output that loads
later), with the permissions the user's umask gives a new file or directory (``tempfile`` would make them
private to the owner)."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# What a failed write looks like from torch.save (its zip writer) and safetensors, besides an OSError.
_WRITE_FAILURES = ("PytorchStreamWriter", "unexpected pos", "file write failed", "inline_container", "os error")
_DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "a file would exceed the size limit"}
_DISK_ERRNOS[errno.EDQUOT] = "the disk quota is exceeded"


class WriteFailed(OSError):
    """Writing an output failed for a reason of the disk (space, file size, quota, permissions); the
    message says which, and that the previous version of the output is untouched."""


def _why_write_failed(err: BaseException, where: Path) -> str | None:
    """Why a write under ``where`` failed, in words, or None when ``err`` is not a write failure."""
    if isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
        return _DISK_ERRNOS[err.errno]
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied ({err.strerror})"
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError | FileExistsError):
        return err.strerror or str(err)
    if not (isinstance(err, RuntimeError | ValueError) and any(s in str(err) for s in _WRITE_FAILURES)):
        return None
    free = shutil.disk_usage(where).free
    if free < 1 << 20:
        return f"no space left on the device ({free} bytes free)"
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        return f"a file would exceed the size limit (ulimit -f: {soft} bytes)"
    return f"the write failed ({str(err).splitlines()[0][:200]})"


@contextmanager
def reported_as_disk_errors(out: Path) -> Iterator[None]:
    """Turn a failed write of ``out`` (torch's and safetensors' own errors included) into :class:`WriteFailed`."""
    try:
        yield
    except WriteFailed:
        raise
    except (OSError, RuntimeError, ValueError) as err:
        why = _why_write_failed(err, out.parent)
        if why is None:
            raise
        free = shutil.disk_usage(out.parent).free / 2**30
        raise WriteFailed(
            f"cannot write {out}: {why}; {free:.2f} GiB free there. Nothing was replaced: "
            f"{'the previous ' + out.name if out.exists() else 'no partial ' + out.name} is on disk as it was"
        ) from None


def current_umask() -> int:
    """The process's umask (read without changing it where ``/proc`` says it; else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_umask_allows(path: str | os.PathLike, directory: bool) -> None:
    """Give a temporary file or directory the mode a plain ``open`` / ``mkdir`` would have given it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def temp_sibling(out_dir: str | os.PathLike) -> Path:
    """A new empty directory beside ``out_dir`` (hidden, named after it, with the user's umask) to fill
    before :func:`commit`."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    as_umask_allows(tmp, directory=True)
    return tmp


def commit(tmp: Path, out_dir: str | os.PathLike) -> None:
    """Put the filled ``tmp`` in place of ``out_dir`` (replacing it) by a rename."""
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


@contextmanager
def atomic_directory(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``out_dir`` to fill; on success it replaces ``out_dir`` by a rename,
    on any error (Ctrl-C included) it is removed and ``out_dir`` is left as it was."""
    with reported_as_disk_errors(Path(out_dir)):
        tmp = temp_sibling(out_dir)
        try:
            yield tmp
            commit(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path of ``path`` to write; on success it replaces ``path`` by a rename,
    on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    with reported_as_disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            as_umask_allows(tmp, directory=False)
            yield tmp
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """``Path(path).write_text(text)``, but whole or not at all."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
