"""Rollout engines: generate continuations of prompt (+ expert prefix) token ids."""

from trapo.rollout.base import RolloutEngine, SamplingParams
from trapo.rollout.hf import HFEngine
from trapo.rollout.hf_generate import HFGenerateEngine

__all__ = ["HFEngine", "HFGenerateEngine", "RolloutEngine", "SamplingParams"]
