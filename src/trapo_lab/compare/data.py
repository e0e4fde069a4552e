"""The problems a comparison trains and evaluates on, read from a ``trapo data make`` directory, and the
default inputs (data and base model) built where missing."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from trapo.data import Example

from .cache import examples_identity
from .spec import CompareSpec


@dataclass
class CompareData:
    """The comparison's problems, read from a ``trapo data make`` directory."""

    train: list[Example]
    val: list[Example]  # in-domain tiers + retained skills
    test: list[Example]  # in-domain tiers + retained skills + out-of-distribution tiers
    passk: list[Example]  # in-domain test subset for the pass@k curve
    in_domain: list[str]  # data sources of the tiers
    retained: list[str]  # data sources of the retained skills
    ood: list[str]  # data sources of the out-of-distribution tiers (test only: never used to choose anything)
    train_identity: str  # examples_identity of the training set (part of every run's hash)

    @classmethod
    def load(cls, data_dir: str | os.PathLike, spec: CompareSpec) -> CompareData:
        from trapo.data import load_examples

        data_dir = Path(data_dir)

        def read(split: str, required: bool = True) -> list[Example]:
            path = data_dir / f"{split}.parquet"
            if not path.is_file():
                path = data_dir / f"{split}.jsonl"
            if not path.is_file():
                if required:
                    raise FileNotFoundError(
                        f"{data_dir}: no {split}.parquet or {split}.jsonl (make it with `trapo data make --output DIR`)"
                    )
                return []
            return load_examples(path).examples

        train, val, test = read("train"), read("val"), read("test")
        val_skills, test_skills = read("val_skills", False), read("test_skills", False)
        test_ood = read("test_ood", False) if spec.n_test_ood else []
        in_domain = sorted({ex.data_source for ex in test})
        retained = sorted({ex.data_source for ex in test_skills} - set(in_domain))
        ood = sorted({ex.data_source for ex in test_ood} - set(in_domain) - set(retained))
        return cls(
            train=train,
            val=first_per_source(val, spec.n_val_per_tier, "val")
            + first_per_source(val_skills, spec.n_val_skill, "val_skills"),
            test=(
                first_per_source(test, spec.n_test_per_tier, "test")
                + first_per_source(test_skills, spec.n_test_skill, "test_skills")
                + first_per_source(test_ood, spec.n_test_ood, "test_ood")
            ),
            passk=first_per_source(test, spec.n_passk_per_tier, "test"),
            in_domain=in_domain,
            retained=retained if spec.n_test_skill else [],
            ood=ood,
            train_identity=examples_identity(train),
        )


def first_per_source(examples: Sequence[Example], n: int, split: str) -> list[Example]:
    """The first ``n`` examples of each data source (sources in order of first appearance)."""
    if n == 0:
        return []
    by_source: dict[str, list[Example]] = {}
    for ex in examples:
        by_source.setdefault(ex.data_source, []).append(ex)
    short = {s: len(v) for s, v in by_source.items() if len(v) < n}
    if short:
        raise ValueError(
            f"split {split!r} has fewer than {n} problems for {short}; make the data with more "
            "(trapo data make --n-val-per-tier/--n-test-per-tier ...) or ask for fewer"
        )
    return [ex for rows in by_source.values() for ex in rows[:n]]


def ensure_inputs(
    data_dir: str | os.PathLike,
    base_dir: str | os.PathLike,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Path, Path]:
    """Build the embedded task's splits and base model with their default recipes where missing."""
    data_dir, base_dir = Path(data_dir), Path(base_dir)
    if not (data_dir / "train.parquet").is_file() and not (data_dir / "train.jsonl").is_file():
        from trapo_lab.tasks import make_splits

        log(f"no data in {data_dir}: writing the embedded task's splits (trapo data make)")
        make_splits(data_dir)
    if not (base_dir / "config.json").is_file():
        from trapo_lab.pretrain import build_base_model

        log(f"no base model in {base_dir}: pre-training it (trapo base: 3000 steps, ~23 min on 1 thread)")
        build_base_model(base_dir, progress=progress)
    return data_dir, base_dir
