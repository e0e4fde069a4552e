"""Which code made a run or evaluation: the git commit of a source tree (clean, dirty, not a checkout) and the
per-commit counts of the report."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import trapo
from trapo_lab.compare.provenance import (
    UNRECORDED,
    code_label,
    code_provenance,
    provenance_table,
    run_label,
    source_provenance,
)
from trapo_lab.compare.report_claims import provenance_markdown

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()


@needs_git
def test_a_checkout_gives_its_commit_and_says_when_it_is_dirty(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    sha = _git(tmp_path, "rev-parse", "HEAD")
    assert source_provenance(tmp_path) == {"trapo": trapo.__version__, "commit": sha, "dirty": False}
    (tmp_path / "untracked.txt").write_text("not code\n")  # untracked files do not make the tree dirty
    assert source_provenance(tmp_path)["dirty"] is False
    assert source_provenance(tmp_path, tracked="a.py")["commit"] == sha
    # a file git does not track there (e.g. a copy installed into a .venv inside the checkout): not its code
    assert source_provenance(tmp_path, tracked="untracked.txt") == {
        "trapo": trapo.__version__,
        "commit": "unknown",
        "dirty": None,
    }
    (tmp_path / "a.py").write_text("x = 2\n")
    code = source_provenance(tmp_path)
    assert code["dirty"] is True and code_label(code) == sha[:8] + "+dirty"


def test_a_tree_outside_git_is_unknown(tmp_path):
    code = source_provenance(tmp_path)
    assert code == {"trapo": trapo.__version__, "commit": "unknown", "dirty": None}
    assert code_label(code) == "unknown"


@needs_git
def test_this_package_records_the_commit_of_its_source_tree():
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        pytest.skip(f"{root} is not a git checkout")
    assert code_provenance()["commit"] == _git(root, "rev-parse", "HEAD")


def test_labels_and_counts():
    a = {"trapo": "0.1.0", "commit": "56fcca0b" + "0" * 32, "dirty": False}
    b = {"trapo": "0.1.0", "commit": "c2b5f322" + "1" * 32, "dirty": True}
    assert (code_label(a), code_label(b), code_label(None)) == ("56fcca0b", "c2b5f322+dirty", UNRECORDED)
    assert run_label({"code": a}, {"code": a}) == "56fcca0b"
    assert run_label({"code": a}, {"code": b}) == "56fcca0b → c2b5f322+dirty"  # resumed by other code
    assert run_label({}, None) == UNRECORDED and run_label({"code": a}, {"steps": 2}) == "56fcca0b"
    table = provenance_table(["unrecorded", "56fcca0b", "56fcca0b"], ["c2b5f322+dirty", "56fcca0b"])
    assert table == {
        "56fcca0b": {"runs": 2, "evaluations": 1},
        "c2b5f322+dirty": {"runs": 0, "evaluations": 1},
        "unrecorded": {"runs": 1, "evaluations": 0},
    }
    lines = provenance_markdown({"by_code": table})
    assert lines[0] == "## Which code made these numbers"
    assert "| 56fcca0b | 2 | 1 |" in lines and "| unrecorded | 1 | 0 |" in lines
    assert lines[2].endswith("was recorded.")
    written = provenance_markdown({"by_code": table, "this_invocation": b})
    assert written[2].endswith("was recorded. This report was written by c2b5f322+dirty.")
    assert provenance_markdown(None) == [] and provenance_markdown({"by_code": {}}) == []
