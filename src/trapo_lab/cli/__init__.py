"""The lab's sub-commands of ``trapo`` (``demo``, ``data``, ``base``, ``compare``).

Each module exposes ``register(subparsers)``, like the library's own commands; ``pyproject.toml``
declares them in the ``trapo.commands`` entry-point group, so the library's command line finds them
without importing the lab. Every lab command checks the lab extra first (:func:`trapo_lab.require_extra`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from trapo_lab import require_extra


def lab_command(name: str, func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``func`` behind a check that the lab extra is installed (a clear message naming it otherwise)."""

    def run(args: argparse.Namespace) -> int:
        require_extra(name)
        return func(args)

    return run
