"""``thermolog settings``: print the effective settings, or the reference table of docs/settings.md."""

from __future__ import annotations

import argparse

from thermolog.settings import Settings, masked, settings_markdown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``thermolog settings``."""
    parser.add_argument("--markdown", action="store_true", help="print the reference table (variable, default)")


def run(args: argparse.Namespace) -> int:
    """Print settings; passwords and secrets are masked."""
    if args.markdown:
        print(settings_markdown(), end="")
        return 0
    for name, value in Settings().model_dump().items():
        value = masked(name, value)
        print(f"THERMOLOG_{name.upper()}={'' if value is None else value}")
    return 0
