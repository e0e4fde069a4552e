"""trapo_lab: the embedded miniature on which the library is tested against the paper.

Everything here is experiment, not method: the chain-arithmetic task and its retained skills
(:mod:`trapo_lab.tasks`), the tiny tokenizer and model (:mod:`trapo_lab.models`), pre-training of the
base model (:mod:`trapo_lab.pretrain`), the comparison protocol with its report and plots
(:mod:`trapo_lab.compare`), and the ``trapo demo / data / base / compare`` commands
(:mod:`trapo_lab.cli`), which plug into the ``trapo`` command line through an entry point.

The lab imports the library (:mod:`trapo`); the library never imports the lab. The lab's extra
dependencies (matplotlib) come with ``pip install "trapo[lab]"``.
"""

from __future__ import annotations

import importlib.util

EXTRA = "lab"
EXTRA_MODULES = ("matplotlib",)


def missing_extra() -> list[str]:
    """The lab's extra dependencies that are not installed (empty when ``trapo[lab]`` is)."""
    return [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]


def require_extra(command: str) -> None:
    """Raise ``ImportError`` naming the extra to install when a lab dependency is missing."""
    if missing := missing_extra():
        raise ImportError(
            f"`trapo {command}` is part of the lab and needs {', '.join(missing)}: "
            f'pip install "trapo[{EXTRA}]" (or `make demo`, which installs it)'
        )
