"""`trapo demo`'s flags: two threads by default (one on a one-core machine)."""

from __future__ import annotations

import os

from trapo.cli import build_parser


def test_demo_uses_two_threads_where_there_are_two_cores():
    args = build_parser().parse_args(["demo"])
    assert args.threads == min(2, os.cpu_count() or 1)
    assert build_parser().parse_args(["demo", "--threads", "1"]).threads == 1
