"""trapo: Trust-Region Adaptive Policy Optimization for post-training language models.

Layers, bottom to top (a lower layer never imports an upper one):

- core math (torch only): :mod:`trapo.losses` (per-token rules), :mod:`trapo.advantages`,
  :mod:`trapo.guidance` (micro-group schedule, prefix cuts), :mod:`trapo.objective` (the batch loss)
- rollout engines: :mod:`trapo.rollout`
- rewards: :mod:`trapo.rewards`
- data: :mod:`trapo.data`
- trainer: :mod:`trapo.config`, :mod:`trapo.methods`, :mod:`trapo.trainer`, :mod:`trapo.evaluate`,
  :mod:`trapo.models` (loading a local model directory)
- command line: :mod:`trapo.cli` (``train``, ``eval``; other packages add commands through an entry point)

The embedded miniature the method is tested on (task, tiny model, comparison, reports) is a separate
package, :mod:`trapo_lab`, which imports this one; this one never imports it.
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
