"""math_reward / check_answer: extraction, equivalent forms, statuses, time bounds, and thread safety."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from trapo.rewards import check_answer, extract_answer, extract_boxed, math_reward


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{42}.", "42"),
        ("first \\boxed{1}, finally \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),  # nested braces
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces do not count
        ("\\fbox{7}", "7"),
        ("$\\boxed 5$", "5"),
        ("no box here", None),
        ("\\boxed{1} then cut off \\boxed{\\frac{3}{", None),  # the last box is unfinished: no final answer
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42.", "42"),
        ("Final answer: $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("so the answer is x = 3. Done", "x = 3"),
        ("we get 3 then 7/8", None),  # a trailing number is not an answer
        ("We get -2.5 in the end", None),
        ("the answer is -2.5", "-2.5"),
        ("nothing numeric", None),
        ("The answer is \\boxed{9}. 10", "9"),  # a box wins over phrases and numbers
    ],
)
def test_extract_answer_fallbacks(text, expected):
    assert extract_answer(text) == expected


def test_no_fallback_requires_a_box():
    assert extract_answer("The answer is 42.", fallback=False) is None
    assert math_reward("The answer is 42.", "42", fallback=False) == 0.0
    assert math_reward("The answer is 42.", "42") == 1.0


@pytest.mark.parametrize(
    ("answer", "ground_truth"),
    [
        ("0.5", "\\frac12"),
        ("1/2", "\\frac{1}{2}"),
        ("\\dfrac{1}{2}", "0.5"),
        ("\\{2, 1\\}", "\\{1,2\\}"),  # sets: order does not matter
        ("-2, 1", "1,-2"),  # a list of solutions is a set
        ("[0, 1)", "[0,1)"),  # intervals
        ("\\text{Evelyn}", "\\text{Evelyn}"),  # text answers
        ("Evelyn", "\\text{Evelyn}"),
        ("25", "025"),
        ("142", "142.0"),
        ("336", "336^\\circ"),
        ("x = 5", "5"),
        ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("4.5 \\times 10^{33}", "4.5e33"),  # e-notation ground truths (Minerva)
        ("\\$18.90", "\\$18.90"),  # currency signs dropped
        ("\\frac{1}{2n+2}", "$\\frac{1}{2 n+2}$"),  # ground truth in $...$
        ("7", "\\boxed{7}"),  # ground truth in \boxed
    ],
)
def test_equivalent_forms_are_accepted(answer, ground_truth):
    verdict = check_answer(f"Some work. Therefore the answer is \\boxed{{{answer}}}.", ground_truth)
    assert verdict.status == "correct", verdict
    assert verdict.extracted == answer


@pytest.mark.parametrize(
    ("answer", "ground_truth"),
    [
        ("0.6", "\\frac12"),
        ("(0, 1)", "[0,1)"),
        ("\\{1, 3\\}", "\\{1,3,5\\}"),
        ("Bob", "\\text{Evelyn}"),
        ("1.3e-27", "2.88e-19"),  # tiny numbers must agree relatively, not to 6 decimals
        ("10.0001", "10"),
    ],
)
def test_different_answers_are_rejected(answer, ground_truth):
    verdict = check_answer(f"\\boxed{{{answer}}}", ground_truth)
    assert verdict.status == "wrong", verdict
    assert math_reward(f"\\boxed{{{answer}}}", ground_truth) == 0.0


def test_statuses():
    assert check_answer("I don't know.", "5").status == "no_answer"
    assert check_answer("\\boxed{}", "5").status == "no_answer"
    unverifiable = check_answer("\\boxed{5}", "")
    assert unverifiable.status == "unverifiable_ground_truth"
    assert unverifiable.score == 0.0 and not unverifiable.correct
    assert check_answer("\\boxed{5}", "5").score == 1.0
    assert check_answer(None, "5").status == "wrong"  # never raises, even on bad types


@pytest.mark.parametrize(
    "answer",
    [
        "9^{9^{9^{9}}}",  # one C-level integer power: refused before evaluation
        "(10^{10})!",
        "{" * 3000 + "1" + "}" * 3000,  # too long to be an answer
        "(x+1)^{1000}",  # sympy expands for seconds: interrupted by the time bound
    ],
)
def test_pathological_answers_return_within_the_bound(answer):
    start = time.perf_counter()
    verdict = check_answer(f"\\boxed{{{answer}}}", "5", timeout_s=0.3)
    elapsed = time.perf_counter() - start
    assert verdict.status in ("wrong", "timeout")
    assert elapsed < 1.0, f"took {elapsed:.2f} s"


def test_timeout_status_and_bound_in_worker_threads():
    """math-verify's own signal timeouts fail outside the main thread; ours work there too."""
    slow, quick = "\\boxed{(x+1)^{1000}}", "\\boxed{0.5}"
    assert threading.current_thread() is threading.main_thread()
    assert check_answer(slow, "5", timeout_s=0.3).status == "timeout"
    with ThreadPoolExecutor(2) as pool:
        start = time.perf_counter()
        slow_verdict = pool.submit(check_answer, slow, "5", timeout_s=0.3)
        quick_verdict = pool.submit(check_answer, quick, "\\frac12", timeout_s=0.3)
        assert slow_verdict.result().status == "timeout"
        assert quick_verdict.result().status == "correct"
        assert time.perf_counter() - start < 1.5


def test_many_fast_calls_in_a_thread_leave_no_stray_timeouts():
    results = []

    def work():
        # each call takes milliseconds; the 1 s bound leaves room for a loaded CI machine
        results.extend(math_reward(f"\\boxed{{{i}}}", str(i), timeout_s=1.0) for i in range(200))
        time.sleep(1.2)  # a watchdog that fired late would surface here
        results.append(math_reward("\\boxed{3}", "3"))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert results == [1.0] * 201
