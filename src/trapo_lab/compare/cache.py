"""The run cache: where each run and evaluation lives on disk, and the hashes that decide when it is reused.

Every run lives in ``runs_dir/<method>-lr<lr>-s<seed>-<hash>/`` where the hash covers its full
:class:`~trapo.config.TRAPOConfig` (:data:`NON_SEMANTIC_FIELDS` aside), the base model's weights and the
training data. A run directory holds ``run.json`` (what it is), the trainer's checkpoints, ``final/`` and
``metrics.jsonl``, ``done.json`` once finished, and ``eval.json``: its evaluations, each under
``<split>@<step>`` with a key of the evaluation settings and problems. The base model's evaluations live in
``runs_dir/base-<hash>/eval.json``. ``run.json``, ``done.json`` and each evaluation's result record the code
that made them (:mod:`~trapo_lab.compare.provenance`; never hashed).

The hash inputs (:data:`FORMAT`, the config fields under their :data:`FORMER_FIELD_NAMES`, the identities)
and :data:`EVAL_VERSION` decide which cached runs and evaluations are reused: change them only to
invalidate caches on purpose.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trapo.config import TRAPOConfig
from trapo.config_trl import LORA_KEYWORDS, TRLFields
from trapo.data import Example

from .provenance import code_provenance, run_label
from .spec import CompareSpec

FORMAT = "trapo-compare-v1"
EVAL_VERSION = 2  # bump when an evaluation records new measures: cached evaluations are then recomputed
DEFAULT_RUNS_DIR = "runs/compare"
# TRAPOConfig fields that change where/how often things are logged, not what is trained.
NON_SEMANTIC_FIELDS = (
    "output_dir",
    "logging_steps",
    "save_total_limit",
    "sample_log_steps",
    "report_to",
    # safety limits added after FORMAT was set: they stop or roll back a broken run and do
    # not change a sound one, so runs cached before them keep their directories
    "save_minutes",
    "overwrite_output_dir",
    "reward_timeout",
    "max_reward_failure_share",
    "max_reward_failure_steps",
    "update_guard_factor",
    "max_update_ratio",
)
# TRAPOConfig fields renamed since FORMAT was set, hashed under the name they had then, so that runs cached
# before a rename are still found.
FORMER_FIELD_NAMES = {"prefix_loss_counts": "sft_counts"}
# TRAPOConfig fields added since FORMAT was set, with the value that trains as before: left out of the hash
# at that value, so that runs cached before they existed are still found.
ADDED_FIELDS = {
    "per_device_train_batch_size": None,
    "gradient_accumulation_steps": None,
    "prompt_template": "chat",
    "expert_think": "keep",
    "prefix_boundary_match": "ends_with",
    "prefix_boundary_strict": False,
    "entropy_tokens": "continuation",
    "loss_type": None,
    "loss_constant": None,
    "reward_weights": None,
    "expert_key": None,
    "save_dtype": "auto",
    "fsdp": "",
    "engine": "hf",
    "vllm_gpu_memory_utilization": 0.3,
    "vllm_kv_cache_gib": None,
    "vllm_dtype": "auto",
    "vllm_enforce_eager": None,
    "vllm_max_model_length": None,
    "vllm_importance_sampling_correction": True,
    "vllm_importance_sampling_mode": "sequence_mask",
    "vllm_importance_sampling_clip_max": 3.0,
    # TRL's GRPOConfig fields taken since (trapo.config_trl.TRLFields), at their defaults
    **{f.name: f.default for f in dataclasses.fields(TRLFields)},
}
# Fields whose values changed spelling since FORMAT was set: hashed as they were spelt then.
FORMER_VALUES = {"scale_rewards": {"none": False, "group": True}}


# ---------------------------------------------------------------------------------------------- files and digests


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file in the same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def json_digest(*parts: Any) -> str:
    """SHA-256 (hex) of ``parts`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(paths: Iterable[Path]) -> str:
    """SHA-256 over the names and bytes of ``paths`` (in the given order)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def model_identity(model_dir: Path) -> str:
    """A digest of a model directory's weights and config (what a trained run depends on)."""
    weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not weights or not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a model directory (needs config.json and weights)")
    return file_digest([model_dir / "config.json", *weights])[:16]


def examples_identity(examples: Sequence[Example]) -> str:
    """A digest of problems: sources, prompts, answers and expert solutions."""
    return json_digest([(ex.data_source, ex.prompt, ex.answer, list(ex.expert_solutions)) for ex in examples])[:16]


def format_lr(lr: float) -> str:
    """``1e-05`` → ``1e-5``, ``3e-05`` → ``3e-5``, ``1.5e-04`` → ``1.5e-4`` (for directory names)."""
    mantissa, exponent = f"{lr:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


# ---------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunKey:
    """One training run of the comparison: a method at a learning rate and a seed."""

    method: str
    lr: float
    seed: int

    @property
    def label(self) -> str:
        return f"{self.method}-lr{format_lr(self.lr)}-s{self.seed}"


class RunCache:
    """The run and evaluation directories of one comparison under ``runs_dir`` (see the module docstring).

    Args:
        spec: what the comparison runs (the per-run configs are derived from it).
        runs_dir: where the runs live.
        base_dir, base_identity: the base model every run starts from and its :func:`model_identity`.
        data_dir, train_identity: the data directory and the :func:`examples_identity` of its training set.
    """

    def __init__(
        self,
        spec: CompareSpec,
        runs_dir: Path,
        *,
        base_dir: Path,
        base_identity: str,
        data_dir: Path,
        train_identity: str,
    ):
        self.spec, self.runs_dir = spec, runs_dir
        self.base_dir, self.base_identity = base_dir, base_identity
        self.data_dir, self.train_identity = data_dir, train_identity

    def config_for(self, key: RunKey) -> TRAPOConfig:
        """The run's training config (``output_dir`` is a placeholder: :meth:`prepare_run` sets the real one)."""
        spec = self.spec
        return TRAPOConfig(
            method=key.method,
            learning_rate=key.lr,
            seed=key.seed,
            max_steps=spec.max_steps,
            prompts_per_step=spec.prompts_per_step,
            max_completion_length=spec.max_completion_length,
            save_steps=spec.save_steps,
            save_total_limit=0,
            temperature=spec.temperature,
            output_dir=str(self.runs_dir / key.label),
            **spec.config_overrides,
        )

    def run_hash(self, key: RunKey) -> str:
        values = self.config_for(key).to_dict()
        # the LoRA settings, one `lora` field since, hashed as the three fields they were
        lora = values.pop("lora")
        values.update({name: lora[key] for name, key in LORA_KEYWORDS.items()})
        config = {
            FORMER_FIELD_NAMES.get(k, k): FORMER_VALUES[k].get(v, v) if k in FORMER_VALUES else v
            for k, v in values.items()
            if k not in NON_SEMANTIC_FIELDS and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])
        }
        return json_digest(FORMAT, config, self.base_identity, self.train_identity)[:10]

    def run_dir(self, key: RunKey) -> Path:
        return self.runs_dir / f"{key.label}-{self.run_hash(key)}"

    def base_run_dir(self) -> Path:
        """Where the base model's evaluations are cached."""
        return self.runs_dir / f"base-{self.base_identity[:10]}"

    def is_trained(self, key: RunKey) -> bool:
        return (self.run_dir(key) / "done.json").is_file()

    def prepare_run(self, key: RunKey) -> tuple[Path, TRAPOConfig]:
        """The run's directory (created, with ``run.json``) and its config (``output_dir`` set to it)."""
        run_dir = self.run_dir(key)
        config = replace(self.config_for(key), output_dir=str(run_dir))
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "run.json").is_file():
            write_json(
                run_dir / "run.json",
                {
                    "format": FORMAT,
                    "method": key.method,
                    "lr": key.lr,
                    "seed": key.seed,
                    "hash": self.run_hash(key),
                    "config": config.to_dict(),
                    "base_dir": str(self.base_dir),
                    "base_identity": self.base_identity,
                    "data_dir": str(self.data_dir),
                    "train_identity": self.train_identity,
                    "code": code_provenance(),  # not hashed: see trapo_lab.compare.provenance
                },
            )
        return run_dir, config

    def finish_run(self, key: RunKey, *, steps: int, train_seconds: float, resumed_from: int) -> None:
        """Mark the run finished (``done.json``) and drop what a finished run no longer needs: the optimizer
        states and the last checkpoint (a copy of ``final/``)."""
        run_dir = self.run_dir(key)
        write_json(
            run_dir / "done.json",
            {
                "steps": steps,
                "train_seconds": train_seconds,
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                "resumed_from": resumed_from,
                "code": code_provenance(),
            },
        )
        for state in run_dir.glob("checkpoint-*/training_state.pt"):
            state.unlink()
        shutil.rmtree(run_dir / f"checkpoint-{self.spec.max_steps}", ignore_errors=True)

    def run_code(self, key: RunKey) -> str:
        """The code that made run ``key`` (:func:`~trapo_lab.compare.provenance.run_label`)."""
        run_dir = self.run_dir(key)
        return run_label(read_json(run_dir / "run.json"), read_json(run_dir / "done.json"))

    def model_dir(self, key: RunKey | None, step: int) -> Path:
        """The saved model of run ``key`` at ``step`` (the base model for None or step 0)."""
        if key is None or step == 0:
            return self.base_dir
        run_dir = self.run_dir(key)
        path = run_dir / "final" if step == self.spec.max_steps else run_dir / f"checkpoint-{step}"
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no saved model at step {step} of {key.label}")
        return path

    # ------------------------------------------------------------------ evaluations
    def eval_path(self, key: RunKey | None) -> Path:
        return (self.base_run_dir() if key is None else self.run_dir(key)) / "eval.json"

    def read_evaluation(
        self, key: RunKey | None, split: str, step: int, settings: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The cached evaluation of ``key`` at ``step`` on ``split`` if it was made with ``settings``."""
        entry = (read_json(self.eval_path(key)) or {}).get(f"{split}@{step}")
        if entry is not None and entry.get("key") == json_digest(settings)[:16]:
            return entry["result"]
        return None

    def write_evaluation(
        self, key: RunKey | None, split: str, step: int, settings: dict[str, Any], result: dict[str, Any]
    ) -> None:
        path = self.eval_path(key)
        cache = read_json(path) or {}
        cache[f"{split}@{step}"] = {"key": json_digest(settings)[:16], "step": step, "result": result}
        write_json(path, cache)

    def final_validation_groups(self, key: RunKey) -> dict[str, Any] | None:
        """The per-group results of the final model's cached validation evaluation, whatever its settings
        (for :meth:`~trapo_lab.compare.Comparison.status`, which never evaluates); None if there is none."""
        entry = (read_json(self.eval_path(key)) or {}).get(f"val@{self.spec.max_steps}")
        return None if entry is None else entry["result"]["groups"]


def eval_settings(spec: CompareSpec, split: str, k: int, examples: Sequence[Example]) -> dict[str, Any]:
    """What an evaluation's result depends on (its cache key is a digest of this)."""
    return {
        "version": EVAL_VERSION,
        "split": split,
        "k": k,
        "temperature": spec.temperature,
        "max_new_tokens": spec.max_new_tokens,
        "seed": spec.eval_seed,
        "batch_size": spec.eval_batch_size,
        "problems": examples_identity(examples),
    }
