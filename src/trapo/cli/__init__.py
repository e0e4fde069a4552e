"""The ``trapo`` command line: one sub-command per module in this package.

Each sub-command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments). Adding a command is a new module plus one line here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from transformers import HfArgumentParser

from trapo import __version__

# Sub-command modules, in the order ``--help`` lists them.
COMMANDS = ("demo", "data", "base", "train", "eval", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trapo",
        description=(
            "Post-train language models with TRAPO (Trust-Region Adaptive Policy Optimization) "
            "and its baselines (SFT, GRPO, SFT-then-GRPO, LUFFY)."
        ),
        epilog="Run `trapo COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"trapo {__version__}")
    # HfArgumentParser is an ArgumentParser that can also turn a dataclass into flags (`trapo train`).
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=HfArgumentParser)
    for name in COMMANDS:
        importlib.import_module(f"trapo.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # a command that layers a config file under its flags parses them again
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"trapo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
