"""A fresh lake per test: a new database in the machine's PostgreSQL (127.0.0.1:5432, trust auth, user postgres)
as the DuckLake catalog, a temporary directory (or an Azurite container) for the data, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

PG = "host=127.0.0.1 port=5432 user=postgres"


def pg_available() -> bool:
    """Whether the machine's PostgreSQL answers."""
    try:
        with psycopg.connect(f"{PG} dbname=postgres", connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database; yields its libpq connection string and drops it afterwards."""
    if not pg_available():
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (trust auth, user postgres): start it")
    name = f"thermolog_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG} dbname={name}"
    finally:
        with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def lake_env(conninfo: str, data_path: Path | str, **extra: str) -> dict[str, str]:
    """THERMOLOG_* variables pointing at a lake."""
    env = {"THERMOLOG_LAKE_CATALOG": f"postgres:{conninfo}", "THERMOLOG_LAKE_DATA_PATH": str(data_path)}
    env.update({f"THERMOLOG_{key.upper()}": value for key, value in extra.items()})
    return env
