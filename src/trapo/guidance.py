"""Adaptive expert guidance with micro-group sampling (TRAPO.md §2).

Each prompt's ``N`` trajectories are sampled in micro-groups (authors: sizes 4, 2, 1, 1). Micro-group
``g`` gets a guidance level that sets how much of the expert solution is given as a prefix; groups after
the first are guided only while the prompt's cumulative return ``R`` (sum of 0/1 rewards so far) stays
below a threshold:

====== ===== ==================================================
group  size  level
====== ===== ==================================================
0      4     0 (no prefix)
1      2     1 (~25% prefix) if R < 2 after group 0, else 0
2      1     2 (~50% prefix) if R < 4 after groups 0-1, else 0
3      1     3 (whole solution) if R < 7 after groups 0-2, else 0
====== ===== ==================================================

:class:`MicroGroupSchedule` holds these numbers as configuration; :func:`cut_prefix` turns a level's
ratio into a token count, moving the cut forward to the next paragraph boundary when one is near.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from numbers import Integral, Real


@dataclass(frozen=True)
class MicroGroupSchedule:
    """Micro-group sizes, guidance ratios and thresholds (TRAPO.md §2; defaults are the authors').

    Attributes:
        sizes: trajectories per micro-group.
        ratios: ``ratios[g]`` is the expert-prefix ratio of guidance level ``g`` (level g is what
            micro-group g gets when guided). ``ratios[0]`` must be 0 (unguided).
        thresholds: micro-group ``g > 0`` is guided iff the cumulative return of the groups before it
            is ``< thresholds[g-1]``.
        prefix_loss_counts: how many trajectories of micro-group ``g`` get the prefix loss ((Tr)SFT) on
            their prefix when guided (authors: one of the two level-1, the level-2 and the level-3 trajectory).
        adaptive: ``False`` gives micro-group ``g`` level ``g`` regardless of returns (the "fixed prefix"
            ablation).
    """

    sizes: tuple[int, ...] = (4, 2, 1, 1)
    ratios: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    thresholds: tuple[float, ...] = (2, 4, 7)
    prefix_loss_counts: tuple[int, ...] = (0, 1, 1, 1)
    adaptive: bool = True

    def __post_init__(self) -> None:  # noqa: C901 (a flat list of independent checks)
        # Accept lists (e.g. from YAML) but store tuples so the schedule stays hashable.
        for name in ("sizes", "ratios", "thresholds", "prefix_loss_counts"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ValueError(f"`{name}` must be a sequence of numbers, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        sizes, ratios, thresholds = self.sizes, self.ratios, self.thresholds
        prefix_loss_counts = self.prefix_loss_counts

        if len(sizes) == 0:
            raise ValueError("`sizes` must name at least one micro-group")
        if any(isinstance(s, bool) or not isinstance(s, Integral) or s < 1 for s in sizes):
            raise ValueError(f"`sizes` must be integers >= 1, got {sizes!r}")
        if len(ratios) != len(sizes):
            raise ValueError(f"`ratios` must have one entry per micro-group ({len(sizes)}), got {ratios!r}")
        if any(isinstance(x, bool) or not isinstance(x, Real) or not 0.0 <= x <= 1.0 for x in ratios):
            raise ValueError(f"`ratios` must be numbers in [0, 1], got {ratios!r}")
        if ratios[0] != 0:
            raise ValueError(f"`ratios[0]` must be 0 (level 0 is unguided), got {ratios[0]!r}")
        if len(thresholds) != len(sizes) - 1:
            raise ValueError(
                f"`thresholds` must have one entry per micro-group after the first ({len(sizes) - 1}), "
                f"got {thresholds!r}"
            )
        if any(isinstance(x, bool) or not isinstance(x, Real) for x in thresholds):
            raise ValueError(f"`thresholds` must be numbers, got {thresholds!r}")
        if any(b < a for a, b in itertools.pairwise(thresholds)):
            raise ValueError(f"`thresholds` must be non-decreasing, got {thresholds!r}")
        if len(prefix_loss_counts) != len(sizes):
            raise ValueError(
                f"`prefix_loss_counts` must have one entry per micro-group ({len(sizes)}), got {prefix_loss_counts!r}"
            )
        for g, (count, size) in enumerate(zip(prefix_loss_counts, sizes, strict=True)):
            if isinstance(count, bool) or not isinstance(count, Integral) or not 0 <= count <= size:
                raise ValueError(
                    f"`prefix_loss_counts[{g}]` must be an integer in [0, sizes[{g}]={size}], got {count!r}"
                )
        if not isinstance(self.adaptive, bool):
            raise ValueError(f"`adaptive` must be a bool, got {self.adaptive!r}")

    @property
    def num_groups(self) -> int:
        """Number of micro-groups."""
        return len(self.sizes)

    @property
    def num_generations(self) -> int:
        """Trajectories per prompt, ``sum(sizes)`` (the group size ``N`` of the advantage)."""
        return sum(self.sizes)

    def level(self, group_index: int, cumulative_return: float) -> int:
        """Guidance level of micro-group ``group_index`` given the return of the groups before it.

        Group 0 is always level 0. Group ``g > 0`` gets level ``g`` when the schedule is not adaptive or
        when ``cumulative_return < thresholds[g-1]``; otherwise level 0 (no prefix).
        """
        if isinstance(group_index, bool) or not isinstance(group_index, int):
            raise ValueError(f"`group_index` must be an int, got {group_index!r}")
        if not 0 <= group_index < self.num_groups:
            raise ValueError(f"`group_index` must be in [0, {self.num_groups}), got {group_index}")
        if group_index == 0:
            return 0
        if not self.adaptive or cumulative_return < self.thresholds[group_index - 1]:
            return group_index
        return 0

    def prefix_ratio(self, level: int) -> float:
        """Expert-prefix ratio of guidance ``level`` (``ratios[level]``)."""
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < self.num_groups:
            raise ValueError(f"`level` must be an int in [0, {self.num_groups}), got {level!r}")
        return float(self.ratios[level])


def cut_prefix(
    token_ids: Sequence[int],
    ratio: float,
    boundary_ids: Collection[int],
    slack: float = 0.3,
    strict: bool = False,
) -> int:
    """Number of expert-solution tokens to give as a prefix for a guidance ``ratio`` (TRAPO.md §2).

    With ``n = len(token_ids)``: ratio 0 -> 0; ratio >= 1 -> ``n``. Otherwise ``t = int(n * ratio)`` and,
    if a boundary token (e.g. one containing ``"\\n\\n"``) sits at an index ``i >= t`` with
    ``i < n * (ratio + slack)``, the cut moves to just after the first such boundary (``i + 1``);
    otherwise the prefix is exactly ``t`` tokens.

    The search starts at ``t`` (the first token *not* in the exact prefix): a boundary there is reached by
    extending the prefix by one token. A boundary at ``t - 1`` already ends the exact prefix but is not
    looked for; only forward moves are made.

    ``strict=True`` is the authors' rule (``get_prefix_end_idx`` in their ``mix_vllm_rollout.py``): the
    first boundary at ``i > t``, so a boundary exactly at ``t`` is passed over. Ours (``False``) takes it:
    the cut then moves by one token to end on the paragraph break instead of on to the next one.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"`ratio` must be a number in [0, 1], got {ratio!r}")
    if isinstance(slack, bool) or not isinstance(slack, (int, float)) or slack < 0:
        raise ValueError(f"`slack` must be a number >= 0, got {slack!r}")
    if hasattr(token_ids, "tolist"):  # a tensor / array: compare plain ints, not 0-d tensors
        token_ids = token_ids.tolist()
    n = len(token_ids)
    if ratio == 0:
        return 0
    if ratio >= 1:
        return n
    t = int(n * ratio)
    limit = n * (ratio + slack)
    boundary = set(boundary_ids)
    for i in range(t + 1 if strict else t, n):
        if i >= limit:
            break
        if token_ids[i] in boundary:
            return i + 1
    return t
