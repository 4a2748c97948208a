"""README.md stays short and truthful: generated blocks current, commands and files it names exist, two commands."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from thermolog.cli import COMMANDS
from thermolog.settings import Settings
from tools.update_readme import GENERATORS, README, SETTINGS_DOC, block_re, blocks

TEXT = README.read_text()
ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 200


def test_readme_is_at_most_200_lines() -> None:
    """Details live in docs/; README says what thermolog is, how to start it, what you see and where to go next."""
    assert len(TEXT.splitlines()) <= MAX_LINES


@pytest.mark.parametrize("doc", list(GENERATORS), ids=lambda p: p.name)
def test_generated_blocks_are_up_to_date(doc: Path) -> None:
    """Commands, benchmark and fault figures (README) and the settings table (docs/settings.md) equal what their
    sources generate now."""
    text = doc.read_text()
    for name, expected in blocks(doc).items():
        match = block_re(name).search(text)
        assert match, f"{doc.name} lacks the <!-- {name}:start --> ... <!-- {name}:end --> block"
        assert match.group(2) == expected, (
            f"{doc.name}'s {name} block is out of date: run `.venv/bin/python tools/update_readme.py`")


def test_readme_copies_no_figures_by_hand() -> None:
    """Measured figures appear only inside the generated performance and reliability blocks."""
    assert {"performance", "reliability"} <= set(GENERATORS[README])
    prose = TEXT
    for name in GENERATORS[README]:
        prose = block_re(name).sub("", prose)
    prose = re.sub(r"```.*?```", "", prose, flags=re.S)  # example output, not measurements
    figures = re.findall(r"\d[\d,.]*\s?(?:msg/s|ms|KB|KiB|MB|MiB|%|x)(?![\w/])", prose)
    assert not figures, f"README repeats figures outside the generated blocks: {figures}"


def test_every_setting_is_documented() -> None:
    """Each settings field appears in docs/settings.md as its environment variable, and README links there."""
    settings_doc = SETTINGS_DOC.read_text()
    missing = [name for name in Settings.model_fields if f"`THERMOLOG_{name.upper()}`" not in settings_doc]
    assert not missing
    assert "(docs/settings.md)" in TEXT


def test_commands_named_in_readme_exist() -> None:
    """Every `thermolog <command>` the README mentions is registered and its module imports."""
    named = set(re.findall(r"`thermolog ([a-z][a-z-]*)", TEXT))
    assert {"demo", "simulate", "ingest", "app"} <= named
    for name in named:
        assert name in COMMANDS, f"README mentions `thermolog {name}`, which does not exist"
        importlib.import_module(COMMANDS[name][0])


def test_quick_start_is_make_demo_and_make_test() -> None:
    """The Quick start's code block is exactly the two make targets."""
    section = TEXT.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    assert [line.split()[0:2] for line in block.strip().splitlines()] == [["make", "demo"], ["make", "test"]]


def test_make_targets_named_in_readme_exist() -> None:
    """Every `make <target>` README names is a target of the Makefile."""
    named = set(re.findall(r"\bmake ([a-z][a-z-]*)", TEXT))
    assert {"demo", "test"} <= named
    makefile = (ROOT / "Makefile").read_text()
    missing = [name for name in sorted(named) if not re.search(rf"^{re.escape(name)}:", makefile, re.M)]
    assert not missing, f"README names make targets the Makefile lacks: {missing}"


def test_linked_files_exist() -> None:
    """Relative links and repository paths in backticks point at files that exist."""
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", TEXT)
    paths = [p for p in re.findall(r"`([\w.-]+/[\w./-]+\.(?:py|md|json|sh|c|ipynb))`", TEXT)
             if not p.startswith("data/")]  # created at run time
    missing = [rel for rel in links + paths if not (ROOT / rel).exists()]
    assert not missing, f"README refers to files that do not exist: {missing}"
