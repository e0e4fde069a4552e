"""``--threads``: the torch CPU threads of ``trapo train`` and ``trapo eval``, set before any work.

torch's default is one thread per core. On a machine whose cores other jobs also use, that oversubscribes
them: on the 2-core development machine shared with other jobs, a training step took 5-25 s with torch's
default and 0.83 s with one thread, and one thread was also the fastest setting measured side by
side in benchmarks/vs_trl.py (docs/results/vs_trl.md). So the default is 1 thread per process (with
``accelerate launch``, per process), or ``$OMP_NUM_THREADS`` where that is set; ``--threads 0`` keeps torch's
own default. On a GPU the setting only affects the CPU-side work.
"""

from __future__ import annotations

import argparse
import os

DEFAULT_THREADS = 1

HELP = (
    "torch CPU threads of this process, set with torch.set_num_threads before any work; 0 = torch's "
    f"default (one per core). Default: {DEFAULT_THREADS}, or $OMP_NUM_THREADS when set (one thread was the "
    "fastest on a busy 2-core machine: docs/results/vs_trl.md)."
)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=argparse.SUPPRESS, metavar="N", help=HELP)


def resolve_threads(value: int | None) -> int:
    """The thread count ``--threads value`` asks for (0: torch's default)."""
    if value is None:
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        value = int(env) if env.isdigit() and int(env) > 0 else DEFAULT_THREADS
    if value < 0:
        raise ValueError(f"--threads must be >= 0, got {value}")
    return value


def apply_threads(value: int | None) -> int:
    """Set torch's intra-op threads from ``--threads`` (see :func:`resolve_threads`); returns the count in use."""
    import torch

    threads = resolve_threads(value)
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
