"""Tables on the pages: small ones as Markdown (cheap for the browser), every cell shown literally; long ones as a
grid with scrolling and sorting."""

from __future__ import annotations

import polars as pl
from streamlit.testing.v1 import AppTest

from app import ui
from tests.app_support import shown_table


def _page(rows: int) -> AppTest:
    def script(rows: int) -> None:
        import polars as pl

        from app import ui

        ui.table(pl.DataFrame({"device": [f"room|{i} [x](https://evil.example)" for i in range(rows)],
                               "readings": list(range(rows)), "avg (°C)": [20.5] * rows, "note": [None] * rows}))

    return AppTest.from_function(script, args=(rows,)).run()


def test_a_small_table_is_markdown_showing_each_cell_literally() -> None:
    at = _page(3)
    assert not at.exception and not at.dataframe
    table = shown_table(at)
    assert table["device"].tolist() == [f"room|{i} [x](https://evil.example)" for i in range(3)]
    assert table["readings"].tolist() == [0, 1, 2] and table["avg (°C)"].tolist() == [20.5] * 3
    assert table["note"].isna().all()
    markdown = at.markdown[0].value
    assert "](" not in markdown.replace("\\](", "")  # no link survives the escaping
    assert markdown.splitlines()[1] == "|---|---:|---:|---|"  # numbers right-aligned


def test_a_long_table_is_a_grid() -> None:
    at = _page(ui.SMALL_TABLE_ROWS + 1)
    assert not at.exception and not at.markdown
    assert len(at.dataframe[0].value) == ui.SMALL_TABLE_ROWS + 1


def test_markdown_table_dashes_missing_values() -> None:
    text = ui.markdown_table(pl.DataFrame({"a": [1, None]}))
    assert text.splitlines()[-1] == "| — |"
