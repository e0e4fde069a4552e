"""The embedded task: chain arithmetic in five tiers with expert solutions, plus retained skills.

See :mod:`trapo_lab.tasks.arithmetic` (problems, native and expert solution styles), :mod:`trapo_lab.tasks.skills`
(the "general" column) and :mod:`trapo_lab.tasks.splits` (disjoint splits, the pre-training stream, files).
"""

from trapo_lab.tasks.arithmetic import (
    EXPERT_VARIANTS,
    TIERS,
    ChainProblem,
    expert_solution,
    native_solution,
    parse_chain,
    sample_chain,
    solution_style,
)
from trapo_lab.tasks.skills import SKILLS, SkillProblem, sample_skill, skill_solution
from trapo_lab.tasks.splits import (
    EXPERT_STYLES,
    PRETRAIN_TIER_WEIGHTS,
    SPLIT_FILES,
    TRAIN_TIER_WEIGHTS,
    PretrainMix,
    SplitConfig,
    arithmetic_examples,
    build_split,
    build_splits,
    chain_example,
    make_splits,
    pool_of,
    pretraining_stream,
    skill_example,
    skill_examples,
    tier_counts,
)

__all__ = [
    "EXPERT_STYLES",
    "EXPERT_VARIANTS",
    "PRETRAIN_TIER_WEIGHTS",
    "SKILLS",
    "SPLIT_FILES",
    "TIERS",
    "TRAIN_TIER_WEIGHTS",
    "ChainProblem",
    "PretrainMix",
    "SkillProblem",
    "SplitConfig",
    "arithmetic_examples",
    "build_split",
    "build_splits",
    "chain_example",
    "expert_solution",
    "make_splits",
    "native_solution",
    "parse_chain",
    "pool_of",
    "pretraining_stream",
    "sample_chain",
    "sample_skill",
    "skill_example",
    "skill_examples",
    "skill_solution",
    "solution_style",
    "tier_counts",
]
