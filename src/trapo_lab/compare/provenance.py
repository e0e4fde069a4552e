"""Which code made each run and evaluation of a comparison: trapo's version and the git commit of the source
tree (``unknown`` when it is not a git checkout; ``+dirty`` when it has uncommitted changes to tracked files).

A run records the code that started it in ``run.json`` and the code that finished it in ``done.json``; an
evaluation records it in its result (``eval.json``). None of this enters a run hash or an evaluation key, so
recording it reuses every cached run. Runs and evaluations cached before it was recorded count as
``unrecorded``.
"""

from __future__ import annotations

import functools
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"
UNRECORDED = "unrecorded"


def _git(root: Path, *args: str) -> str | None:
    """The stripped output of ``git -C root ARGS``, or None when git fails or is missing."""
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_provenance(root: Path, tracked: str | None = None) -> dict[str, Any]:
    """``{"trapo": version, "commit": sha or "unknown", "dirty": bool or None}`` of the source tree at ``root``;
    ``unknown`` also when the file ``tracked`` (relative to ``root``) is not tracked by git there (a copy
    installed into a virtual environment inside some checkout is not that checkout's code)."""
    import trapo

    commit = _git(root, "rev-parse", "HEAD")
    if commit is not None and tracked is not None and _git(root, "ls-files", "--error-unmatch", tracked) is None:
        commit = None
    status = None if commit is None else _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "trapo": trapo.__version__,
        "commit": commit or UNKNOWN,
        "dirty": None if status is None else bool(status),
    }


@functools.cache
def code_provenance() -> dict[str, Any]:
    """:func:`source_provenance` of the tree this package was imported from (computed once per process)."""
    here = Path(__file__).resolve()
    return source_provenance(here.parent, tracked=here.name)


def code_label(code: dict[str, Any] | None) -> str:
    """``56fcca0b``, ``56fcca0b+dirty``, ``unknown`` (not a git checkout) or ``unrecorded`` (None)."""
    if not code:
        return UNRECORDED
    commit = code.get("commit") or UNKNOWN
    label = commit if commit == UNKNOWN else commit[:8]
    return label + ("+dirty" if code.get("dirty") else "")


def run_label(run_json: dict[str, Any] | None, done_json: dict[str, Any] | None) -> str:
    """The code of one run: the one that started it, ``A → B`` when another finished it."""
    started = code_label((run_json or {}).get("code"))
    finished = (done_json or {}).get("code")
    if finished is None:
        return started
    finished_label = code_label(finished)
    return started if finished_label == started else f"{started} → {finished_label}"


def provenance_table(runs: Iterable[str], evaluations: Iterable[str]) -> dict[str, dict[str, int]]:
    """Per code label, how many runs and evaluations it produced (labels sorted, ``unrecorded`` last)."""
    n_runs, n_evals = Counter(runs), Counter(evaluations)
    labels = sorted(set(n_runs) | set(n_evals), key=lambda s: (s == UNRECORDED, s))
    return {label: {"runs": n_runs[label], "evaluations": n_evals[label]} for label in labels}
