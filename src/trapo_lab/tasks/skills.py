"""Retained skills: cheap abilities the base model is pre-trained on and post-training never exercises.

They play the part of the paper's "general-domain" column: a method that makes the model forget what it
knew outside the post-training domain loses accuracy here (MINIATURE.md, second pilot).

- ``reverse``: ``R:129724`` → ``\\boxed{427921}`` (5..8 digits, no zero at either end, so both the
  number and its reversal are written without leading zeros and math-verify compares them as numbers).
- ``sort``: ``S:31415`` → ``\\boxed{11345}`` (5..8 digits 1..9, sorted ascending).

A skill solution is the boxed answer alone: one paragraph, no steps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SKILLS = ("reverse", "sort")
DIGITS_RANGE = (5, 8)


def check_skill(skill: str) -> str:
    if skill not in SKILLS:
        raise ValueError(f"skill must be one of {SKILLS}, got {skill!r}")
    return skill


@dataclass(frozen=True)
class SkillProblem:
    skill: str
    digits: str

    @property
    def expression(self) -> str:
        return ("R:" if self.skill == "reverse" else "S:") + self.digits

    @property
    def answer(self) -> str:
        if self.skill == "reverse":
            return self.digits[::-1]
        return "".join(sorted(self.digits))


def sample_skill(rng: random.Random, skill: str) -> SkillProblem:
    """Draw one problem of ``skill`` (uniform length in 5..8, digits uniform under the skill's rules)."""
    check_skill(skill)
    n = rng.randint(*DIGITS_RANGE)
    if skill == "reverse":
        inner = "".join(rng.choice("0123456789") for _ in range(n - 2))
        digits = rng.choice("123456789") + inner + rng.choice("123456789")
    else:
        digits = "".join(rng.choice("123456789") for _ in range(n))
    return SkillProblem(skill, digits)


def skill_solution(problem: SkillProblem) -> str:
    return "\\boxed{" + problem.answer + "}"
