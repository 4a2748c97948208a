"""SQL-like strings in device ids and export filters reach DuckDB only as parameters, never as SQL text.

Every query function the app, notebooks and export use runs against a real database while a spy records the SQL
text each connection receives: no hostile string ever appears in it, results are exactly the rows whose
device_id equals the string, and the database is unchanged afterwards.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thermolog import export, queries
from thermolog import reader as reader_module
from thermolog.schema import create_schema

START = datetime(2025, 7, 4, tzinfo=UTC)
END = START + timedelta(hours=2)
CLASSIC = [
    "x' OR '1'='1", "x'; DROP TABLE telemetry; --", "\" OR 1=1 --", "') OR ('a'='a", "dev-1' --",
    "dev-1'/*", "*/ OR 1=1", "1; DELETE FROM telemetry", "' UNION SELECT * FROM ingest_state --",
    "%", "_", "dev-%", "?", "$1", "\\'", "dev-1\\", "ʼ OR 1=1", "＇ OR 1=1", "dev-1'||'", "ATTACH 'x.db'",
]
"""Device ids stored in the test database on purpose (as if a bypassed contract let them in)."""
HOSTILE = st.sampled_from(CLASSIC) | st.text(
    alphabet=st.sampled_from(list("'\";-/*%_?$\\()=| ORANDSELECTdev1ʼ＇\t\n")), min_size=1, max_size=40,
)
FUZZ_EXAMPLES = 15
"""Each example runs every query path (~0.5 s on a busy machine): 15 keep this file near 20 s."""
PLAIN_TEXTS: list[str] = []
"""The SQL texts the query paths send for a plain device id; every hostile id must produce the same."""


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding readings of dev-1 and of every CLASSIC id (12 readings each)."""
    path = tmp_path_factory.mktemp("sql") / "thermolog.duckdb"
    con = duckdb.connect(str(path))
    create_schema(con)
    for device_id in ["dev-1", *CLASSIC]:
        for i in range(12):
            con.execute("INSERT INTO telemetry VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [device_id, START + timedelta(minutes=5 * i), 20.0 + i / 10, 40.0, 21.0, i % 2 == 0,
                         START + timedelta(minutes=5 * i)])
        con.execute("INSERT INTO commands (request_id, device_id, issued_by, target_temp) VALUES (?, ?, ?, ?)",
                    [f"r-{device_id}", device_id, device_id, 21.0])
    con.close()
    return path


def _fingerprint(path: Path) -> tuple:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = tuple(sorted(r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()))
        counts = tuple(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("telemetry", "commands"))
        return tables, counts
    finally:
        con.close()


# What the reader itself runs around every query (attach the file under a fresh alias, make it the default,
# detach): it names the database path and the alias, never a value of the caller's.
HOUSEKEEPING = ("ATTACH ", "USE ", "SET TimeZone", "DETACH ")


class SpyConnection:
    """Delegates to a real connection and records every SQL text it is given."""

    def __init__(self, con: duckdb.DuckDBPyConnection, texts: list[str]) -> None:
        self._con, self._texts = con, texts

    def execute(self, sql: str, parameters: Any = None) -> Any:
        if not sql.startswith(HOUSEKEEPING):
            self._texts.append(sql)
        return self._con.execute(sql, parameters)

    def sql(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._texts.append(sql)
        return self._con.sql(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


@pytest.fixture(scope="module")
def sql_texts(db: Path) -> Iterator[list[str]]:
    """Every SQL text thermolog.reader's connections receive while this module runs."""
    texts: list[str] = []
    real_cursor = reader_module._cursor
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reader_module, "_cursor", lambda: SpyConnection(real_cursor(), texts))
        yield texts


def _run_all(device_id: str, db: Path, texts: list[str]) -> tuple[int, list[str]]:
    """Call every query path with ``device_id``; returns (readings found, SQL texts the database received)."""
    texts.clear()
    frame = queries.history([device_id], START, END, max_points=500, db_path=db)
    assert set(frame["device_id"].to_list()) <= {device_id}
    found = int(frame["n"].sum() or 0)
    assert queries.export_count([device_id], START, END, db_path=db) == found
    assert set(queries.stats([device_id], START, END, db_path=db)["device_id"].to_list()) <= {device_id}
    assert set(queries.heating_periods([device_id], START, END, db_path=db)["device_id"].to_list()) <= {device_id}
    commands = queries.recent_commands(limit=100, device_id=device_id, db_path=db)
    assert commands.height == (1 if found else 0)
    assert export.export([device_id], START, END, "csv", BytesIO(), db_path=db) == found
    assert texts, "the spy saw no SQL: the test is not looking at the real path"
    return found, list(texts)


def _check_one(hostile: str, db: Path, texts: list[str]) -> None:
    """The hostile id finds exactly its own rows, and the SQL text is the same as for a plain id: the value
    went in as a parameter."""
    found, hostile_texts = _run_all(hostile, db, texts)
    assert found == (12 if hostile in CLASSIC else 0)
    if not PLAIN_TEXTS:
        PLAIN_TEXTS.extend(_run_all("dev-1", db, texts)[1])
    assert hostile_texts == PLAIN_TEXTS, f"{hostile!r} changed the SQL text"


def test_classic_injection_strings_are_only_parameters(db: Path, sql_texts: list[str]) -> None:
    before = _fingerprint(db)
    for hostile in CLASSIC:
        _check_one(hostile, db, sql_texts)
    assert _fingerprint(db) == before


def test_fuzzed_sql_like_device_ids_are_only_parameters(db: Path, sql_texts: list[str]) -> None:
    before = _fingerprint(db)
    ran = [0]

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(HOSTILE)
    def prop(hostile: str) -> None:
        ran[0] += 1
        _check_one(hostile, db, sql_texts)

    prop()
    assert ran[0] >= FUZZ_EXAMPLES
    assert _fingerprint(db) == before


def test_export_cli_with_a_hostile_device_filter(db: Path, tmp_path: Path) -> None:
    """`thermolog export --device "x'; DROP TABLE telemetry; --"` as a process: exactly that device's rows."""
    hostile = "x'; DROP TABLE telemetry; --"
    out = tmp_path / "out.csv"
    done = subprocess.run(
        [sys.executable, "-m", "thermolog.cli", "export", "--device", hostile, "--from", START.isoformat(),
         "--to", END.isoformat(), "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=60, env={"THERMOLOG_DB_PATH": str(db), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 13 and all(hostile.split(";")[0] in line for line in lines[1:])
    assert _fingerprint(db)[1][0] == 12 * (len(CLASSIC) + 1)
