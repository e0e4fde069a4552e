"""Methods as data: TRAPO, its ablations and its baselines are settings of one training loop.

A :class:`Method` says how each prompt's trajectories are sampled (micro-groups and guidance levels, a
:class:`~trapo.guidance.MicroGroupSchedule`), which loss the expert tokens get, and whether some steps are
plain SFT. The trainer has one path with these switches, not one loop per method.
"""

from __future__ import annotations

from dataclasses import dataclass

from trapo.objective import PrefixLoss


@dataclass(frozen=True)
class Method:
    """One preset. ``sft_fraction`` is the share of optimizer steps (taken first) that are plain SFT on
    expert solutions; 1.0 is pure SFT, 0.5 with a GRPO schedule is SFT-then-GRPO."""

    name: str
    description: str
    sizes: tuple[int, ...]
    ratios: tuple[float, ...]
    thresholds: tuple[float, ...]
    prefix_loss_counts: tuple[int, ...]
    adaptive: bool
    prefix_loss: PrefixLoss
    sft_fraction: float = 0.0


_TRAPO = dict(sizes=(4, 2, 1, 1), ratios=(0.0, 0.25, 0.5, 1.0), thresholds=(2, 4, 7), prefix_loss_counts=(0, 1, 1, 1))
_GRPO = dict(sizes=(8,), ratios=(0.0,), thresholds=(), prefix_loss_counts=(0,), adaptive=True, prefix_loss="none")

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "trapo",
            "TRAPO: micro-groups 4/2/1/1 with adaptive expert prefixes; TrSFT on prefixes, "
            "policy gradient on the model's continuations (TRAPO.md §1-3).",
            adaptive=True,
            prefix_loss="trsft",
            **_TRAPO,
        ),
        Method(
            "trapo-sft",
            "Ablation: TRAPO with plain SFT (forward KL) on prefixes instead of TrSFT.",
            adaptive=True,
            prefix_loss="sft",
            **_TRAPO,
        ),
        Method(
            "trapo-fixed",
            "Ablation: TRAPO with fixed prefix ratios (group g always gets level g) instead "
            "of levels adapted to the prompt's success.",
            adaptive=False,
            prefix_loss="trsft",
            **_TRAPO,
        ),
        Method("grpo", "GRPO (zero-RL): 8 unguided samples per prompt, group-relative advantages.", **_GRPO),
        Method("sft", "SFT on expert solutions (token-mean NLL), no rollouts.", sft_fraction=1.0, **_GRPO),
        Method(
            "sft-then-grpo",
            "The two-stage pipeline: the first half of the steps SFT, then GRPO.",
            sft_fraction=0.5,
            **_GRPO,
        ),
        Method(
            "luffy",
            "LUFFY: 7 on-policy samples + 1 whole expert solution in the same group advantage, "
            "with policy shaping f(p)=p/(p+gamma) on expert tokens.",
            sizes=(7, 1),
            ratios=(0.0, 1.0),
            thresholds=(0,),
            prefix_loss_counts=(0, 1),
            adaptive=False,
            prefix_loss="luffy",
        ),
    )
}


def get_method(name: str) -> Method:
    """The preset called ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}") from None
