"""math_reward on the real benchmark ground truths (../shared/benchmarks): every answer boxed is accepted,
and the answer of a different problem is rejected (target: both >= 99%)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trapo.rewards import check_answer

BENCHMARKS = Path(__file__).resolve().parents[3] / ".." / "shared" / "benchmarks"
FILES = ["aime", "aime25", "amc", "math", "minerva", "olympiad_bench"]

pytestmark = pytest.mark.slow


def _problems() -> list[tuple[str, str]]:
    """(file, ground truth) of every distinct problem in the six files (AIME/AMC rows repeat 32×)."""
    pq = pytest.importorskip("pyarrow.parquet")
    if not BENCHMARKS.is_dir():
        pytest.skip(f"the shared benchmarks are not at {BENCHMARKS}")
    problems = []
    for name in FILES:
        path = BENCHMARKS / f"valid.{name}.parquet"
        if not path.is_file():
            pytest.skip(f"{path} is missing")
        seen = set()
        for row in pq.read_table(path, columns=["prompt", "reward_model"]).to_pylist():
            key = (row["prompt"][-1]["content"], row["reward_model"]["ground_truth"])
            if key not in seen:
                seen.add(key)
                problems.append((name, row["reward_model"]["ground_truth"]))
    return problems


def _canonical(answer: str) -> str:
    return answer.replace("$", "").replace(" ", "")


@pytest.fixture(scope="module")
def problems():
    return _problems()


def test_all_six_files_are_read(problems):
    counts = {name: sum(1 for f, _ in problems if f == name) for name in FILES}
    assert counts == {"aime": 30, "aime25": 30, "amc": 83, "math": 500, "minerva": 272, "olympiad_bench": 675}


def test_boxed_ground_truth_is_accepted(problems):
    failures = []
    for name, gt in problems:
        completion = f"Let me work through this carefully.\n\nPutting it together, the answer is \\boxed{{{gt}}}."
        verdict = check_answer(completion, gt)
        if not verdict.correct:
            failures.append((name, gt, verdict.status, verdict.detail))
    for failure in failures:
        print("not accepted:", failure)
    rate = 1 - len(failures) / len(problems)
    print(f"accepted {rate:.2%} of {len(problems)}")
    assert rate >= 0.99


def test_another_problems_answer_is_rejected(problems):
    failures = []
    for i, (name, gt) in enumerate(problems):
        j = (i + 1) % len(problems)  # the next problem whose answer is written differently
        while _canonical(problems[j][1]) == _canonical(gt):
            j = (j + 1) % len(problems)
        other = problems[j][1]
        verdict = check_answer(f"Hence the result is \\boxed{{{other}}}.", gt)
        if verdict.correct:
            failures.append((name, gt, other))
    for failure in failures:
        print("wrongly accepted:", failure)
    rate = 1 - len(failures) / len(problems)
    print(f"rejected {rate:.2%} of {len(problems)}")
    assert rate >= 0.99
