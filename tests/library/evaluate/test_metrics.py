"""avg@k and pass@k against values worked by hand."""

from __future__ import annotations

import math

import pytest

from trapo.evaluate import avg_at_k, default_pass_ks, mean_pass_at_k, pass_at_k, pass_at_k_per_problem


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 2, 1 - math.comb(3, 2) / math.comb(5, 2)),  # = 1 - 3/10 = 0.7
        (5, 2, 1, 2 / 5),  # pass@1 is the fraction correct
        (5, 0, 3, 0.0),
        (5, 5, 1, 1.0),
        (5, 3, 3, 1.0),  # n - c < k: some correct sample is always among any k
        (32, 1, 32, 1.0),
        (32, 1, 16, 0.5),  # 1 - C(31,16)/C(32,16) = 1 - 16/32
        (10, 3, 4, 1 - math.comb(7, 4) / math.comb(10, 4)),  # = 1 - 35/210 = 5/6
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    # binomials of this size overflow floats; the product form does not
    value = pass_at_k(2000, 3, 1000)
    assert value == pytest.approx(1 - (1000 * 999 * 998) / (2000 * 1999 * 1998), rel=1e-9)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_avg_and_pass_at_k_of_a_matrix():
    correct = [[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    assert avg_at_k(correct) == pytest.approx(5 / 12)
    assert pass_at_k_per_problem(correct, 1) == pytest.approx([0.25, 1.0, 0.0])
    assert pass_at_k_per_problem(correct, 2) == pytest.approx([0.5, 1.0, 0.0])  # 1 - C(3,2)/C(4,2) = 1/2
    assert mean_pass_at_k(correct, 2) == pytest.approx(0.5)
    assert mean_pass_at_k(correct, 4) == pytest.approx(2 / 3)
    assert mean_pass_at_k(correct, 1) == pytest.approx(avg_at_k(correct))  # pass@1 equals avg@k
    with pytest.raises(ValueError, match="same number of samples"):
        avg_at_k([[1, 0], [1]])
    with pytest.raises(ValueError, match="non-empty"):
        avg_at_k([])


def test_default_pass_ks():
    assert default_pass_ks(1) == (1,)
    assert default_pass_ks(5) == (1, 2, 4, 5)
    assert default_pass_ks(32) == (1, 2, 4, 8, 16, 32)
