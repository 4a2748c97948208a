"""The sink's Arrow tables (ingest.sinks.columns): every column kind reaches DuckDB with its value and its nulls,
and one row per key is kept the way the sink asks (first or last, in arrival order)."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from ingest.sinks.columns import ArrowTable, columns_of, first_rows

SCHEMA = {"name": "Utf8", "at": "Time", "count": "Int64", "value": "Float64", "on": "Boolean", "raw": "Binary",
          "tags": "List:Utf8"}


def _scan(table: ArrowTable, sql: str = "SELECT * FROM t") -> list[tuple]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("t", table)
    return con.execute(sql).fetchall()


def test_every_kind_reaches_duckdb_with_its_values_and_nulls() -> None:
    rows = [
        {"name": "é-1", "at": 1_767_225_600_000_001, "count": 2**62, "value": 20.5, "on": True, "raw": b"\x00{",
         "tags": ["mail", "webhook"]},
        {"name": None, "at": None, "count": None, "value": None, "on": None, "raw": None, "tags": None},
        {"name": "x", "at": 0, "count": -1, "value": -0.25, "on": False, "raw": b"", "tags": []},
    ]
    table = ArrowTable(columns_of(rows, SCHEMA), SCHEMA)
    assert table.height == 3
    assert _scan(table) == [
        ("é-1", datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC), 2**62, 20.5, True, b"\x00{", ["mail", "webhook"]),
        (None,) * 7,
        ("x", datetime(1970, 1, 1, tzinfo=UTC), -1, -0.25, False, b"", []),
    ]
    types = dict(_scan(table, "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM t)"))
    assert types == {"name": "VARCHAR", "at": "TIMESTAMP WITH TIME ZONE", "count": "BIGINT", "value": "DOUBLE",
                     "on": "BOOLEAN", "raw": "BLOB", "tags": "VARCHAR[]"}


def test_a_registered_table_can_be_scanned_more_than_once() -> None:
    con = duckdb.connect()
    con.register("t", ArrowTable({"n": [1, 2, 3]}, {"n": "Int64"}))
    assert con.execute("SELECT sum(n) FROM t").fetchone() == (6,)
    assert con.execute("SELECT a.n FROM t a JOIN t b ON a.n = b.n + 1 ORDER BY 1").fetchall() == [(2,), (3,)]


def test_a_missing_key_is_a_null() -> None:
    assert columns_of([{"a": 1}, {"b": 2}], ("a", "b")) == {"a": [1, None], "b": [None, 2]}


def test_first_rows_keeps_the_first_or_last_of_each_key_in_arrival_order() -> None:
    columns = {"device": ["a", "b", "a", "c", "b"], "ts": [1, 1, 1, 1, 2], "v": [10, 20, 30, 40, 50]}
    assert first_rows(columns, ("device", "ts")) == {"device": ["a", "b", "c", "b"], "ts": [1, 1, 1, 2],
                                                     "v": [10, 20, 40, 50]}
    assert first_rows(columns, ("device",), keep="last") == {"device": ["a", "c", "b"], "ts": [1, 1, 2],
                                                              "v": [30, 40, 50]}


def test_first_rows_hands_back_the_same_columns_when_no_key_repeats() -> None:
    columns = {"device": ["a", "b"], "ts": [1, 1]}
    assert first_rows(columns, ("device", "ts")) is columns
