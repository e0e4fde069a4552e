"""Micro-group schedule and prefix cutting (TRAPO.md §2)."""

from __future__ import annotations

import pytest
import torch

from trapo.guidance import MicroGroupSchedule, cut_prefix

# ----------------------------------------------------------------------------------------------
# MicroGroupSchedule
# ----------------------------------------------------------------------------------------------

# (group, cumulative return, expected level) for the authors' defaults: thresholds 2, 4, 7
LEVEL_TABLE = [
    *[(0, r, 0) for r in (0, 1, 2, 4, 7, 8)],  # group 0 is never guided
    (1, 0, 1), (1, 1, 1), (1, 1.999, 1), (1, 2, 0), (1, 3, 0), (1, 4, 0),
    (2, 0, 2), (2, 3, 2), (2, 3.999, 2), (2, 4, 0), (2, 5, 0), (2, 6, 0),
    (3, 0, 3), (3, 6, 3), (3, 6.999, 3), (3, 7, 0), (3, 8, 0),
]  # fmt: skip


@pytest.mark.parametrize(("group", "ret", "level"), LEVEL_TABLE)
def test_default_level_table(group, ret, level):
    assert MicroGroupSchedule().level(group, ret) == level


@pytest.mark.parametrize(("group", "ret"), [(g, r) for g in range(4) for r in (0, 2, 4, 7, 8)])
def test_fixed_prefix_ablation_ignores_returns(group, ret):
    assert MicroGroupSchedule(adaptive=False).level(group, ret) == group


def test_defaults_and_derived_quantities():
    s = MicroGroupSchedule()
    assert s.num_generations == 8
    assert [s.prefix_ratio(level) for level in range(4)] == [0.0, 0.25, 0.5, 1.0]
    assert s.prefix_loss_counts == (0, 1, 1, 1)


def test_custom_schedule_lists_become_tuples():
    s = MicroGroupSchedule(sizes=[3, 3], ratios=[0, 0.5], thresholds=[1], prefix_loss_counts=[0, 3])
    assert s.sizes == (3, 3) and s.ratios == (0, 0.5) and s.thresholds == (1,)
    hash(s)  # frozen and hashable
    assert s.num_generations == 6
    assert s.level(1, 0) == 1 and s.level(1, 1) == 0
    single = MicroGroupSchedule(sizes=(8,), ratios=(0,), thresholds=(), prefix_loss_counts=(0,))
    assert single.level(0, 0) == 0 and single.num_generations == 8


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sizes": (4, 2, 1, 0)}, "sizes"),
        ({"sizes": (4, 2, 1, 1.5)}, "sizes"),
        ({"sizes": ()}, "sizes"),
        ({"ratios": (0, 0.25, 0.5)}, "ratios"),
        ({"ratios": (0, 0.25, 0.5, 1.5)}, "ratios"),
        ({"ratios": (0.1, 0.25, 0.5, 1.0)}, "ratios"),
        ({"thresholds": (2, 4)}, "thresholds"),
        ({"thresholds": (2, 7, 4)}, "thresholds"),
        ({"prefix_loss_counts": (0, 1, 1)}, "prefix_loss_counts"),
        ({"prefix_loss_counts": (0, 3, 1, 1)}, "prefix_loss_counts"),
        ({"prefix_loss_counts": (0, -1, 1, 1)}, "prefix_loss_counts"),
        ({"adaptive": "yes"}, "adaptive"),
        ({"sizes": "4211"}, "sizes"),
    ],
)
def test_schedule_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MicroGroupSchedule(**kwargs)


def test_level_and_ratio_bad_arguments():
    s = MicroGroupSchedule()
    with pytest.raises(ValueError, match="group_index"):
        s.level(4, 0)
    with pytest.raises(ValueError, match="group_index"):
        s.level(-1, 0)
    with pytest.raises(ValueError, match="level"):
        s.prefix_ratio(4)


# ----------------------------------------------------------------------------------------------
# cut_prefix
# ----------------------------------------------------------------------------------------------

B = 0  # boundary token id ("\n\n")


def _ids(n: int, boundaries: tuple[int, ...] = ()) -> list[int]:
    return [B if i in boundaries else 5 for i in range(n)]


# n = 20, ratio 0.25: t = 5, window [5, 20 * 0.55 = 11)
@pytest.mark.parametrize(
    ("boundaries", "expected"),
    [
        ((8,), 9),  # boundary within slack: cut just after it
        ((8, 10), 9),  # the first boundary wins
        ((5,), 6),  # a boundary at t itself: extend by one token to include it
        ((10,), 11),  # last index inside the window
        ((12,), 5),  # boundary too far -> exact cut
        ((2, 4), 5),  # boundaries only before t are not looked for
        ((), 5),  # no boundary at all -> exact cut
    ],
)
def test_cut_prefix_quarter(boundaries, expected):
    assert cut_prefix(_ids(20, boundaries), 0.25, {B}) == expected


def test_cut_prefix_edges():
    ids = _ids(20, (3, 8))
    assert cut_prefix(ids, 0.0, {B}) == 0
    assert cut_prefix(ids, 1.0, {B}) == 20
    assert cut_prefix([], 0.5, {B}) == 0
    # slack 0 -> always exact
    assert cut_prefix(ids, 0.25, {B}, slack=0.0) == 5
    # several boundary ids, tensors accepted
    assert cut_prefix(torch.tensor([5, 5, 5, 7, 5, 5, 5, 5, 5, 5]), 0.2, [0, 7]) == 4
    # ratio 0.5 of 10 tokens: t = 5, window [5, 8); boundary at 9 is too far
    assert cut_prefix(_ids(10, (9,)), 0.5, {B}) == 5
    assert cut_prefix(_ids(10, (7,)), 0.5, {B}) == 8


@pytest.mark.parametrize("ratio", [-0.1, 1.1, float("nan")])
def test_cut_prefix_bad_ratio(ratio):
    with pytest.raises(ValueError, match="ratio"):
        cut_prefix(_ids(10), ratio, {B})


def test_cut_prefix_bad_slack():
    with pytest.raises(ValueError, match="slack"):
        cut_prefix(_ids(10), 0.5, {B}, slack=-0.1)
