"""The metrics and the report of an evaluation (:func:`trapo.evaluate.evaluate` fills it): avg@k and pass@k of a
problems × samples correctness matrix, per-problem results, per-group metrics, and the report's JSON and Markdown
table. The definitions of avg@k and pass@k are in :mod:`trapo.evaluate`'s docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------------------- metrics


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: ``1 - C(n-c, k)/C(n, k)``.

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (Chen et al. 2021), which never forms the binomials.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def _matrix(correct: Sequence[Sequence[Any]]) -> list[list[bool]]:
    rows = [[bool(x) for x in row] for row in correct]
    if not rows or not rows[0]:
        raise ValueError("correct must be a non-empty problems × samples matrix")
    if any(len(r) != len(rows[0]) for r in rows):
        raise ValueError("every problem must have the same number of samples")
    return rows


def avg_at_k(correct: Sequence[Sequence[Any]]) -> float:
    """avg@k: the mean of an n_problems × k correctness matrix (expected single-sample accuracy)."""
    rows = _matrix(correct)
    return sum(map(sum, rows)) / (len(rows) * len(rows[0]))


def pass_at_k_per_problem(correct: Sequence[Sequence[Any]], k: int) -> list[float]:
    """pass@k of each problem (row) of a correctness matrix."""
    return [pass_at_k(len(row), sum(row), k) for row in _matrix(correct)]


def mean_pass_at_k(correct: Sequence[Sequence[Any]], k: int) -> float:
    """pass@k averaged over the problems of a correctness matrix."""
    per_problem = pass_at_k_per_problem(correct, k)
    return sum(per_problem) / len(per_problem)


def default_pass_ks(k: int) -> tuple[int, ...]:
    """Powers of two up to k, and k itself: (1, 2, 4, 8, 16, 32) for k=32, (1, 2, 4, 5) for k=5."""
    ks = [2**i for i in range(k.bit_length()) if 2**i <= k]
    return tuple(sorted(set([*ks, k])))


# ---------------------------------------------------------------------------------------------- report


@dataclass
class ProblemResult:
    """The k samples of one problem."""

    index: int  # position in the evaluated examples
    group: str
    answer: str
    correct: list[bool]
    statuses: list[str]  # Verdict status per sample ("scored" for rewards that give plain floats)
    completion_tokens: list[int]
    truncated: list[bool]  # ran out of max_new_tokens before EOS
    completions: list[str] | None = None  # kept with keep_completions=True

    @property
    def unverifiable(self) -> bool:
        return "unverifiable_ground_truth" in self.statuses

    @property
    def n_correct(self) -> int:
        return sum(self.correct)


@dataclass
class GroupMetrics:
    """Metrics of one group of problems (a benchmark), or of all of them."""

    n_problems: int
    n_unverifiable: int
    n_timeouts: int  # samples whose check ran past its bound (scored wrong)
    avg_at_k: float | None  # None when no problem could be scored
    pass_at_k: dict[int, float]
    mean_completion_tokens: float
    truncated_rate: float
    tokens_per_s: float
    generation_s: float

    @classmethod
    def measure(
        cls, problems: list[ProblemResult], k: int, pass_ks: Sequence[int], n_tokens: int, seconds: float
    ) -> GroupMetrics:
        """The metrics of ``problems`` (k samples each), which took ``seconds`` to generate ``n_tokens`` tokens."""
        scored = [p.correct for p in problems if not p.unverifiable]
        samples = [t for p in problems for t in p.completion_tokens]
        truncated = [t for p in problems for t in p.truncated]
        return cls(
            n_problems=len(problems),
            n_unverifiable=sum(p.unverifiable for p in problems),
            n_timeouts=sum(s == "timeout" for p in problems for s in p.statuses),
            avg_at_k=avg_at_k(scored) if scored else None,
            pass_at_k={j: mean_pass_at_k(scored, j) for j in pass_ks} if scored else {},
            mean_completion_tokens=sum(samples) / len(samples) if samples else 0.0,
            truncated_rate=sum(truncated) / len(truncated) if truncated else 0.0,
            tokens_per_s=n_tokens / seconds if seconds > 0 else 0.0,
            generation_s=seconds,
        )

    @property
    def n_scored(self) -> int:
        return self.n_problems - self.n_unverifiable

    def to_dict(self, k: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_problems": self.n_problems,
            "n_scored": self.n_scored,
            "n_unverifiable": self.n_unverifiable,
            "n_timeouts": self.n_timeouts,
            f"avg@{k}": self.avg_at_k,
        }
        out.update({f"pass@{j}": v for j, v in self.pass_at_k.items()})
        out.update(
            mean_completion_tokens=self.mean_completion_tokens,
            truncated_rate=self.truncated_rate,
            tokens_per_s=self.tokens_per_s,
            generation_s=self.generation_s,
        )
        return out


@dataclass
class EvalReport:
    """What :func:`trapo.evaluate.evaluate` measured: per group, overall, and per problem."""

    k: int
    pass_ks: tuple[int, ...]
    groups: dict[str, GroupMetrics]
    overall: GroupMetrics
    problems: list[ProblemResult]
    settings: dict[str, Any] = field(default_factory=dict)

    def correctness(self, group: str | None = None) -> list[list[bool]]:
        """The problems × k correctness matrix of the scored problems (of one group, or all)."""
        return [p.correct for p in self.problems if not p.unverifiable and (group is None or p.group == group)]

    def pass_at_k_curve(self, group: str | None = None, ks: Sequence[int] | None = None) -> dict[int, float]:
        """pass@k for every k in ``ks`` (default 1..k), from the stored per-problem correctness."""
        matrix = self.correctness(group)
        if not matrix:
            return {}
        return {j: mean_pass_at_k(matrix, j) for j in (ks or range(1, self.k + 1))}

    def group_mean(self) -> dict[str, float]:
        """avg@k and pass@k averaged over groups (each benchmark weighs the same, as in the paper's average)."""
        scored = [g for g in self.groups.values() if g.avg_at_k is not None]
        if not scored:
            return {}
        out = {f"avg@{self.k}": sum(g.avg_at_k for g in scored) / len(scored)}
        for j in self.pass_ks:
            out[f"pass@{j}"] = sum(g.pass_at_k[j] for g in scored) / len(scored)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: settings, metrics per group / overall / mean of groups, and per-problem correctness."""
        return {
            "k": self.k,
            "pass_ks": list(self.pass_ks),
            "settings": self.settings,
            "overall": self.overall.to_dict(self.k),
            "groups": {name: g.to_dict(self.k) for name, g in self.groups.items()},
            "group_mean": self.group_mean(),
            "problems": [
                {
                    "index": p.index,
                    "group": p.group,
                    "answer": p.answer,
                    "unverifiable": p.unverifiable,
                    "n_correct": p.n_correct,
                    "correct": [int(c) for c in p.correct],
                    "statuses": p.statuses,
                    "completion_tokens": p.completion_tokens,
                    **({"completions": p.completions} if p.completions is not None else {}),
                }
                for p in self.problems
            ],
        }

    def table(self) -> str:
        """A Markdown table: one row per group, then all problems pooled, then the mean over groups."""
        pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
        head = [
            "group",
            "problems",
            f"avg@{self.k}",
            *(f"pass@{j}" for j in self.pass_ks),
            "unverifiable",
            "timeouts",
            "mean tokens",
            "truncated",
            "tokens/s",
        ]

        def row(name: str, g: GroupMetrics) -> list[str]:
            return [
                name,
                str(g.n_problems),
                pct(g.avg_at_k),
                *(pct(g.pass_at_k.get(j)) for j in self.pass_ks),
                str(g.n_unverifiable),
                str(g.n_timeouts),
                f"{g.mean_completion_tokens:.1f}",
                pct(g.truncated_rate),
                f"{g.tokens_per_s:.1f}",
            ]

        rows = [row(name, g) for name, g in self.groups.items()]
        rows.append(row("**all problems**", self.overall))
        if len(self.groups) > 1 and (mean := self.group_mean()):
            rows.append(
                [
                    "**mean of groups**",
                    "",
                    pct(mean[f"avg@{self.k}"]),
                    *(pct(mean[f"pass@{j}"]) for j in self.pass_ks),
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
