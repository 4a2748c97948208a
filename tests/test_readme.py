"""README.md stays truthful: generated blocks are current, commands it names exist, Quick start is two commands."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from thermolog.cli import COMMANDS
from thermolog.settings import Settings
from tools.update_readme import README, block_re, blocks

TEXT = README.read_text()
ROOT = Path(__file__).resolve().parent.parent


def test_generated_blocks_are_up_to_date() -> None:
    """The settings and commands tables equal what the code generates now."""
    for name, expected in blocks().items():
        match = block_re(name).search(TEXT)
        assert match, f"README.md lacks the <!-- {name}:start --> ... <!-- {name}:end --> block"
        assert match.group(2) == expected, (
            f"README.md's {name} table is out of date: run `.venv/bin/python tools/update_readme.py`")


def test_every_setting_is_documented() -> None:
    """Each settings field appears in README as its environment variable."""
    missing = [name for name in Settings.model_fields if f"`THERMOLOG_{name.upper()}`" not in TEXT]
    assert not missing


def test_commands_named_in_readme_exist() -> None:
    """Every `thermolog <command>` the README mentions is registered and its module imports."""
    named = set(re.findall(r"`thermolog ([a-z][a-z-]*)", TEXT))
    assert {"demo", "simulate", "ingest", "app"} <= named
    for name in named:
        assert name in COMMANDS, f"README mentions `thermolog {name}`, which does not exist"
        importlib.import_module(COMMANDS[name][0])


def test_quick_start_is_make_demo_and_make_test() -> None:
    """The Quick start's code block is exactly the two make targets, and both exist in the Makefile."""
    section = TEXT.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    assert [line.split()[0:2] for line in block.strip().splitlines()] == [["make", "demo"], ["make", "test"]]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_linked_files_exist() -> None:
    """Relative links and repository paths in backticks point at files that exist."""
    links = re.findall(r"\]\(([^)#:]+)\)", TEXT)
    paths = [p for p in re.findall(r"`([\w./-]+/[\w./-]+\.(?:py|md|json))`", TEXT)
             if not p.startswith("data/")]  # created at run time
    for rel in links + paths:
        assert (ROOT / rel).exists(), f"README refers to {rel}, which does not exist"
