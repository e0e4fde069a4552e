"""What a TRL user sees of a trainer: TRL's metric names, a console line per logging step, ``trainer.state``
(a ``transformers.TrainerState`` with ``log_history``) and ``TrainerCallback`` events as transformers
defines them (``on_train_begin``, ``on_step_begin``, ``on_step_end``, ``on_log``, ``on_save``,
``on_train_end``; ``control.should_training_stop`` ends the run after the step, saved).

Our own metric names stay; TRL's are added beside them (:func:`with_trl_names`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

# TRL name -> ours, where the two mean the same thing.
TRL_ALIASES = {
    "reward": "reward/mean",
    "loss": "loss/total",
    "learning_rate": "lr",
    "completions/mean_length": "length/response",
}


def group_reward_stats(rewards: torch.Tensor, groups: torch.Tensor) -> tuple[float, int, int]:
    """Per prompt group: (sum of the groups' reward std, number of groups, groups whose std is 0), as TRL's
    ``reward_std`` (the mean of the groups' std, unbiased as ``torch.std``) and ``frac_reward_zero_std``."""
    total, zero, ids = 0.0, 0, groups.unique()
    for g in ids:
        values = rewards[groups == g].double()
        std = float(values.std()) if len(values) > 1 else 0.0
        total += std
        zero += math.isclose(std, 0.0, abs_tol=1e-8)
    return total, len(ids), zero


def clip_fractions(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
) -> dict[str, tuple[float, float]]:
    """TRL's ``clip_ratio/low_mean``, ``high_mean`` and ``region_mean`` as (tokens clipped, tokens) over
    ``mask``: a token is clipped low when its ratio is below 1 - epsilon with a negative advantage, high when
    above 1 + epsilon_high with a positive one (where the clipped objective's gradient is zero). Without old
    log-probabilities (one policy update per batch) the ratio is 1 and nothing is clipped."""
    n = float(mask.sum())
    if old_logprobs is None:
        return {k: (0.0, n) for k in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean")}
    ratio = (logprobs.detach() - old_logprobs).exp()
    adv = advantages.reshape(-1, *([1] * (ratio.dim() - 1))).expand_as(ratio)
    low = (ratio < 1 - epsilon_low) & (adv < 0) & mask
    high = (ratio > 1 + epsilon_high) & (adv > 0) & mask
    return {
        "clip_ratio/low_mean": (float(low.sum()), n),
        "clip_ratio/high_mean": (float(high.sum()), n),
        "clip_ratio/region_mean": (float((low | high).sum()), n),
    }


def with_trl_names(metrics: dict[str, float], reward_names: Sequence[str]) -> dict[str, float]:
    """``metrics`` with TRL's names added (:data:`TRL_ALIASES`, ``rewards/<name>/mean`` and ``/std`` from our
    ``rewards/<name>`` and ``rewards/<name>/sq``, the latter dropped)."""
    out = dict(metrics)
    for trl, ours in TRL_ALIASES.items():
        if ours in metrics:
            out[trl] = metrics[ours]
    for name in reward_names:
        key = f"rewards/{name}"
        if key in metrics:
            mean, squares = metrics[key], out.pop(f"{key}/sq", math.nan)
            out[f"{key}/mean"] = mean
            out[f"{key}/std"] = math.sqrt(max(squares - mean * mean, 0.0)) if math.isfinite(squares) else math.nan
    return out


def is_logging_step(config: Any, step: int) -> bool:
    """Whether ``step`` (counted from 1) is logged: every ``logging_steps``, the first (``logging_first_step``)
    and the last; never with ``logging_strategy="no"``."""
    if config.logging_strategy == "no":
        return False
    return step % config.logging_steps == 0 or step == config.max_steps or (config.logging_first_step and step == 1)


def tracker_kwargs(config: Any) -> dict[str, Any]:
    """``Accelerator.init_trackers`` arguments: the project, the config's plain values, the run's name."""
    return {
        "project_name": config.project,
        "config": {k: v for k, v in config.to_dict().items() if isinstance(v, int | float | str | bool)},
        "init_kwargs": {"wandb": {"name": config.run_name}} if config.run_name else {},
    }


CONSOLE_KEYS = ("loss", "reward", "reward_std", "entropy", "grad_norm", "learning_rate", "num_tokens")


def console_line(step: int, max_steps: int, metrics: dict[str, float]) -> str:
    """One line per logging step, TRL's names first: ``step 3/10: loss -0.0021 | reward 0.5 | ...``."""
    shown = [f"{k} {metrics[k]:.4g}" for k in CONSOLE_KEYS if k in metrics]
    shown += [f"{k} {v:.4g}" for k, v in sorted(metrics.items()) if k.startswith("rewards/") and k.endswith("/mean")]
    return f"step {step}/{max_steps}: " + " | ".join(shown)


class Callbacks:
    """``transformers.TrainerCallback`` objects called as the ``Trainer`` calls them, with a ``TrainerState``
    kept up to date (``global_step``, ``max_steps``, ``epoch``, ``num_input_tokens_seen``, ``log_history``)."""

    def __init__(self, callbacks: Sequence[Any] | None, args: Any, **objects: Any):
        from transformers import TrainerControl, TrainerState

        self.callbacks = [cb() if isinstance(cb, type) else cb for cb in (callbacks or [])]
        self.args, self.objects = args, objects
        self.state = TrainerState(
            max_steps=args.max_steps,
            logging_steps=args.logging_steps,
            save_steps=args.save_steps,
            num_train_epochs=args.num_train_epochs or 0,
        )
        self.control = TrainerControl()

    def add(self, callback: Any) -> None:
        self.callbacks.append(callback() if isinstance(callback, type) else callback)

    def fire(self, event: str, **kwargs: Any) -> None:
        for cb in self.callbacks:
            method = getattr(cb, event, None)
            if method is not None:
                result = method(self.args, self.state, self.control, **self.objects, **kwargs)
                if result is not None:
                    self.control = result

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record a logging step in ``state.log_history`` and call ``on_log``."""
        self.state.log_history.append({**metrics, "step": step})
        self.fire("on_log", logs=dict(metrics))

    @property
    def should_stop(self) -> bool:
        return bool(self.control.should_training_stop)
