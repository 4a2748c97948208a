"""Page scripts show only what they mean to: Streamlit's magic writes any bare module-level expression to the page
(a constant's docstring once showed up above the History title), so none may hold one besides the module docstring.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
SCRIPTS = sorted([APP / "streamlit_app.py", APP / "server.py", *(APP / "views").glob("*.py")])


def bare_expressions(path: Path) -> list[int]:
    """Lines of module-level expression statements that are not calls (what magic would display)."""
    body = ast.parse(path.read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the module docstring
    return [node.lineno for node in body if isinstance(node, ast.Expr) and not isinstance(node.value, ast.Call)]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_page_script_has_no_bare_expression(script: Path) -> None:
    assert bare_expressions(script) == [], f"{script.name}: magic would write these lines to the page"


def test_the_check_finds_a_constant_docstring(tmp_path: Path) -> None:
    script = tmp_path / "page.py"
    script.write_text('"""Module."""\n\nLIMIT = 4\n"""What LIMIT means."""\nprint(LIMIT)\n')
    assert bare_expressions(script) == [4]
