"""Regenerate the generated blocks of README.md and docs/settings.md: ``python tools/update_readme.py``.

README.md: the CLI commands, the benchmark figures (from docs/performance.md, which ``make bench`` writes) and the
fault figures (from docs/reliability.md). docs/settings.md: the settings reference. ``tests/test_readme.py`` fails
when a block is out of date and names this script.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SETTINGS_DOC = ROOT / "docs" / "settings.md"
PERFORMANCE_DOC = ROOT / "docs" / "performance.md"
RELIABILITY_DOC = ROOT / "docs" / "reliability.md"
sys.path.insert(0, str(ROOT))

from thermolog.cli import COMMANDS  # noqa: E402
from thermolog.settings import settings_markdown  # noqa: E402

PERFORMANCE_COLUMNS = ("benchmark", "metric", "value", "target", "met")
RELIABILITY_COLUMNS = ("fault", "lost", "duplicated")


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


def _cells(line: str) -> list[str]:
    """The cells of one Markdown table row (``\\|`` inside a cell is not a separator)."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def markdown_table(text: str, source: Path, after: str = "") -> list[dict[str, str]]:
    """Rows (header -> cell) of the first Markdown table in ``text`` that follows the line ``after``."""
    if after:
        found = re.search(rf"^{re.escape(after)}$", text, re.M)
        if not found:
            raise SystemExit(f"{source.relative_to(ROOT)} has no line {after!r}")
        text = text[found.end():]
    table = re.search(r"^\|.*\|\n\|[-|: ]+\|\n(?:\|.*\|\n?)*", text, re.M)
    if not table:
        raise SystemExit(f"{source.relative_to(ROOT)} has no Markdown table" + (f" after {after!r}" if after else ""))
    header, _, *lines = table.group(0).strip().splitlines()
    names = _cells(header)
    return [dict(zip(names, _cells(line), strict=False)) for line in lines]


def _pick(rows: list[dict[str, str]], columns: tuple[str, ...], source: Path) -> list[str]:
    """``rows`` as Markdown lines holding only ``columns``; a missing column is an error naming the file."""
    missing = [c for c in columns if rows and c not in rows[0]]
    if missing:
        raise SystemExit(f"{source.relative_to(ROOT)}: the table lacks the column(s) {', '.join(missing)}")
    return ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]


def performance_markdown() -> str:
    """Every benchmark figure that has a target, with the run (date, machine) each benchmark's rows come from."""
    text = PERFORMANCE_DOC.read_text()
    runs = markdown_table(text, PERFORMANCE_DOC)
    if not runs or "measured" not in runs[0]:
        raise SystemExit(f"{PERFORMANCE_DOC.relative_to(ROOT)} lacks its table of runs (run | measured | machine)")
    start = text.find("| benchmark |")
    if start < 0:
        raise SystemExit(f"{PERFORMANCE_DOC.relative_to(ROOT)} lacks its table of figures (| benchmark | ...)")
    rows = [row for row in markdown_table(text[start:], PERFORMANCE_DOC) if row.get("target")]
    machines = sorted({run["machine"] for run in runs})
    when = ", ".join(f"{run['run']} {run['measured']}" for run in runs)
    header = "| " + " | ".join(PERFORMANCE_COLUMNS) + " |\n|" + "---|" * len(PERFORMANCE_COLUMNS)
    lines = _pick(rows, PERFORMANCE_COLUMNS, PERFORMANCE_DOC)
    return f"Measured on {'; '.join(machines)}: {when}.\n\n{header}\n" + "\n".join(lines) + "\n"


def reliability_markdown() -> str:
    """Lost and duplicated readings per fault, as the fault tests last measured them."""
    text = RELIABILITY_DOC.read_text()
    last_run = re.search(r"^Last run: (.+)$", text, re.M)
    if not last_run:
        raise SystemExit(f"{RELIABILITY_DOC.relative_to(ROOT)} lacks its 'Last run: ...' line")
    rows = markdown_table(text, RELIABILITY_DOC, after="## Faults")
    header = "| " + " | ".join(RELIABILITY_COLUMNS) + " |\n|---|---:|---:|"
    lines = _pick(rows, RELIABILITY_COLUMNS, RELIABILITY_DOC)
    return f"The reliability tests' last run: {last_run.group(1)}\n\n{header}\n" + "\n".join(lines) + "\n"


GENERATORS: dict[Path, dict[str, Callable[[], str]]] = {
    README: {"commands": commands_markdown, "performance": performance_markdown,
             "reliability": reliability_markdown},
    SETTINGS_DOC: {"settings": settings_markdown},
}
"""File -> marker name -> what generates the block."""


def blocks(path: Path = README) -> dict[str, str]:
    """Marker name -> generated Markdown, for the blocks of ``path``."""
    return {name: generate() for name, generate in GENERATORS[path].items()}


def block_re(name: str) -> re.Pattern[str]:
    """The text between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    return re.compile(rf"(<!-- {name}:start -->\n)(.*?)(<!-- {name}:end -->)", re.S)


def render(text: str, path: Path = README) -> str:
    """``text`` (the content of ``path``) with every generated block replaced by its current content."""
    for name, body in blocks(path).items():
        text, count = block_re(name).subn(lambda m, b=body: m.group(1) + b + m.group(3), text)
        if count != 1:
            raise SystemExit(f"{path.name} needs exactly one <!-- {name}:start --> ... <!-- {name}:end --> block")
    return text


if __name__ == "__main__":
    for doc in GENERATORS:
        doc.write_text(render(doc.read_text(), doc))
        print(f"updated {doc}")
