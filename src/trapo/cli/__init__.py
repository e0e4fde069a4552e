"""The ``trapo`` command line: ``train`` and ``eval`` from the library, more commands from plug-ins.

Each sub-command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` (called
with the parsed arguments). The library's own commands are listed in :data:`COMMANDS`; other packages
add theirs through the ``trapo.commands`` entry-point group (``name = "package.module"``), which is how
the lab (:mod:`trapo_lab`: ``demo``, ``data``, ``base``, ``compare``) plugs in without the library ever
importing it.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from importlib.metadata import entry_points

from transformers import HfArgumentParser

from trapo import __version__

# The library's own sub-command modules, in the order ``--help`` lists them.
COMMANDS = ("train", "eval")
PLUGIN_GROUP = "trapo.commands"


def command_modules() -> dict[str, str]:
    """Sub-command name -> module: the library's, then every installed plug-in's (by entry-point name)."""
    modules = {name: f"trapo.cli.{name}" for name in COMMANDS}
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name):
        modules.setdefault(ep.name, ep.value)
    return modules


# Negative numbers, exponents included (``--learning_rate -1e-3``, ``--x -.5``, ``-inf``), are values, not flags.
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-inf$")


def _accept_both_spellings(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` and its sub-parsers behave like their neighbours: every long flag answers to both its
    ``_`` and its ``-`` spelling, and negative numbers are values (no ``=`` needed)."""
    parser._negative_number_matcher = NEGATIVE_NUMBER
    for action in list(parser._actions):
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _accept_both_spellings(sub)
            continue
        for option in list(action.option_strings):
            if not option.startswith("--"):
                continue
            for other in ("--" + option[2:].replace("_", "-"), "--" + option[2:].replace("-", "_")):
                if other not in parser._option_string_actions:
                    parser._option_string_actions[other] = action
                    action.option_strings.append(other)


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
    for module in command_modules().values():
        importlib.import_module(module).register(subparsers)
    _accept_both_spellings(parser)
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
    except (ValueError, OSError, ImportError) as err:  # OSError: missing/unreadable files, a file for a dir
        print(f"trapo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # what was saved has been said already; no traceback
        print(f"trapo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
