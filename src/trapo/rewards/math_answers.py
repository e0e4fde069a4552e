"""Rule-based answer checking for math: extract the final answer, verify it with math-verify.

The rule (what :func:`check_answer` does, in order):

1. **Extract** the completion's final answer (:func:`extract_answer`):
   the content of the *last* ``\\boxed{...}`` or ``\\fbox{...}`` (balanced braces; ``\\boxed 5`` also works).
   If the last one is cut off (unbalanced: the model ran out of tokens), there is no answer: an earlier box
   is an intermediate result, not the final answer. Without any box, and with ``fallback=True``, the text
   after the last "answer is" / "answer:" phrase (up to the end of its line or sentence). A bare trailing
   number is *not* taken as the answer: on the shared benchmarks that credited an untrained model's
   truncated gibberish whenever it happened to end near a small-integer ground truth (3 of 60 problems).
   No candidate → status ``no_answer``.
2. **Normalise** both the ground truth and the candidate the same way: an enclosing ``\\boxed{}`` is
   unwrapped, ``$`` delimiters and ``\\$`` currency signs are dropped, and a plain number in e-notation
   (``4.5e33``) is rewritten as ``4.5\\times10^{33}`` (LaTeX would read ``e`` as Euler's number).
3. **Parse** each with ``math_verify.parse`` (LaTeX first, then plain expressions). A ground truth
   math-verify cannot parse at all → ``unverifiable_ground_truth`` (reported, never silently scored 0 by the
   evaluation harness). Parsed ground truths are cached (``functools.lru_cache``).
4. **Verify** with ``math_verify.verify(gold, candidate)``: numeric equality to 6 decimals, symbolic
   equality, sets, intervals, tuples, equations (``x=5`` matches ``5``), text answers. One tightening:
   6-decimal rounding makes all numbers below 5e-7 equal (``2.88e-19`` would match ``1.3e-27``), so when
   either number is below 1e-3 in magnitude they must also agree to a relative 1e-6.

The whole check runs under one wall-clock bound (``timeout_s``; see :mod:`trapo.rewards.timeout`), in any
thread; running past it gives status ``timeout``. That bound interrupts Python code only, so answers that
would make sympy run one huge C-level integer operation (``9^{9^{9^{9}}}``, ``(10^{10})!``: numbers over
``MAX_DIGITS`` digits) are refused as ``wrong`` before anything is evaluated, and answers longer than
``MAX_ANSWER_CHARS`` are not parsed. :func:`check_answer` and :func:`math_reward` never raise.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from dataclasses import dataclass
from typing import Literal

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from trapo.rewards.timeout import CallTimeout, call_with_timeout

Status = Literal["correct", "wrong", "no_answer", "unverifiable_ground_truth", "timeout"]

DEFAULT_TIMEOUT_S = 3.0
MAX_ANSWER_CHARS = 1000  # a longer "final answer" is not an answer; parsing it could take seconds
MAX_DIGITS = 1e6  # numbers larger than this are refused before sympy evaluates them (see _log10_size)

_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_PHRASE = re.compile(r"answer\s*(?:is|:)\s*:?[ \t]*([^\n]*)", re.IGNORECASE)
_E_NOTATION = re.compile(r"^([-+]?\d*\.?\d+)[eE]([-+]?\d+)$")


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once that its own timeout is off; we bound the call ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one completion against one ground truth."""

    status: Status
    extracted: str | None = None  # the candidate answer taken from the completion
    detail: str = ""

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    @property
    def score(self) -> float:
        return 1.0 if self.status == "correct" else 0.0


