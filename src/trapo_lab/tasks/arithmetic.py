"""Chain arithmetic: the embedded task's in-domain problems and their solutions, in two task designs.

A problem starts at a number and applies ``tier`` operations left to right, each ``+x`` / ``-x`` or ``*x``;
an operation whose result would leave the value range is redrawn (MINIATURE.md). The prompt is the bare
expression, e.g. ``4*5*9-28+26-23`` (no precedence: the chain is evaluated left to right).

Two task designs (:data:`TASKS`; ``trapo data make --task`` / ``trapo base --task``):

- ``"shortcut"`` (the default) — *shortcut base, step-by-step expert*. Small numbers
  (:data:`SHORTCUT_RANGES`: start 1..99, ``+x``/``-x`` with x in 1..9, ``*x`` with x in 2..5, values
  0..99). Pre-training teaches every single operation as a written step (``37+5=42\n\n\boxed{42}``) and
  multi-operation chains in a *short form*, the answer alone (``\boxed{34}``, :func:`short_solution`),
  with a share written step by step on one line (the recipe: 20%, ``37+5=42-8*2;42-8=34*2;34*2=68``).
  The expert writes one operation per paragraph (:func:`step_solution`), by default in the *rewrite*
  form (leftmost operation evaluated, the rest of the chain rewritten after it)::

      37+5=42-8*2\n\n42-8=34*2\n\n34*2=68\n\n\boxed{68}

  or (``expert_style="steps"``) ``37+5=42\n\n42-8=34\n\n34*2=68\n\n\boxed{68}``. Every step is a skill
  the base has; the paragraph layout is one it never writes. Whether imitating it pays is measured in
  docs/results/miniature_gates.md (with the default 4.27M student it does: SFT lifts in-domain 32 → 69).
- ``"place-value"`` (the design of issues 6..14, kept for the record) — start 1..20, ``+x``/``-x`` with
  x in 1..30, ``*x`` with x in 2..9, values 0..199 (:data:`PLACE_VALUE_RANGES`). The base's *native*
  style is one operation per paragraph (:func:`native_solution`, the same text as :func:`step_solution`);
  the expert's is a place-value decomposition the base rarely saw:

  * ``"tens"`` (mental arithmetic, tens first): ``180-28=160-8=152``, ``23*7=140+21=161``
  * ``"units"`` (column method, units first): ``180-28=172-20=152``, ``23*7=21+140=161``

Tiers 1..5 are in-domain (:data:`TIERS`); tiers 6 and 7 (:data:`OOD_TIERS`) are the out-of-distribution
column of the shortcut design, chain lengths never used in pre-training or post-training.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

TIERS = (1, 2, 3, 4, 5)  # in-domain
OOD_TIERS = (6, 7)  # the out-of-distribution column (shortcut task): never in pre-training or post-training
ALL_TIERS = (*TIERS, *OOD_TIERS)
TASKS = ("shortcut", "place-value")
DEFAULT_TASK = "shortcut"
EXPERT_VARIANTS = ("tens", "units")


@dataclass(frozen=True)
class ChainRanges:
    """Where a chain's numbers come from (inclusive ranges)."""

    start: tuple[int, int]
    add: tuple[int, int]
    mul: tuple[int, int]
    value: tuple[int, int]


PLACE_VALUE_RANGES = ChainRanges(start=(1, 20), add=(1, 30), mul=(2, 9), value=(0, 199))
SHORTCUT_RANGES = ChainRanges(start=(1, 99), add=(1, 9), mul=(2, 5), value=(0, 99))
# the place-value design's names, kept
START_RANGE, ADD_RANGE, MUL_RANGE, VALUE_RANGE = (
    PLACE_VALUE_RANGES.start,
    PLACE_VALUE_RANGES.add,
    PLACE_VALUE_RANGES.mul,
    PLACE_VALUE_RANGES.value,
)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return task


def ranges_of(task: str) -> ChainRanges:
    return SHORTCUT_RANGES if check_task(task) == "shortcut" else PLACE_VALUE_RANGES


def check_tier(tier: int, tiers: tuple[int, ...] = ALL_TIERS) -> int:
    """Return ``tier`` if it is one of ``tiers`` (default: in-domain and OOD), else raise ``ValueError``."""
    if isinstance(tier, bool) or not isinstance(tier, int) or tier not in tiers:
        raise ValueError(f"tier must be one of {tiers}, got {tier!r}")
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


