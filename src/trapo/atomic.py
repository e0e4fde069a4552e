"""Write a directory so that it appears whole or not at all (no half-written directory that loads later)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_sibling(out_dir: str | os.PathLike) -> Path:
    """A new empty directory beside ``out_dir`` (hidden, named after it) to fill before :func:`commit`."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


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
    tmp = temp_sibling(out_dir)
    try:
        yield tmp
        commit(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
