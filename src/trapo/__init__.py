"""trapo: Trust-Region Adaptive Policy Optimization for post-training language models.

Layers, bottom to top (a lower layer never imports an upper one):

- core math: :mod:`trapo.losses`, :mod:`trapo.advantages`, :mod:`trapo.guidance` (torch only)
- rollout engines: :mod:`trapo.rollout`
- rewards: :mod:`trapo.rewards`
- data: :mod:`trapo.data`, the built-in task :mod:`trapo_lab.tasks`
- trainer: :mod:`trapo.config`, :mod:`trapo.methods`, :mod:`trapo.trainer`, :mod:`trapo.evaluate`
- CLI and reports: :mod:`trapo.cli`, :mod:`trapo_lab.report`
"""

__version__ = "0.1.0"

__all__ = ["TRAPOConfig", "TRAPOTrainer", "__version__"]


def __getattr__(name: str):
    """``from trapo import TRAPOConfig, TRAPOTrainer`` (as ``from trl import GRPOConfig, GRPOTrainer``),
    imported on first use so that ``import trapo`` stays light."""
    if name == "TRAPOConfig":
        from trapo.config import TRAPOConfig

        return TRAPOConfig
    if name == "TRAPOTrainer":
        from trapo.trainer import TRAPOTrainer

        return TRAPOTrainer
    raise AttributeError(f"module 'trapo' has no attribute {name!r}")
