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
