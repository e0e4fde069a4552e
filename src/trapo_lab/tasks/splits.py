"""Train / validation / test splits of the embedded task, the pre-training stream, and writing them to disk.

Disjointness by construction. Every problem belongs to exactly one *pool* ("train", "val" or "test"),
decided by a hash of its prompt text that depends on no seed (:func:`pool_of`). Validation and test sets
are drawn only from their pools; the post-training set and the pre-training stream only from the train
pool. So for every seed and every size, test, validation and training problems never overlap, and no
test or validation problem is ever seen in pre-training (its prompt string never appears; its
sub-computations do, as steps of longer chains, as in any arithmetic curriculum).

Tier 1 has few distinct problems, so its held-out pools are large: in the shortcut design (default) 1826
problems, 30% test and 12% validation (about 548 and 219; 58% left for single-operation drills); in the
place-value design 970 problems, 56% test and 22% validation (542 and 224; 204 left for training).
Tiers 2..7 and the skills have huge spaces and hold out 10% / 5%.

The shortcut design adds an out-of-distribution column: tiers 6 and 7 (``ood-t6``, ``ood-t7``), in their
own split files ``val_ood`` / ``test_ood``, never drawn for pre-training or post-training.

Post-training tier mix (:data:`TRAIN_TIER_WEIGHTS`): weighted toward tiers 3..5, where the base model's
pass rate is between ~50% and ~0% and adaptive guidance has something to decide; tier 1 (solved by the
base) and tier 2 keep a small share so that easy prompts, which need no guidance, are represented too.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trapo.atomic import atomic_directory
from trapo.data.schema import Example
from trapo_lab.tasks.arithmetic import (
    DEFAULT_TASK,
    EXPERT_VARIANTS,
    OOD_TIERS,
    STEP_FORMS,
    STEP_LAYOUTS,
    TIERS,
    ChainProblem,
    check_task,
    check_tier,
    expert_solution,
    native_solution,
    ranges_of,
    sample_chain,
    short_solution,
    step_solution,
)
from trapo_lab.tasks.skills import SKILLS, SkillProblem, check_skill, sample_skill, skill_solution

FORMAT = "trapo-arith-v1"
POOLS = ("train", "val", "test")
# (test share, validation share) of each problem space per task; the rest is the train pool.
HELD_OUT_SHARES: dict[str, dict[str, tuple[float, float]]] = {
    "place-value": {"arith-t1": (0.56, 0.22)},
    "shortcut": {"arith-t1": (0.30, 0.12)},
}
DEFAULT_HELD_OUT = (0.10, 0.05)
TRAIN_TIER_WEIGHTS = (0.05, 0.15, 0.25, 0.30, 0.25)
SPLIT_FILES = ("train", "val", "test", "val_skills", "test_skills", "val_ood", "test_ood")


def split_files(task: str = DEFAULT_TASK) -> tuple[str, ...]:
    """The split files a task writes: the place-value design has no OOD column."""
    return SPLIT_FILES if check_task(task) == "shortcut" else SPLIT_FILES[:5]


def data_source_of_tier(tier: int) -> str:
    """``arith-t1`` .. ``arith-t5`` for in-domain tiers, ``ood-t6`` / ``ood-t7`` for the OOD column."""
    return f"{'ood' if check_tier(tier) in OOD_TIERS else 'arith'}-t{tier}"


def pool_of(data_source: str, prompt_text: str, task: str = DEFAULT_TASK) -> str:
    """The pool ("train", "val" or "test") a problem belongs to: a seed-free hash of its prompt.

    ``u = blake2b(data_source + "\\x00" + prompt) / 2**64``; test if ``u < test share``, validation if
    ``u < test share + val share``, else train (shares of ``task`` in :data:`HELD_OUT_SHARES`).
    """
    digest = hashlib.blake2b(f"{data_source}\x00{prompt_text}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    test, val = HELD_OUT_SHARES[check_task(task)].get(data_source, DEFAULT_HELD_OUT)
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"


def _check_count(name: str, value: int, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}")
    return value


def _check_weights(name: str, weights: Sequence[float], n: int) -> list[float]:
    weights = [float(w) for w in weights]
    if len(weights) != n or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"{name} must be {n} non-negative numbers with a positive sum, got {weights!r}")
    total = sum(weights)
    return [w / total for w in weights]


def tier_counts(n: int, weights: Sequence[float] = TRAIN_TIER_WEIGHTS) -> dict[int, int]:
    """Split ``n`` problems over tiers 1..5 in proportion to ``weights`` (largest remainder, so the
    counts are exact and sum to ``n``)."""
    _check_count("n", n, allow_zero=True)
    shares = _check_weights("weights", weights, len(TIERS))
    raw = [n * s for s in shares]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))[: n - sum(counts)]:
        counts[i] += 1
    return dict(zip(TIERS, counts, strict=True))


EXPERT_STYLES = ("place-value", "native", "steps", "rewrite")  # what `trapo data make --expert-style` offers
TASK_EXPERT_STYLES = {"shortcut": ("rewrite", "steps"), "place-value": ("place-value", "native")}  # first: default


def check_expert_style(style: str | None, task: str = "place-value") -> str:
    """``style`` if ``task`` offers it (None: the task's default), else ``ValueError``."""
    offered = TASK_EXPERT_STYLES[check_task(task)]
    if style is None:
        return offered[0]
    if style not in offered:
        raise ValueError(f"expert_style must be one of {offered} for task {task!r}, got {style!r}")
    return style


def chain_example(
    problem: ChainProblem, split: str = "", expert_style: str | None = None, task: str = DEFAULT_TASK
) -> Example:
    """An :class:`Example` of a chain problem; the base model's own form in ``meta["native_solution"]``.

    ``task="shortcut"`` (default): the expert solution is written one step per paragraph
    (:func:`step_solution`, ``expert_style`` "steps" or "rewrite" its form); the native form is the short
    one (:func:`short_solution`: the answer alone for two or more operations).

    ``task="place-value"``: ``expert_style`` "place-value" (its default, off-policy for the base model):
    both expert variants (one when they coincide). "native": the native solution is the one expert
    solution, the on-policy control (2% of its tokens below p = 0.1 under that base model, against 25%).
    """
    style = check_expert_style(expert_style, task)
    if task == "shortcut":
        experts: tuple[str, ...] = (step_solution(problem, style),)
        native = short_solution(problem)
    elif style == "native":
        experts, native = (native_solution(problem),), native_solution(problem)
    else:
        experts = tuple(dict.fromkeys(expert_solution(problem, v) for v in EXPERT_VARIANTS))
        native = native_solution(problem)
    return Example(
        prompt=[{"role": "user", "content": problem.expression}],
        answer=str(problem.answer),
        expert_solutions=experts,
        data_source=data_source_of_tier(problem.tier),
        meta={"tier": problem.tier, "split": split, "native_solution": native},
    )


def skill_example(problem: SkillProblem, split: str = "") -> Example:
    solution = skill_solution(problem)
    return Example(
        prompt=[{"role": "user", "content": problem.expression}],
        answer=problem.answer,
        expert_solutions=(solution,),
        data_source=problem.skill,
        meta={"tier": 0, "split": split, "native_solution": solution},
    )


def _draw_unique(draw, data_source: str, pool: str, n: int, what: str, task: str = DEFAULT_TASK) -> list:
    """Draw ``n`` distinct problems of ``pool`` with ``draw()``; a clear error if the pool runs dry."""
    seen: set[str] = set()
    out = []
    attempts, max_attempts = 0, 200 * n + 20_000
    while len(out) < n:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(
                f"{what}: could only find {len(out)} distinct {data_source} problems in the {pool} pool, "
                f"{n} requested; ask for fewer"
            )
        problem = draw()
        text = problem.expression
        if text in seen or pool_of(data_source, text, task) != pool:
            continue
        seen.add(text)
        out.append(problem)
    return out


def arithmetic_examples(
    split: str, counts: dict[int, int], *, seed: int = 0, expert_style: str | None = None, task: str = DEFAULT_TASK
) -> list[Example]:
    """``counts[tier]`` distinct chain problems per tier from ``split``'s pool, tiers in order, with expert
    solutions in ``expert_style`` (:func:`chain_example`). OOD tiers (6, 7) only from held-out pools."""
    if split not in POOLS:
        raise ValueError(f"split must be one of {POOLS}, got {split!r}")
    ranges = ranges_of(task)
    tiers = (*TIERS, *OOD_TIERS) if task == "shortcut" else TIERS
    out: list[Example] = []
    for tier, n in counts.items():
        check_tier(tier, tiers)
        if tier in OOD_TIERS and split == "train":
            raise ValueError(f"tier {tier} is out-of-distribution: never drawn for the train split")
        _check_count(f"counts[{tier}]", n, allow_zero=True)
        source = data_source_of_tier(tier)
        rng = random.Random(f"{seed}:{split}:arith-t{tier}")
        problems = _draw_unique(lambda rng=rng, t=tier: sample_chain(rng, t, ranges), source, split, n, split, task)
        out.extend(chain_example(p, split, expert_style, task) for p in problems)
    return out


def skill_examples(split: str, n_per_skill: int, *, seed: int = 0, skills: Sequence[str] = SKILLS) -> list[Example]:
    """``n_per_skill`` distinct problems of each retained skill from ``split``'s pool."""
    if split not in POOLS:
        raise ValueError(f"split must be one of {POOLS}, got {split!r}")
    _check_count("n_per_skill", n_per_skill, allow_zero=True)
    out: list[Example] = []
    for skill in skills:
        check_skill(skill)
        rng = random.Random(f"{seed}:{split}:{skill}")
        problems = _draw_unique(
            lambda rng=rng, s=skill: sample_skill(rng, s), skill, split, n_per_skill, split, "place-value"
        )  # skills: one pool for every task
        out.extend(skill_example(p, split) for p in problems)
    return out


@dataclass(frozen=True)
class SplitConfig:
    """What :func:`make_splits` writes (defaults: ≥500 test problems per tier, ~200 validation)."""

    seed: int = 0
    n_train: int = 4000
    n_val_per_tier: int = 200
    n_test_per_tier: int = 500
    train_tier_weights: tuple[float, ...] = TRAIN_TIER_WEIGHTS
    skills: tuple[str, ...] = SKILLS
    n_skill_val: int = 200
    n_skill_test: int = 500
    expert_style: str | None = None  # None: the task's default (shortcut: steps; place-value: place-value)
    task: str = DEFAULT_TASK
    format: str = field(default=FORMAT)

    def __post_init__(self) -> None:
        _check_count("n_train", self.n_train)
        _check_count("n_val_per_tier", self.n_val_per_tier)
        _check_count("n_test_per_tier", self.n_test_per_tier)
        _check_count("n_skill_val", self.n_skill_val, allow_zero=not self.skills)
        _check_count("n_skill_test", self.n_skill_test, allow_zero=not self.skills)
        _check_weights("train_tier_weights", self.train_tier_weights, len(TIERS))
        for skill in self.skills:
            check_skill(skill)
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        object.__setattr__(self, "expert_style", check_expert_style(self.expert_style, self.task))

    def hash(self) -> str:
        fields = asdict(self)
        if fields["task"] == "place-value":  # hashes of splits made before the shortcut design stay
            del fields["task"]
            if fields["expert_style"] == "place-value":  # and before the expert-style option
                del fields["expert_style"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def build_split(config: SplitConfig, name: str) -> list[Example]:
    """One split in memory: ``train`` (shuffled tier mix), ``val`` / ``test`` (per tier, tier order),
    ``val_skills`` / ``test_skills`` (per skill), ``val_ood`` / ``test_ood`` (tiers 6 and 7, shortcut
    design only; as many problems per tier as ``val`` / ``test``)."""
    seed, style, task = config.seed, config.expert_style, config.task
    files = split_files(task)
    if name not in files:
        raise ValueError(f"split must be one of {files}, got {name!r}")
    if name == "train":
        counts = tier_counts(config.n_train, config.train_tier_weights)
        train = arithmetic_examples("train", counts, seed=seed, expert_style=style, task=task)
        random.Random(f"{seed}:shuffle").shuffle(train)
        return train
    if name in ("val", "test", "val_ood", "test_ood"):
        pool = name.split("_")[0]
        n = config.n_val_per_tier if pool == "val" else config.n_test_per_tier
        tiers = OOD_TIERS if name.endswith("_ood") else TIERS
        return arithmetic_examples(pool, dict.fromkeys(tiers, n), seed=seed, expert_style=style, task=task)
    if name == "val_skills":
        return skill_examples("val", config.n_skill_val, seed=seed, skills=config.skills)
    return skill_examples("test", config.n_skill_test, seed=seed, skills=config.skills)


def build_splits(config: SplitConfig | None = None, **kwargs) -> dict[str, list[Example]]:
    """All splits of the config's task in memory (see :func:`build_split`); ``kwargs`` are
    :class:`SplitConfig` fields."""
    config = config or SplitConfig(**kwargs)
    return {name: build_split(config, name) for name in split_files(config.task)}


def _write_split(examples: list[Example], split: str, directory: Path) -> dict[str, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = "val" if split.startswith("val") else "test" if split.startswith("test") else "train"
    rows = [ex.to_verl_row(index=i, split=pool) for i, ex in enumerate(examples)]
    pq.write_table(pa.Table.from_pylist(rows), directory / f"{split}.parquet")
    with open(directory / f"{split}.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"parquet": f"{split}.parquet", "jsonl": f"{split}.jsonl"}


MANIFEST = "manifest.json"


def make_splits(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    n_train: int = 4000,
    n_val_per_tier: int = 200,
    n_test_per_tier: int = 500,
    train_tier_weights: Sequence[float] = TRAIN_TIER_WEIGHTS,
    skills: Sequence[str] = SKILLS,
    n_skill_val: int = 200,
    n_skill_test: int = 500,
    expert_style: str | None = None,
    task: str = DEFAULT_TASK,
    force: bool = False,
    progress: bool = False,
) -> dict[str, Path]:
    """Write the embedded task's splits to ``out_dir`` as verl parquet and JSONL (same nesting) plus a
    ``manifest.json`` (config, its hash, counts per split and data source); return ``{split: parquet path}``
    for ``train``, ``val``, ``test``, ``val_skills``, ``test_skills`` and, for the shortcut task,
    ``val_ood``, ``test_ood``.

    Files are written to a temporary sibling directory renamed into place, so an interrupted run leaves
    no half-written ``out_dir``. If ``out_dir`` already holds splits made with the same config they are
    reused; any other non-empty ``out_dir`` is an error unless ``force`` (which replaces it).
    ``progress`` shows a tqdm bar over the splits.
    """
    config = SplitConfig(
        seed=seed,
        n_train=n_train,
        n_val_per_tier=n_val_per_tier,
        n_test_per_tier=n_test_per_tier,
        train_tier_weights=tuple(float(w) for w in train_tier_weights),
        skills=tuple(skills),
        n_skill_val=n_skill_val,
        n_skill_test=n_skill_test,
        expert_style=expert_style,
        task=task,
    )
    out = Path(out_dir)
    paths = {split: out / f"{split}.parquet" for split in split_files(config.task)}
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        manifest = _read_manifest(out)
        if (
            manifest is not None
            and manifest.get("config_hash") == config.hash()
            and all(p.is_file() for p in paths.values())
        ):
            return paths
        raise ValueError(
            f"output directory {out} already exists and does not hold splits made with this config; "
            "choose another directory or pass force=True (--force) to replace it"
        )
    from tqdm.auto import tqdm

    with atomic_directory(out) as tmp:
        files, counts = {}, {}
        for split in tqdm(split_files(config.task), desc=f"writing {out}", unit="split", disable=not progress):
            examples = build_split(config, split)
            files[split] = _write_split(examples, split, tmp)
            counts[split] = dict(Counter(ex.data_source for ex in examples))
        manifest = {
            "format": FORMAT,
            "config": asdict(config),
            "config_hash": config.hash(),
            "files": files,
            "counts": counts,
            "pools": "a seed-free hash of the prompt assigns every problem to one pool (trapo_lab.tasks.pool_of)",
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return paths


def _read_manifest(directory: Path) -> dict | None:
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


# --- the pre-training stream -------------------------------------------------------------------


# Pre-training tier mix of the place-value design. MINIATURE.md's (0.56, 0.42, 0.015, 0.004, 0.001) assumed
# tier-1 test problems could be pre-trained on; there tier 1 has only 204 training problems (memorised quickly),
# so weight moves to tier 2, whose first steps teach every tier-1 computation, and to tiers 3..5 for longer
# chains. Measured (1200 steps, seed 0, 200 validation problems per tier, sampled pass@1): see
# docs/results/base_model.md.
PRETRAIN_TIER_WEIGHTS = (0.335, 0.5, 0.11, 0.04, 0.015)
# Pre-training tier mix of the shortcut design: tier 1 = single-operation drills written as a step, tiers 2..5
# answered in the short form or written out (step_share) (docs/results/miniature_gates.md: the attempts).
SHORTCUT_TIER_WEIGHTS = (0.5, 0.2, 0.15, 0.1, 0.05)


@dataclass(frozen=True)
class PretrainMix:
    """What the base model is pre-trained on (all from the train pool; see :func:`pretraining_stream`).

    ``task``: which design (:data:`trapo_lab.tasks.TASKS`); :meth:`for_task` gives each design's default.
    ``tier_weights``: share of each tier among arithmetic examples. ``skill_share``: share of
    retained-skill examples (split evenly over ``skills``).

    Shortcut design (default): tier 1 examples are single-operation drills written as a step; chains of
    2..5 operations are answered in the short form, except a share ``step_share`` written step by step
    (:func:`step_solution` with ``step_form`` and ``step_layout``: ``"paragraphs"`` is the expert's
    layout, ``"line"`` puts the steps on one line). Defaults (attempts G and I of
    docs/results/miniature_gates.md; I, with a 4.27M student, passes gates G1-G3): 20% of chains written out
    in the rewrite form on one line.

    Place-value design: every solution is native (one step per paragraph) except a share
    ``expert_share`` written in the expert's place-value style (variant drawn uniformly), the knob that
    sets how off-policy the expert solutions are. Default 0: the base gives 25% of the post-training
    set's expert tokens probability < 0.1 (development builds with 0.01 and 0.03: 18% and 19%;
    docs/results/base_model.md).
    """

    tier_weights: tuple[float, ...] = SHORTCUT_TIER_WEIGHTS
    skill_share: float = 0.12
    skills: tuple[str, ...] = SKILLS
    expert_share: float = 0.0
    task: str = DEFAULT_TASK
    step_share: float = 0.2
    step_form: str = "rewrite"
    step_layout: str = "line"

    @classmethod
    def for_task(cls, task: str, **overrides) -> PretrainMix:
        """The default mix of ``task``, with any field replaced by ``overrides``."""
        if check_task(task) == "shortcut":
            return cls(**{"task": task, **overrides})
        place_value = {
            "tier_weights": PRETRAIN_TIER_WEIGHTS,
            "step_share": 0.0,
            "step_form": "steps",
            "step_layout": "paragraphs",
        }
        return cls(**{**place_value, "task": task, **overrides})

    def __post_init__(self) -> None:
        check_task(self.task)
        _check_weights("tier_weights", self.tier_weights, len(TIERS))
        if not 0 <= self.skill_share < 1:
            raise ValueError(f"skill_share must be in [0, 1), got {self.skill_share}")
        if not 0 <= self.expert_share <= 1:
            raise ValueError(f"expert_share must be in [0, 1], got {self.expert_share}")
        if not 0 <= self.step_share <= 1:
            raise ValueError(f"step_share must be in [0, 1], got {self.step_share}")
        if self.step_form not in STEP_FORMS:
            raise ValueError(f"step_form must be one of {STEP_FORMS}, got {self.step_form!r}")
        if self.step_layout not in STEP_LAYOUTS:
            raise ValueError(f"step_layout must be one of {STEP_LAYOUTS}, got {self.step_layout!r}")
        if self.task == "shortcut" and self.expert_share:
            raise ValueError("expert_share is a place-value setting; the shortcut design's knob is step_share")
        if self.task == "place-value" and self.step_share:
            raise ValueError("step_share is a shortcut setting; the place-value design's knob is expert_share")
        if self.skill_share > 0 and not self.skills:
            raise ValueError("skill_share > 0 needs at least one skill in skills")
        for skill in self.skills:
            check_skill(skill)


def pretraining_stream(seed: int, mix: PretrainMix | None = None) -> Iterator[tuple[str, str, str]]:
    """Endless ``(prompt text, solution, data_source)`` pre-training examples from the train pool only
    (tiers 1..5 of ``mix.task``, never the OOD tiers).

    Shortcut: tier 1 written as a step, longer chains in the short form or, with probability
    ``mix.step_share``, step by step. Place-value: native style, or expert style with probability
    ``mix.expert_share``.
    """
    mix = mix or PretrainMix()
    task, ranges = mix.task, ranges_of(mix.task)
    rng = random.Random(f"{seed}:pretrain")
    tier_weights = _check_weights("tier_weights", mix.tier_weights, len(TIERS))
    while True:
        if mix.skill_share > 0 and rng.random() < mix.skill_share:
            skill = rng.choice(mix.skills)
            problem = sample_skill(rng, skill)
            while pool_of(skill, problem.expression, task) != "train":
                problem = sample_skill(rng, skill)
            yield problem.expression, skill_solution(problem), skill
            continue
        tier = rng.choices(TIERS, weights=tier_weights)[0]
        source = data_source_of_tier(tier)
        chain = sample_chain(rng, tier, ranges)
        while pool_of(source, chain.expression, task) != "train":
            chain = sample_chain(rng, tier, ranges)
        if task == "shortcut":
            steps = tier == 1 or (mix.step_share > 0 and rng.random() < mix.step_share)
            text = step_solution(chain, mix.step_form, mix.step_layout) if steps else short_solution(chain)
            yield chain.expression, text, source
        elif rng.random() < mix.expert_share:
            yield chain.expression, expert_solution(chain, rng.choice(EXPERT_VARIANTS)), source
        else:
            yield chain.expression, native_solution(chain), source