def _box_content(text: str, start: int) -> str | None:
    """Content of the box command starting at ``text[start]`` (braces balanced), or None if cut off."""
    command = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    i = start + len(command)
    if i < len(text) and text[i] == " ":  # "\boxed 5": up to the next space or "$"
        match = re.match(r" +([^\s$]+)", text[i:])
        return match.group(1) if match else None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{" and text[j - 1] != "\\":
            depth += 1
        elif text[j] == "}" and text[j - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text`` (None when absent or cut off)."""
    start = max(text.rfind(c) for c in _BOX_COMMANDS)
    if start < 0:
        return None
    return _box_content(text, start)


def _phrase_answer(text: str) -> str | None:
    matches = list(_ANSWER_PHRASE.finditer(text))
    if not matches:
        return None
    rest = matches[-1].group(1).strip()
    if rest.startswith("$"):  # "answer is $\frac{1}{2}$."
        end = rest.find("$", 1)
        rest = rest[1:end] if end > 0 else rest[1:]
    else:  # cut at the end of the sentence: ". " or a final "."
        rest = re.split(r"\.(?:\s|$)", rest, maxsplit=1)[0]
    rest = rest.strip().rstrip(".")
    return rest or None


def extract_answer(completion: str, *, fallback: bool = True) -> str | None:
    """The final answer of a completion, by the rule in the module docstring (None when there is none)."""
    if any(c in completion for c in _BOX_COMMANDS):
        return extract_boxed(completion)
    if not fallback:
        return None
    return _phrase_answer(completion) or None


def normalize_answer(answer: str) -> str:
    """Put an answer string (ground truth or extracted) in the form we hand to math-verify."""
    s = answer.strip()
    if any(c in s for c in _BOX_COMMANDS):
        s = extract_boxed(s) or s
    s = s.replace("\\$", "").replace("$", "").strip()
    match = _E_NOTATION.match(s)
    if match:
        s = f"{match.group(1)}\\times10^{{{match.group(2)}}}"
    return s


def _parse(answer: str) -> list:
    return parse("\\boxed{" + answer + "}", extraction_config=_EXTRACTION, parsing_timeout=None, raise_on_error=False)


@functools.lru_cache(maxsize=65536)
def _parse_ground_truth(ground_truth: str) -> tuple:
    return tuple(_parse(normalize_answer(ground_truth)))


@functools.lru_cache(maxsize=8192)
def _parse_candidate(candidate: str) -> tuple:
    return tuple(_parse(normalize_answer(candidate)))


def _log10_size(expr) -> float | None:
    """An upper bound on the number of decimal digits of a numeric expression (None: not purely numeric).

    Used before sympy evaluates anything: ``9^{9^{9^{9}}}`` is one C-level integer power that no signal or
    watchdog can interrupt, so answers whose numbers would exceed :data:`MAX_DIGITS` are refused instead.
    """
    if isinstance(expr, sympy.Rational):
        return max(math.log10(abs(int(expr.p)) + 1), math.log10(int(expr.q) + 1))
    if isinstance(expr, sympy.Number):
        value = abs(float(expr))
        return max(math.log10(value), 0.0) + 1 if math.isfinite(value) and value > 0 else (None if value else 1.0)
    if isinstance(expr, (sympy.NumberSymbol, sympy.core.numbers.ImaginaryUnit)):
        return 1.0
    if isinstance(expr, sympy.Pow):
        base, exponent = _log10_size(expr.base), _log10_size(expr.exp)
        if base is None or exponent is None:
            return None
        return base * 10**exponent if exponent < 300 else math.inf
    if isinstance(expr, sympy.factorial):
        n = _log10_size(expr.args[0])
        if n is None:
            return None
        return (10**n) * n if n < 300 else math.inf
    if isinstance(expr, sympy.Basic) and expr.args:
        sizes = [_log10_size(a) for a in expr.args]
        return None if any(x is None for x in sizes) else sum(sizes)
    return None


def _too_large(parsed: tuple) -> bool:
    """True when some power or factorial in the parsed answer would have more than MAX_DIGITS digits."""
    for expr in parsed:
        if not isinstance(expr, sympy.Basic):
            continue
        for node in sympy.preorder_traversal(expr):
            if isinstance(node, (sympy.Pow, sympy.factorial)):
                size = _log10_size(node)
                if size is not None and size > MAX_DIGITS:
                    return True
    return False


def _real_value(parsed: tuple) -> float | None:
    expr = parsed[0] if parsed else None
    if not isinstance(expr, sympy.Basic) or not expr.is_number or expr.is_real is not True:
        return None
    try:
        return float(expr.evalf())
    except (TypeError, ValueError, OverflowError):
        return None


def _tiny_numbers_differ(gold: tuple, pred: tuple) -> bool:
    """True when both answers are real numbers, one is below 1e-3, and they differ by more than 1e-6 relative."""
    g, p = _real_value(gold), _real_value(pred)
    if g is None or p is None or g == 0 or min(abs(g), abs(p)) >= 1e-3:
        return False
    return not math.isclose(g, p, rel_tol=1e-6, abs_tol=0.0)


def _check(completion: str, ground_truth: str, fallback: bool) -> Verdict:
    gold = _parse_ground_truth(ground_truth)
    if not gold or (not any(isinstance(g, sympy.Basic) for g in gold) and not _balanced(ground_truth)):
        return Verdict("unverifiable_ground_truth", detail=f"math-verify cannot parse ground truth {ground_truth!r}")
    if _too_large(gold):
        return Verdict("unverifiable_ground_truth", detail=f"ground truth has numbers over {MAX_DIGITS:.0e} digits")
    candidate = extract_answer(completion, fallback=fallback)
    if candidate is None or not candidate.strip():
        return Verdict("no_answer")
    if len(candidate) > MAX_ANSWER_CHARS:
        return Verdict("wrong", candidate[:80] + "...", detail=f"answer longer than {MAX_ANSWER_CHARS} characters")
    same = normalize_answer(candidate) == normalize_answer(ground_truth)
    pred = gold if same else _parse_candidate(candidate)  # the ground truth's parse is cached already
    if not pred:
        return Verdict("wrong", candidate, detail="math-verify cannot parse the answer")
    if _too_large(pred):
        return Verdict("wrong", candidate, detail=f"answer has numbers over {MAX_DIGITS:.0e} digits")
    ok = verify(list(gold), list(pred), timeout_seconds=None, raise_on_error=False)
    if ok and _tiny_numbers_differ(gold, pred):
        return Verdict("wrong", candidate, detail="numbers below 1e-3 that differ by more than 1e-6 relative")
    return Verdict("correct" if ok else "wrong", candidate)


_SLOW_GROUND_TRUTHS: dict[str, str] = {}  # ground truths whose parse ran past the bound -> why


_WORDS = re.compile(r"^[A-Za-z]{3,}(?:[ -][A-Za-z]+)*$")


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def ground_truth_problem(ground_truth: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> str | None:
    """Why ``ground_truth`` cannot be verified (math-verify cannot parse it, it is too large, or parsing it
    runs past ``timeout_s``), or None when it can. Results are cached, so checking a data set up front makes
    training pay nothing more for them. Words (``forty-two``) are reported too: math-verify reads them as a
    product of letters that only the same words match (they are scored, not counted as failures)."""
    verdict = check_answer("\\boxed{0}", ground_truth, timeout_s=timeout_s)
    if verdict.status == "unverifiable_ground_truth":
        return verdict.detail or verdict.status
    if _WORDS.match(normalize_answer(ground_truth)):
        return f"ground truth {ground_truth!r} is words, not math: only the same words match"
    return None


def check_answer(
    completion: str, ground_truth: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S, fallback: bool = True
) -> Verdict:
    """Check one completion against its ground truth; never raises (see the module docstring for the rule).

    Args:
        completion: the model's response text.
        ground_truth: the reference answer: bare LaTeX (``\\frac{1}{2}``), or wrapped in ``$...$`` or
            ``\\boxed{}``.
        timeout_s: wall-clock bound on the whole check (None: unbounded).
        fallback: when the completion has no box, look for "answer is X" / "answer: X".
    """
    if not isinstance(completion, str) or not isinstance(ground_truth, str):
        return Verdict("wrong", detail="completion and ground truth must be strings")
    if ground_truth in _SLOW_GROUND_TRUTHS:
        return Verdict("unverifiable_ground_truth", detail=_SLOW_GROUND_TRUTHS[ground_truth])
    stage = {"gold": False}

    def run() -> Verdict:
        _parse_ground_truth(ground_truth)
        stage["gold"] = True  # parsed (and cached): a timeout past here is the candidate's
        return _check(completion, ground_truth, fallback)

    try:
        return call_with_timeout(run, timeout_s)
    except CallTimeout:
        if not stage["gold"]:  # remembered: a pathological ground truth is paid for once, not every draw
            _SLOW_GROUND_TRUTHS[ground_truth] = f"parsing the ground truth ran past {timeout_s} s"
            return Verdict("unverifiable_ground_truth", detail=_SLOW_GROUND_TRUTHS[ground_truth])
        return Verdict("timeout", detail=f"check ran past {timeout_s} s")
    except Exception as err:  # math-verify normally catches its own errors; this is the last guard
        return Verdict("wrong", detail=f"{type(err).__name__}: {err}")


def math_reward(
    completion: str, ground_truth: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S, fallback: bool = True
) -> float:
    """1.0 if the completion's final answer equals ``ground_truth`` by :func:`check_answer`, else 0.0."""
    return check_answer(completion, ground_truth, timeout_s=timeout_s, fallback=fallback).score
