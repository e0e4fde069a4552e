"""TRL's ``GRPOConfig`` names in :class:`~trapo.config.TRAPOConfig`: taken with TRL's meaning, or refused.

- :class:`TRLFields`: the ``GRPOConfig`` fields a TRL user commonly sets that trapo takes with TRL's meaning
  (epochs, gradient checkpointing, top_k, the logging / saving strategies, ...); ``TRAPOConfig`` inherits them.
- :func:`accepts_trl_names`: a refused field (:data:`trapo.trl_refused.REFUSED`) passed at TRL's default is
  dropped (TRL's behaviour at that default is trapo's); any other value stops with what to use instead.
- :data:`DIFFERENT_DEFAULTS`: TRL names whose default differs here; :func:`defaults_notice` says so at
  start-up, and docs/TRL.md lists them.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from trapo.domains import check_field
from trapo.trl_refused import REFUSED

DEFAULT_MAX_STEPS = 100
# TRL name -> (TRL's default, ours and why)
DIFFERENT_DEFAULTS: dict[str, tuple[Any, str]] = {
    "output_dir": ("trainer_output", "runs/trapo"),
    "seed": (42, "0"),
    "max_steps": (-1, f"-1 means {DEFAULT_MAX_STEPS} steps unless num_train_epochs is set (TRL: 3 epochs)"),
    "num_train_epochs": (3.0, "None: with max_steps -1, 100 steps"),
    "lr_scheduler_type": ("linear", "constant (the paper)"),
    "logging_steps": (10, "1"),
    "save_steps": (500, "0: at the end, on interrupt and every save_minutes (10)"),
    "save_total_limit": (None, "2"),
    "bf16": (None, "False (TRL: True where the GPU supports it)"),
    "gradient_checkpointing": (True, "False"),
    "max_completion_length": (512, "256"),
    "num_generations": (8, "None: the method's micro-group sizes summed (8 for every preset)"),
    "scale_rewards": ("group", "none (the paper)"),
    "loss_type": ("dapo", "None: loss_normalization=constant (Dr. GRPO, the paper)"),
    "entropy_coef": (0.0, "0.001 (the paper), normalised like the policy loss (TRL: mean token entropy)"),
    "per_device_train_batch_size": (8, "None: prompts_per_step (8) x num_generations per step"),
    "gradient_accumulation_steps": (1, "None: mini_batch_size rules"),
    "generation_batch_size": (None, "512 sequences per generation pass (TRL: completions per generation round)"),
    "project": ("huggingface", "trapo"),
}
STRATEGIES = ("steps", "no")
# trapo's LoRA keywords (kept out of the dataclass fields, so that TRL's ModelConfig, which has fields of
# these names, can share a TrlParser with TRAPOConfig) -> their key in TRAPOConfig.lora
LORA_KEYWORDS = {"lora_r": "r", "lora_alpha": "alpha", "lora_target_modules": "target_modules"}
LORA_DEFAULTS: dict[str, Any] = {"r": 0, "alpha": 16, "target_modules": ["all-linear"]}
LORA_TYPES: dict[str, Any] = {"lora_r": int, "lora_alpha": float, "lora_target_modules": list[str]}
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass
class TRLFields:
    """``GRPOConfig`` fields taken with TRL's meaning (their TRL defaults unless :data:`DIFFERENT_DEFAULTS`)."""

    num_train_epochs: float | None = _help(
        "TRL's name: epochs over the training set, used when max_steps is -1 (then max_steps = "
        "ceil(epochs x rows / prompts_per_step)); unset with max_steps -1: 100 steps.",
        default=None,
    )
    gradient_checkpointing: bool = _help(
        "Recompute activations in the backward pass (TRL's name; less memory, slower).", default=False
    )
    gradient_checkpointing_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments of model.gradient_checkpointing_enable (a dict or its JSON)."},
    )
    mask_truncated_completions: bool = _help(
        "Leave continuations cut at max_completion_length (no EOS) out of the policy loss and the entropy, as "
        "TRL (their expert prefix still trains).",
        default=False,
    )
    top_k: int = _help("Sample rollouts from the k most likely tokens (0: all).", default=0)
    optim: str = _help(f"Optimizer: {' / '.join(OPTIMIZERS)} (both torch's AdamW).", default="adamw_torch_fused")
    adam_epsilon: float = _help("AdamW epsilon.", default=1e-8)
    lr_scheduler_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Extra arguments of the learning-rate schedule (a dict or its JSON), as get_scheduler's."},
    )
    logging_strategy: str = _help("steps: log every logging_steps; no: no metrics.jsonl rows.", default="steps")
    logging_first_step: bool = _help("Also log the first step.", default=False)
    disable_tqdm: bool | None = _help("No progress bar.", default=None)
    log_completions: bool = _help("Write samples.jsonl at every logging step.", default=False)
    run_name: str | None = _help("Run name for report_to trackers.", default=None)
    project: str = _help("Project name for report_to trackers.", default="trapo")
    save_strategy: str = _help(
        "steps: checkpoint every save_steps; no: only at the end and on interrupt.", default="steps"
    )
    eval_strategy: str = _help("no (the only value: evaluate checkpoints with trapo eval).", default="no")
    push_to_hub: bool = _help("False (the only value: nothing is uploaded).", default=False)
    resume_from_checkpoint: str | None = _help(
        "A checkpoint path for train(resume_from_checkpoint=...) (TRL's scripts pass it on).", default=None
    )
    model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments of from_pretrained when model is a path (e.g. dtype)."},
    )
    trust_remote_code: bool = _help("Allow a model directory's own code when model is a path.", default=False)
    use_cpu: bool = _help("Train on the CPU even where a GPU is present.", default=False)
    disable_dropout: bool = _help("Set every dropout probability of the model to 0.", default=False)
    shuffle_dataset: bool = _help("True (the only value: prompts are drawn by seeded permutations).", default=True)
    do_train: bool = _help("Not used (as in TRL's trainers).", default=False)
    do_eval: bool = _help("Not used (as in TRL's trainers).", default=False)
    do_predict: bool = _help("Not used (as in TRL's trainers).", default=False)

    def for_dataset(self, rows: int) -> Any:
        """This config for a training set of ``rows`` prompts: ``max_steps=-1`` with ``num_train_epochs``
        becomes that many epochs (TRL's rule); otherwise unchanged."""
        if self.max_steps >= 1:
            return self
        steps = epoch_steps(self.num_train_epochs or 0, rows, self.prompts_per_step)
        return dataclasses.replace(self, max_steps=steps)

    # trapo's LoRA settings, read from ``lora`` (see LORA_KEYWORDS)
    @property
    def lora_r(self) -> int:
        return self.lora["r"]

    @property
    def lora_alpha(self) -> int:
        return self.lora["alpha"]

    @property
    def lora_target_modules(self) -> list[str]:
        return self.lora["target_modules"]

    def check_trl_fields(self) -> None:
        """Validate the TRL fields and put them in the form the trainer uses."""
        _one_of("logging_strategy", self.logging_strategy, STRATEGIES, "use logging_steps")
        _one_of("save_strategy", self.save_strategy, STRATEGIES, "use save_steps / save_minutes")
        _one_of("optim", self.optim, OPTIMIZERS, REFUSED["optim_args"][1])
        _one_of("eval_strategy", self.eval_strategy, ("no",), REFUSED["eval_steps"][1])
        if self.push_to_hub:
            raise ValueError(f"push_to_hub=True is not supported: {REFUSED['hub_token'][1]}")
        if not self.shuffle_dataset:
            raise ValueError("shuffle_dataset=False is not supported: prompts are drawn by seeded permutations")
        if self.num_train_epochs is not None and not self.num_train_epochs > 0:
            raise ValueError(f"num_train_epochs must be > 0, got {self.num_train_epochs}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        for name in ("gradient_checkpointing_kwargs", "lr_scheduler_kwargs", "model_init_kwargs"):
            setattr(self, name, _as_dict(name, getattr(self, name)))


def _one_of(name: str, value: Any, allowed: tuple[str, ...], advice: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported (choose {' / '.join(allowed)}): {advice}")


def _as_dict(name: str, value: Any) -> dict | None:
    if value is None or isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a dict or its JSON, got {value!r}") from err
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a dict or its JSON, got {value!r}")
    return parsed


def lora_settings(value: Any) -> dict[str, Any]:
    """``TRAPOConfig.lora`` with every setting filled in (a dict, its JSON or None)."""
    given = _as_dict("lora", value) or {}
    unknown = sorted(set(given) - set(LORA_DEFAULTS))
    if unknown:
        raise ValueError(f"lora: unknown setting(s) {unknown}; settings: {', '.join(LORA_DEFAULTS)}")
    settings = {**LORA_DEFAULTS, **given}
    if isinstance(settings["target_modules"], str):  # one name, or 'all-linear'
        settings["target_modules"] = [settings["target_modules"]]
    for keyword, key in LORA_KEYWORDS.items():  # type and range, named as the flags (trapo.domains)
        check_field(keyword, settings[key], LORA_TYPES[keyword])
    if not settings["target_modules"]:
        raise ValueError("lora_target_modules must name at least one module (or 'all-linear'), got []")
    return settings


def refuse(name: str, value: Any) -> None:
    """Nothing when ``value`` is TRL's default for the refused field ``name``; else what to use instead."""
    default, advice = REFUSED[name]
    if value != default:
        raise ValueError(f"{name}={value!r} (TRL's GRPOConfig) is not supported by trapo: {advice}")


def accepts_trl_names(cls: type) -> type:
    """Let ``cls(...)`` take TRL's refused names (dropped at TRL's default, else a clear error: :func:`refuse`)
    and trapo's LoRA keywords (:data:`LORA_KEYWORDS`, gathered into ``lora``)."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for name in [k for k in kwargs if k in REFUSED]:
            refuse(name, kwargs.pop(name))
        lora = {LORA_KEYWORDS[k]: kwargs.pop(k) for k in list(kwargs) if k in LORA_KEYWORDS}
        if lora:
            kwargs["lora"] = {**(_as_dict("lora", kwargs.get("lora")) or {}), **lora}
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def report_sinks(value: Any) -> list[str]:
    """TRL's ``report_to`` (``"none"``, ``"all"``, a name or a list of names) as a list of tracker names."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    names = [value] if value is None or isinstance(value, str) else list(value)
    names = [str(n).strip().lower() for n in names if n is not None and str(n).strip().lower() != "none"]
    if "all" in names:
        return [n for n in ("tensorboard", "wandb", "trackio") if importlib.util.find_spec(n) is not None]
    unknown = [n for n in names if n not in LOGGER_TYPE_TO_CLASS]
    if unknown:
        raise ValueError(
            f"report_to: unknown tracker(s) {unknown}; choose from none, all, {', '.join(LOGGER_TYPE_TO_CLASS)}"
        )
    return list(dict.fromkeys(names))


def steps_of(value: float, max_steps: int, name: str = "steps") -> int:
    """A step count given as TRL does: a whole number, or a float in (0, 1) as that share of ``max_steps``;
    anything else (a list, 1.5) is a ``ValueError`` naming ``name``."""
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if number and 0 < value < 1:
        return math.ceil(value * max_steps)
    if number and float(value).is_integer():
        return int(value)  # its sign is checked with the other fields (trapo.domains)
    raise ValueError(f"{name} must be a whole number or a share of max_steps in (0, 1), got {value!r}")


def epoch_steps(epochs: float, rows: int, prompts_per_step: int) -> int:
    """Optimizer steps for ``epochs`` passes over ``rows`` prompts, ``prompts_per_step`` per step."""
    return max(1, math.ceil(epochs * rows / prompts_per_step))


def defaults_notice(config: Any) -> str:
    """One line naming the TRL-named fields left at a default that differs from TRL's ("" when none)."""
    ours = {f.name: f.default for f in fields(config)}
    left = []
    for name, (trl_default, _) in DIFFERENT_DEFAULTS.items():
        if name == "num_train_epochs":  # said by max_steps's entry
            continue
        value = getattr(config, name)
        at_default = value == ours[name] or (
            name == "max_steps" and config.num_train_epochs is None and value == DEFAULT_MAX_STEPS
        )
        if at_default:
            left.append(f"{name}={value!r} (TRL {trl_default!r})")
    if not left:
        return ""
    return "note: TRL names at trapo's own defaults (docs/TRL.md): " + ", ".join(left)
