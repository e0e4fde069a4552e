"""Chain arithmetic in five tiers: the embedded task's in-domain problems and their solutions.

A problem starts at a number in 1..20 and applies ``tier`` operations left to right, each ``+x`` or ``-x``
(x in 1..30) or ``*x`` (x in 2..9); an operation whose result would leave 0..199 is redrawn
(MINIATURE.md). The prompt is the bare expression, e.g. ``4*5*9-28+26-23`` (no precedence: the chain is
evaluated left to right, and the solutions say so step by step).

Two solution styles, both one operation per paragraph (paragraphs separated by ``"\\n\\n"``) and ending
with ``\\boxed{N}``:

- **native** — what pre-training teaches::

      4*5=20\\n\\n20*9=180\\n\\n180-28=152\\n\\n152+26=178\\n\\n178-23=155\\n\\n\\boxed{155}

- **expert** — the post-training set's expert solutions, as a stronger model's traces are for a student:
  correct, same characters, but a place-value decomposition the student rarely saw. A step ``a±x`` with x
  of two digits (not a multiple of ten) is done in two moves, and ``a*x`` with ``a`` of two digits (not a
  multiple of ten) is done by partial products. Two variants exist, both natural:

  * ``"tens"`` (mental arithmetic, tens first): ``180-28=160-8=152``, ``23*7=140+21=161``
  * ``"units"`` (column method, units first): ``180-28=172-20=152``, ``23*7=21+140=161``

  Other steps (``a+7``, ``a-20``, ``4*5``, ``30*3``) read as in the native style. A paragraph always
  starts with the running value and the step, so a prefix cut at a paragraph boundary leaves the student
  exactly where its own style would continue.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

TIERS = (1, 2, 3, 4, 5)
START_RANGE = (1, 20)
ADD_RANGE = (1, 30)
MUL_RANGE = (2, 9)
VALUE_RANGE = (0, 199)
EXPERT_VARIANTS = ("tens", "units")


def check_tier(tier: int) -> int:
    """Return ``tier`` if it is one of :data:`TIERS`, else raise ``ValueError`` naming ``tier``."""
    if isinstance(tier, bool) or not isinstance(tier, int) or tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
    return tier


def apply_op(value: int, op: str, operand: int) -> int:
    if op == "+":
        return value + operand
    if op == "-":
        return value - operand
    if op == "*":
        return value * operand
    raise ValueError(f"op must be '+', '-' or '*', got {op!r}")


@dataclass(frozen=True)
class ChainProblem:
    """``start`` followed by ``steps`` (op, operand), evaluated left to right."""

    start: int
    steps: tuple[tuple[str, int], ...]

    @property
    def tier(self) -> int:
        return len(self.steps)

    @property
    def expression(self) -> str:
        return str(self.start) + "".join(f"{op}{x}" for op, x in self.steps)

    @property
    def values(self) -> list[int]:
        """Running values: ``[start, after step 1, ..., answer]``."""
        out = [self.start]
        for op, x in self.steps:
            out.append(apply_op(out[-1], op, x))
        return out

    @property
    def answer(self) -> int:
        return self.values[-1]


def sample_chain(rng: random.Random, tier: int) -> ChainProblem:
    """Draw one problem of ``tier`` operations (MINIATURE.md's generator: op type uniform over + - *,
    operand uniform in its range, a step redrawn while its result leaves 0..199)."""
    check_tier(tier)
    value = rng.randint(*START_RANGE)
    start = value
    steps = []
    for _ in range(tier):
        while True:
            op = rng.choice("+-*")
            x = rng.randint(*MUL_RANGE) if op == "*" else rng.randint(*ADD_RANGE)
            result = apply_op(value, op, x)
            if VALUE_RANGE[0] <= result <= VALUE_RANGE[1]:
                break
        steps.append((op, x))
        value = result
    return ChainProblem(start, tuple(steps))


def parse_chain(expression: str) -> ChainProblem:
    """Inverse of :attr:`ChainProblem.expression` (used by tests and to re-derive solutions from prompts)."""
    if not expression or not expression[0].isdigit():
        raise ValueError(f"expression must start with a number, got {expression!r}")
    i = 0
    while i < len(expression) and expression[i].isdigit():
        i += 1
    start = int(expression[:i])
    steps = []
    while i < len(expression):
        op = expression[i]
        j = i + 1
        while j < len(expression) and expression[j].isdigit():
            j += 1
        if op not in "+-*" or j == i + 1:
            raise ValueError(f"cannot parse expression {expression!r} at position {i}")
        steps.append((op, int(expression[i + 1 : j])))
        i = j
    return ChainProblem(start, tuple(steps))


def boxed(answer: int | str) -> str:
    return "\\boxed{" + str(answer) + "}"


def native_solution(problem: ChainProblem) -> str:
    """One ``a op x = r`` per paragraph, then ``\\boxed{answer}``."""
    values = problem.values
    lines = [f"{a}{op}{x}={r}" for a, (op, x), r in zip(values, problem.steps, values[1:], strict=False)]
    return "\n\n".join([*lines, boxed(problem.answer)])


def expert_step(value: int, op: str, x: int, variant: str) -> str:
    """One paragraph of the expert style (module docstring): place-value decomposition where it applies."""
    if variant not in EXPERT_VARIANTS:
        raise ValueError(f"variant must be one of {EXPERT_VARIANTS}, got {variant!r}")
    result = apply_op(value, op, x)
    head = f"{value}{op}{x}="
    if op in "+-" and x >= 10 and x % 10:
        tens, units = x - x % 10, x % 10
        first, second = (tens, units) if variant == "tens" else (units, tens)
        middle = apply_op(value, op, first)
        return f"{head}{middle}{op}{second}={result}"
    if op == "*" and value >= 10 and value % 10:
        tens_part, units_part = (value - value % 10) * x, (value % 10) * x
        first, second = (tens_part, units_part) if variant == "tens" else (units_part, tens_part)
        return f"{head}{first}+{second}={result}"
    return f"{head}{result}"


def expert_solution(problem: ChainProblem, variant: str = "tens") -> str:
    """The expert-style solution of ``problem`` in one of :data:`EXPERT_VARIANTS`."""
    values = problem.values
    lines = [expert_step(a, op, x, variant) for a, (op, x) in zip(values[:-1], problem.steps, strict=True)]
    return "\n\n".join([*lines, boxed(problem.answer)])


_NATIVE_STEP = re.compile(r"^\d+[-+*]\d+=\d+$")
_EXPERT_STEP = re.compile(r"^\d+[-+*]\d+=\d+[-+]\d+=\d+$")


def solution_style(text: str) -> str:
    """Which style a (generated) solution is written in: ``"expert"`` if any paragraph is a two-move
    place-value step (``180-28=160-8=152``, ``13*7=70+21=91``), else ``"native"`` if its steps are all
    single moves (``180-28=152``), else ``"other"`` (no step at all, or a malformed paragraph).

    Only the form is judged, not the arithmetic. An expert solution with nothing to decompose reads as
    native. Used to measure style switching: how many of a trained model's outputs copy the expert's
    style (MINIATURE.md, second pilot).
    """
    steps = [p.strip() for p in text.split("\n\n") if p.strip() and not p.strip().startswith("\\boxed")]
    if not steps:
        return "other"
    if any(_EXPERT_STEP.match(p) for p in steps):
        return "expert"
    return "native" if all(_NATIVE_STEP.match(p) for p in steps) else "other"