def sample_chain(rng: random.Random, tier: int, ranges: ChainRanges = PLACE_VALUE_RANGES) -> ChainProblem:
    """Draw one problem of ``tier`` operations (MINIATURE.md's generator: op type uniform over + - *,
    operand uniform in its range, a step redrawn while its result leaves the value range). ``ranges``
    defaults to the place-value design's (:func:`ranges_of` gives a task's)."""
    check_tier(tier)
    value = rng.randint(*ranges.start)
    start = value
    steps = []
    for _ in range(tier):
        while True:
            op = rng.choice("+-*")
            x = rng.randint(*ranges.mul) if op == "*" else rng.randint(*ranges.add)
            result = apply_op(value, op, x)
            if ranges.value[0] <= result <= ranges.value[1]:
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
    """One ``a op x = r`` per paragraph, then ``\\boxed{answer}`` (the place-value design's native style;
    the shortcut design's expert style, :func:`step_solution`)."""
    values = problem.values
    lines = [f"{a}{op}{x}={r}" for a, (op, x), r in zip(values, problem.steps, values[1:], strict=False)]
    return "\n\n".join([*lines, boxed(problem.answer)])


STEP_FORMS = ("steps", "rewrite")
STEP_LAYOUTS = ("paragraphs", "line")


def step_lines(problem: ChainProblem, form: str = "steps") -> list[str]:
    """The written steps of a chain, one per operation.

    ``form="steps"``: ``a op x=r`` (``37+5=42``, ``42-8=34``, ``34*2=68``). ``form="rewrite"``: the
    leftmost operation evaluated and the rest of the chain rewritten after it (``37+5=42-8*2``,
    ``42-8=34*2``, ``34*2=68``), so the next step reads its operation right there instead of finding it
    in the prompt.
    """
    if form not in STEP_FORMS:
        raise ValueError(f"form must be one of {STEP_FORMS}, got {form!r}")
    values, lines = problem.values, []
    for i, (op, x) in enumerate(problem.steps):
        rest = "".join(f"{o}{y}" for o, y in problem.steps[i + 1 :]) if form == "rewrite" else ""
        lines.append(f"{values[i]}{op}{x}={values[i + 1]}{rest}")
    return lines


def step_solution(problem: ChainProblem, form: str = "steps", layout: str = "paragraphs") -> str:
    """A chain written out step by step (:func:`step_lines`), then ``\\boxed{answer}``.

    ``layout="paragraphs"`` (the shortcut design's expert): one step per paragraph (``"\\n\\n"``), so
    prefix cuts land between steps; with ``form="steps"`` the same text as :func:`native_solution`.
    ``layout="line"``: the steps on one line separated by ``;`` (``37+5=42;42-8=34;34*2=68``), the
    layout of the base model's own rare written chains when pre-training is told to use it.
    """
    if layout not in STEP_LAYOUTS:
        raise ValueError(f"layout must be one of {STEP_LAYOUTS}, got {layout!r}")
    lines = step_lines(problem, form)
    body = "\n\n".join(lines) if layout == "paragraphs" else ";".join(lines)
    return body + "\n\n" + boxed(problem.answer)


def short_solution(problem: ChainProblem) -> str:
    """The shortcut design's base form: a single operation as a written step (``37+5=42\\n\\n\\boxed{42}``),
    a chain of two or more operations answered directly (``\\boxed{34}``)."""
    return native_solution(problem) if problem.tier == 1 else boxed(problem.answer)


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
_REWRITE_STEP = re.compile(r"^\d+[-+*]\d+=\d+(?:[-+*]\d+)*$")
_EXPERT_STEP = re.compile(r"^\d+[-+*]\d+=\d+[-+]\d+=\d+$")


def solution_style(text: str, task: str = DEFAULT_TASK) -> str:
    """Which style a (generated) solution is written in: ``"expert"``, ``"native"`` (the base model's
    own form) or ``"other"``. Only the form is judged, not the arithmetic.

    ``task="shortcut"`` (default): ``"expert"`` if it writes one or more steps (``37+5=42``, or in the
    rewrite form ``37+5=42-8*2``), one per paragraph, and every paragraph before the answer is a step;
    ``"native"`` if it is the answer alone (``\\boxed{34}``); ``"other"`` otherwise (steps on one line
    included: :func:`writes_steps` counts those). A tier-1 problem's two forms coincide and read as expert.

    ``task="place-value"``: ``"expert"`` if any paragraph is a two-move place-value step
    (``180-28=160-8=152``, ``13*7=70+21=91``), else ``"native"`` if its steps are all single moves
    (``180-28=152``), else ``"other"`` (no step at all, or a malformed paragraph). An expert solution
    with nothing to decompose reads as native.

    Used to measure style switching: how many of a model's outputs are in the expert's form.
    """
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    steps = [p for p in paragraphs if not p.startswith("\\boxed")]
    if check_task(task) == "shortcut":
        if not steps:
            return "native" if paragraphs else "other"
        return "expert" if all(_REWRITE_STEP.match(p) for p in steps) else "other"
    if not steps:
        return "other"
    if any(_EXPERT_STEP.match(p) for p in steps):
        return "expert"
    return "native" if all(_NATIVE_STEP.match(p) for p in steps) else "other"


def writes_steps(text: str) -> bool:
    """Whether a (generated) solution writes any step ``a op x=r``, in any layout (paragraphs or one
    line): the strict count of how often a model writes a chain out."""
    return any(_REWRITE_STEP.match(part.strip()) for para in text.split("\n\n") for part in para.split(";"))
