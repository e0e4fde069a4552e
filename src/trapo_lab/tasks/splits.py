"""Train / validation / test splits of the embedded task, the pre-training stream, and writing them to disk.

Disjointness by construction. Every problem belongs to exactly one *pool* ("train", "val" or "test"),
decided by a hash of its prompt text that depends on no seed (:func:`pool_of`). Validation and test sets
are drawn only from their pools; the post-training set and the pre-training stream only from the train
pool. So for every seed and every size, test, validation and training problems never overlap, and no
test or validation problem is ever seen in pre-training (its prompt string never appears; its
sub-computations do, as steps of longer chains, as in any arithmetic curriculum).

Tier 1 has only 970 distinct problems, so its held-out pools are large (56% test, 22% val: 542 and 224
problems; 204 left for training); tiers 2..5 and the skills have huge spaces and hold out 10% / 5%.

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
    EXPERT_VARIANTS,
    TIERS,
    ChainProblem,
    check_tier,
    expert_solution,
    native_solution,
    sample_chain,
)
from trapo_lab.tasks.skills import SKILLS, SkillProblem, check_skill, sample_skill, skill_solution

FORMAT = "trapo-arith-v1"
POOLS = ("train", "val", "test")
# (test share, validation share) of each problem space; the rest is the train pool.
HELD_OUT_SHARES: dict[str, tuple[float, float]] = {"arith-t1": (0.56, 0.22)}
DEFAULT_HELD_OUT = (0.10, 0.05)
TRAIN_TIER_WEIGHTS = (0.05, 0.15, 0.25, 0.30, 0.25)
SPLIT_FILES = ("train", "val", "test", "val_skills", "test_skills")


def data_source_of_tier(tier: int) -> str:
    return f"arith-t{check_tier(tier)}"


def pool_of(data_source: str, prompt_text: str) -> str:
    """The pool ("train", "val" or "test") a problem belongs to: a seed-free hash of its prompt.

    ``u = blake2b(data_source + "\\x00" + prompt) / 2**64``; test if ``u < test share``, validation if
    ``u < test share + val share``, else train (shares in :data:`HELD_OUT_SHARES`).
    """
    digest = hashlib.blake2b(f"{data_source}\x00{prompt_text}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    test, val = HELD_OUT_SHARES.get(data_source, DEFAULT_HELD_OUT)
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


EXPERT_STYLES = ("place-value", "native")  # what `trapo data make --expert-style` offers


def check_expert_style(style: str) -> str:
    if style not in EXPERT_STYLES:
        raise ValueError(f"expert_style must be one of {EXPERT_STYLES}, got {style!r}")
    return style


def chain_example(problem: ChainProblem, split: str = "", expert_style: str = "place-value") -> Example:
    """An :class:`Example` of a chain problem, the native solution in ``meta["native_solution"]``.

    ``expert_style`` "place-value" (the default, off-policy for the base model): both expert variants
    (one when they coincide). "native": the native solution is the one expert solution, the on-policy
    control (2% of its tokens below p = 0.1 under the default base model, against 25%).
    """
    if check_expert_style(expert_style) == "native":
        experts: tuple[str, ...] = (native_solution(problem),)
    else:
        experts = tuple(dict.fromkeys(expert_solution(problem, v) for v in EXPERT_VARIANTS))
    return Example(
        prompt=[{"role": "user", "content": problem.expression}],
        answer=str(problem.answer),
        expert_solutions=experts,
        data_source=data_source_of_tier(problem.tier),
        meta={"tier": problem.tier, "split": split, "native_solution": native_solution(problem)},
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


def _draw_unique(draw, data_source: str, pool: str, n: int, what: str) -> list:
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
        if text in seen or pool_of(data_source, text) != pool:
            continue
        seen.add(text)
        out.append(problem)
    return out


def arithmetic_examples(
    split: str, counts: dict[int, int], *, seed: int = 0, expert_style: str = "place-value"
) -> list[Example]:
    """``counts[tier]`` distinct chain problems per tier from ``split``'s pool, tiers in order, with expert
    solutions in ``expert_style`` (:func:`chain_example`)."""
    if split not in POOLS:
        raise ValueError(f"split must be one of {POOLS}, got {split!r}")
    out: list[Example] = []
    for tier, n in counts.items():
        check_tier(tier)
        _check_count(f"counts[{tier}]", n, allow_zero=True)
        rng = random.Random(f"{seed}:{split}:arith-t{tier}")
        problems = _draw_unique(lambda rng=rng, t=tier: sample_chain(rng, t), f"arith-t{tier}", split, n, split)
        out.extend(chain_example(p, split, expert_style) for p in problems)
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
        problems = _draw_unique(lambda rng=rng, s=skill: sample_skill(rng, s), skill, split, n_per_skill, split)
        out.extend(skill_example(p, split) for p in problems)
    return out


@dataclass(frozen=True)
class SplitConfig:
    """What :func:`make_splits` writes (defaults: issue 6 — ≥500 test problems per tier, ~200 validation)."""

    seed: int = 0
    n_train: int = 4000
    n_val_per_tier: int = 200
    n_test_per_tier: int = 500
    train_tier_weights: tuple[float, ...] = TRAIN_TIER_WEIGHTS
    skills: tuple[str, ...] = SKILLS
    n_skill_val: int = 200
    n_skill_test: int = 500
    expert_style: str = "place-value"
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
        check_expert_style(self.expert_style)

    def hash(self) -> str:
        fields = asdict(self)
        if fields["expert_style"] == "place-value":  # the default: hashes of splits made before the option stay
            del fields["expert_style"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def build_split(config: SplitConfig, name: str) -> list[Example]:
    """One split in memory: ``train`` (shuffled tier mix), ``val`` / ``test`` (per tier, tier order),
    ``val_skills`` / ``test_skills`` (per skill)."""
    seed, style = config.seed, config.expert_style
    if name == "train":
        counts = tier_counts(config.n_train, config.train_tier_weights)
        train = arithmetic_examples("train", counts, seed=seed, expert_style=style)
        random.Random(f"{seed}:shuffle").shuffle(train)
        return train
    if name == "val":
        return arithmetic_examples("val", dict.fromkeys(TIERS, config.n_val_per_tier), seed=seed, expert_style=style)
    if name == "test":
        return arithmetic_examples("test", dict.fromkeys(TIERS, config.n_test_per_tier), seed=seed, expert_style=style)
    if name == "val_skills":
        return skill_examples("val", config.n_skill_val, seed=seed, skills=config.skills)
    if name == "test_skills":
        return skill_examples("test", config.n_skill_test, seed=seed, skills=config.skills)
    raise ValueError(f"split must be one of {SPLIT_FILES}, got {name!r}")


def build_splits(config: SplitConfig | None = None, **kwargs) -> dict[str, list[Example]]:
    """All splits in memory (see :func:`build_split`); ``kwargs`` are :class:`SplitConfig` fields."""
    config = config or SplitConfig(**kwargs)
    return {name: build_split(config, name) for name in SPLIT_FILES}


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
    expert_style: str = "place-value",
    force: bool = False,
    progress: bool = False,
) -> dict[str, Path]:
    """Write the embedded task's splits to ``out_dir`` as verl parquet and JSONL (same nesting) plus a
    ``manifest.json`` (config, its hash, counts per split and data source); return ``{split: parquet path}``
    for ``train``, ``val``, ``test``, ``val_skills``, ``test_skills``.

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
    )
    out = Path(out_dir)
    paths = {split: out / f"{split}.parquet" for split in SPLIT_FILES}
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        manifest = _read_manifest(out)
        if manifest is not None and manifest.get("config_hash") == config.hash() and all(
            p.is_file() for p in paths.values()
        ):
            return paths
        raise ValueError(
            f"output directory {out} already exists and does not hold splits made with this config; "
            "choose another directory or pass force=True (--force) to replace it"
        )
    from tqdm.auto import tqdm

    with atomic_directory(out) as tmp:
        files, counts = {}, {}
        for split in tqdm(SPLIT_FILES, desc=f"writing {out}", unit="split", disable=not progress):
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


