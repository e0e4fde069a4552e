"""Every command answers --help (argparse formats help strings with %, so a stray % would crash it)."""

from __future__ import annotations

import pytest

from trapo.cli import build_parser, command_modules, main

COMMANDS = tuple(command_modules())


def test_every_command_is_registered():
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert set(choices) == set(COMMANDS)
    assert {"train", "eval", "demo", "data", "base", "compare"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: trapo {command}" in out


def test_no_command_prints_the_overview(capsys):
    assert main([]) == 0
    assert "Post-train language models with TRAPO" in capsys.readouterr().out
