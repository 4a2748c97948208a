"""docs/ names only what exists, and docs/architecture.md's "Where things live" table covers the whole tree."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
ARCHITECTURE = ROOT / "docs" / "architecture.md"
CORE = "thermolog"
RUNTIME_PATHS = ("data/",)
"""Paths created when the system runs, not kept in the repository."""


def tracked_files() -> list[str]:
    """Files in the repository (committed, or new and not ignored), as paths relative to the root."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [path for path in listed if (ROOT / path).exists()]  # a deleted file is listed until committed


def where_things_live() -> list[str]:
    """Every repository path in backticks in the "code" column of the "Where things live" table."""
    section = ARCHITECTURE.read_text().split("## Where things live", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| part ")]
    assert rows, "docs/architecture.md has no 'Where things live' table"
    cells = [line.strip("|").split("|")[-1] for line in rows]
    return [path for cell in cells for path in re.findall(r"`([\w.-]+/[\w./-]*)`", cell)]


def test_every_path_in_the_table_exists() -> None:
    """A moved or deleted module fails here until the table says where it went."""
    missing = [path for path in where_things_live() if not (ROOT / path).exists()]
    assert not missing, f"docs/architecture.md's table names paths that do not exist: {missing}"


def _named(folder: str, named: list[str]) -> bool:
    """True when the table names ``folder`` itself or something inside it."""
    return any(path.rstrip("/") == folder or path.startswith(folder + "/") for path in named)


def test_every_folder_package_and_core_module_is_in_the_table() -> None:
    """Each top-level folder, each package outside tests/ and each module of the core package has a row."""
    files = tracked_files()
    named = where_things_live()
    folders = {path.split("/")[0] for path in files if "/" in path and not path.startswith(".")}
    packages = {str(Path(path).parent) for path in files
                if path.endswith("/__init__.py") and not path.startswith("tests/")}
    core_modules = {path for path in files if path.startswith(CORE + "/") and path.endswith(".py")
                    and not path.endswith("__init__.py")}
    assert {"app", "ingest", CORE} <= folders and CORE in packages and core_modules
    missing = sorted(f"{f}/" for f in folders | packages if not _named(f, named))
    missing += sorted(module for module in core_modules if module not in named)
    assert not missing, f"docs/architecture.md's 'Where things live' table lacks: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_and_paths_in_docs_exist(doc: Path) -> None:
    """Relative links resolve, and every repository file named in backticks exists (README: test_readme.py)."""
    text = doc.read_text()
    links = [doc.parent / link for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)]
    paths = [ROOT / path for path in re.findall(r"`([\w.-]+/[\w./-]+\.(?:py|md|json|sh|c|ipynb))`", text)
             if not path.startswith(RUNTIME_PATHS)]
    missing = sorted({str(path.relative_to(ROOT)) for path in links + paths if not path.exists()})
    assert not missing, f"{doc.name} refers to files that do not exist: {missing}"
