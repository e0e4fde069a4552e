"""Methods as data: TRAPO, its ablations and its baselines are settings of one training loop.

A :class:`Method` says how each prompt's trajectories are sampled (micro-groups and guidance levels, a
:class:`~trapo.guidance.MicroGroupSchedule`), which loss the expert tokens get, and whether some steps are
plain SFT. The trainer has one path with these switches, not one loop per method.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from trapo.guidance import MicroGroupSchedule
from trapo.objective import PrefixLoss


@dataclass(frozen=True)
class Method:
    """One preset: its micro-group ``schedule``, the loss of its expert tokens (``prefix_loss``), and
    ``sft_fraction``, the share of optimizer steps (taken first) that are plain SFT on expert solutions (1.0
    is pure SFT, 0.5 with a GRPO schedule is SFT-then-GRPO). ``resizable``: ``num_generations`` resizes the
    first (unguided) micro-group and keeps the others (GRPO's one group, LUFFY's 7 + 1); TRAPO's thresholds
    are tied to its sizes, so its micro-groups are set explicitly instead."""

    name: str
    description: str
    schedule: MicroGroupSchedule
    prefix_loss: PrefixLoss
    sft_fraction: float = 0.0
    resizable: bool = False

    def sizes_for(self, num_generations: int) -> tuple[int, ...] | None:
        """This preset's micro-group sizes for ``num_generations`` trajectories per prompt (None: not resizable)."""
        rest = self.schedule.sizes[1:]
        if not self.resizable or num_generations - sum(rest) < 1:
            return None
        return (num_generations - sum(rest), *rest)


_TRAPO = MicroGroupSchedule()  # the authors': 4/2/1/1, ratios 0/0.25/0.5/1, thresholds 2/4/7
_GRPO = MicroGroupSchedule(sizes=(8,), ratios=(0.0,), thresholds=(), prefix_loss_counts=(0,))
_LUFFY = MicroGroupSchedule(sizes=(7, 1), ratios=(0.0, 1.0), thresholds=(0,), prefix_loss_counts=(0, 1), adaptive=False)

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "trapo",
            "TRAPO: micro-groups 4/2/1/1 with adaptive expert prefixes; TrSFT on prefixes, "
            "policy gradient on the model's continuations (TRAPO.md §1-3).",
            _TRAPO,
            "trsft",
        ),
        Method("trapo-sft", "Ablation: TRAPO with plain SFT (forward KL) on prefixes instead of TrSFT.", _TRAPO, "sft"),
        Method(
            "trapo-fixed",
            "Ablation: TRAPO with fixed prefix ratios (group g always gets level g) instead "
            "of levels adapted to the prompt's success.",
            dataclasses.replace(_TRAPO, adaptive=False),
            "trsft",
        ),
        Method(
            "grpo",
            "GRPO (zero-RL): 8 unguided samples per prompt, group-relative advantages.",
            _GRPO,
            "none",
            resizable=True,
        ),
        Method("sft", "SFT on expert solutions (token-mean NLL), no rollouts.", _GRPO, "none", 1.0, resizable=True),
        Method(
            "sft-then-grpo",
            "The two-stage pipeline: the first half of the steps SFT, then GRPO.",
            _GRPO,
            "none",
            0.5,
            resizable=True,
        ),
        Method(
            "luffy",
            "LUFFY: 7 on-policy samples + 1 whole expert solution in the same group advantage, "
            "with policy shaping f(p)=p/(p+gamma) on expert tokens.",
            _LUFFY,
            "luffy",
            resizable=True,
        ),
    )
}


def get_method(name: str) -> Method:
    """The preset called ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}") from None
