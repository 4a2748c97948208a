"""`thermolog setpoint`: exit status by outcome, and the per-user rate limit across separate runs."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from thermolog.schema import create_schema


def _setpoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "thermolog.cli", "setpoint", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def _db_with_commands(path: Path, user: str, ages_s: list[float]) -> None:
    con = duckdb.connect(str(path))
    create_schema(con)
    now = datetime.now(UTC)
    for n, age in enumerate(ages_s):
        con.execute("INSERT INTO commands (request_id, device_id, sent_at, issued_by, target_temp) "
                    "VALUES (?, 'dev-1', ?, ?, 21)", [f"r{n}", now - timedelta(seconds=age), user])
    con.close()


def test_rate_limit_counts_the_users_audited_commands_of_the_last_minute(thermolog_env: dict[str, str]) -> None:
    """Two commands in the audit from this user in the last minute and a limit of 2: refused, exit 1, nothing
    sent; the same two a few minutes old do not count (the command goes out and times out: exit 3)."""
    env = {**thermolog_env, "THERMOLOG_COMMAND_RATE_LIMIT_PER_MIN": "2", "THERMOLOG_COMMAND_TIMEOUT_S": "1"}
    db = Path(thermolog_env["THERMOLOG_DB_PATH"])
    _db_with_commands(db, "cli:tester", [5, 20])
    refused = _setpoint(env, "dev-1", "21", "--issued-by", "cli:tester")
    assert refused.returncode == 1
    assert "rate limit" in refused.stderr

    db.unlink()
    _db_with_commands(db, "cli:tester", [200, 300])
    silent = _setpoint(env, "dev-1", "21", "--issued-by", "cli:tester")
    assert silent.returncode == 3, silent.stderr
    assert "timeout" in silent.stderr and "dev-1" in silent.stderr


def test_invalid_setpoint_and_missing_target_are_refused(thermolog_env: dict[str, str]) -> None:
    """Outside the range: exit 1 with the reason; neither TARGET nor --mode: exit 1 saying what to give."""
    outside = _setpoint(thermolog_env, "dev-1", "60")
    assert outside.returncode == 1 and "outside" in outside.stderr
    nothing = _setpoint(thermolog_env, "dev-1")
    assert nothing.returncode == 1 and "TARGET or --mode" in nothing.stderr