# Pre-training tier mix. MINIATURE.md's (0.56, 0.42, 0.015, 0.004, 0.001) assumed tier-1 test problems could
# be pre-trained on; here tier 1 has only 204 training problems (memorised quickly), so weight moves to
# tier 2, whose first steps teach every tier-1 computation, and to tiers 3..5 for longer chains. Measured
# (1200 steps, seed 0, 200 validation problems per tier, sampled pass@1): see docs/results/base_model.md.
PRETRAIN_TIER_WEIGHTS = (0.335, 0.5, 0.11, 0.04, 0.015)


@dataclass(frozen=True)
class PretrainMix:
    """What the base model is pre-trained on (all from the train pool; see :func:`pretraining_stream`).

    ``tier_weights``: share of each tier among arithmetic examples, skewed to easy tiers so that the base
    solves tier 1, sometimes tier 3 and almost never tier 5 (MINIATURE.md). ``skill_share``: share of
    retained-skill examples (split evenly over ``skills``). ``expert_share``: share of arithmetic examples
    written in the expert style (variant drawn uniformly), the knob that sets how off-policy the expert
    solutions are. Default 0: the base never sees the place-value decomposition, only its characters and
    its single moves; the default base gives 25% of the post-training set's expert tokens probability
    < 0.1 (issue 6's target: 20–40%; native solutions: 2%), while development builds with
    ``expert_share`` 0.01 and 0.03 gave 18% and 19% (docs/results/base_model.md).
    """

    tier_weights: tuple[float, ...] = PRETRAIN_TIER_WEIGHTS
    skill_share: float = 0.12
    skills: tuple[str, ...] = SKILLS
    expert_share: float = 0.0

    def __post_init__(self) -> None:
        _check_weights("tier_weights", self.tier_weights, len(TIERS))
        if not 0 <= self.skill_share < 1:
            raise ValueError(f"skill_share must be in [0, 1), got {self.skill_share}")
        if not 0 <= self.expert_share <= 1:
            raise ValueError(f"expert_share must be in [0, 1], got {self.expert_share}")
        if self.skill_share > 0 and not self.skills:
            raise ValueError("skill_share > 0 needs at least one skill in skills")
        for skill in self.skills:
            check_skill(skill)


def pretraining_stream(seed: int, mix: PretrainMix | None = None) -> Iterator[tuple[str, str, str]]:
    """Endless ``(prompt text, solution, data_source)`` pre-training examples from the train pool only.

    Arithmetic solutions are native style, or expert style with probability ``mix.expert_share``.
    """
    mix = mix or PretrainMix()
    rng = random.Random(f"{seed}:pretrain")
    tier_weights = _check_weights("tier_weights", mix.tier_weights, len(TIERS))
    while True:
        if mix.skill_share > 0 and rng.random() < mix.skill_share:
            skill = rng.choice(mix.skills)
            problem = sample_skill(rng, skill)
            while pool_of(skill, problem.expression) != "train":
                problem = sample_skill(rng, skill)
            yield problem.expression, skill_solution(problem), skill
            continue
        tier = rng.choices(TIERS, weights=tier_weights)[0]
        source = data_source_of_tier(tier)
        chain = sample_chain(rng, tier)
        while pool_of(source, chain.expression) != "train":
            chain = sample_chain(rng, tier)
        if rng.random() < mix.expert_share:
            yield chain.expression, expert_solution(chain, rng.choice(EXPERT_VARIANTS)), source
        else:
            yield chain.expression, native_solution(chain), source
