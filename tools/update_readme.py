"""Regenerate README.md's generated blocks (settings table, CLI commands): ``python tools/update_readme.py``.

``tests/test_readme.py`` fails when a block is out of date and names this script.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT))

from thermolog.cli import COMMANDS  # noqa: E402
from thermolog.settings import settings_markdown  # noqa: E402


def commands_markdown() -> str:
    """One row per ``thermolog`` subcommand that is available (its module imports)."""
    rows = ["| command | what it does |", "|---|---|"]
    for name, (module, help_text) in COMMANDS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue  # registered but not built yet: the README only lists what exists
        rows.append(f"| `thermolog {name}` | {help_text} |")
    return "\n".join(rows) + "\n"


def blocks() -> dict[str, str]:
    """Marker name -> generated Markdown."""
    return {"settings": settings_markdown(), "commands": commands_markdown()}


def block_re(name: str) -> re.Pattern[str]:
    """The text between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    return re.compile(rf"(<!-- {name}:start -->\n)(.*?)(<!-- {name}:end -->)", re.S)


def render(text: str) -> str:
    """``text`` with every generated block replaced by its current content."""
    for name, body in blocks().items():
        text, count = block_re(name).subn(lambda m, b=body: m.group(1) + b + m.group(3), text)
        if count != 1:
            raise SystemExit(f"README.md needs exactly one <!-- {name}:start --> ... <!-- {name}:end --> block")
    return text


if __name__ == "__main__":
    README.write_text(render(README.read_text()))
    print(f"updated {README}")
