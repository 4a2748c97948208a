"""The command audit cannot be rewritten: commands are keyed by (device_id, request_id) and inserted once, an ack
settles only its own device's pending command, and Home Assistant's mode commands are audited, not rejected."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import orjson
import pytest

from ingest.journal import Position, Record
from ingest.parse import parse_records
from ingest.sinks.duckdb import DuckDBSink
from tests.ingest_support import db_rows, db_value
from thermolog import contract, schema

PREFIX = "thermostats"
AUDIT = "SELECT device_id, request_id, target_temp, mode, ok, error FROM commands ORDER BY device_id, request_id"


class Bus:
    """Writes messages into a sink as successive flushes would, each with later journal positions."""

    def __init__(self, db: Path) -> None:
        self.sink = DuckDBSink(db)
        self.offset = 8

    def flush(self, messages: Sequence[tuple[str, str, dict]]) -> None:
        records = []
        for device, kind, payload in messages:
            self.offset += 1
            records.append(Record("mqtt", f"{PREFIX}/{device}/{kind}", 1_750_000_000_000_000_000 + self.offset,
                                  orjson.dumps(payload), None, Position(1, self.offset)))
        self.sink.write(parse_records(records, PREFIX), records, {})


def test_a_reused_request_id_does_not_rewrite_the_first_command(tmp_path: Path) -> None:
    """A later `cmd` with the same device and request id changes nothing; the same id on another device is its own."""
    bus = Bus(tmp_path / "db.duckdb")
    bus.flush([("dev-a", "cmd", {"request_id": "r1", "target_temp": 21.0, "issued_by": "alice"})])
    bus.flush([("dev-a", "cmd", {"request_id": "r1", "target_temp": 30.0, "issued_by": "mallory"}),
               ("dev-b", "cmd", {"request_id": "r1", "target_temp": 19.0})])
    assert db_rows(tmp_path / "db.duckdb", AUDIT) == [("dev-a", "r1", 21.0, None, None, None),
                                                       ("dev-b", "r1", 19.0, None, None, None)]
    assert db_value(tmp_path / "db.duckdb", "SELECT issued_by FROM commands WHERE device_id = 'dev-a'") == "alice"


def test_an_ack_settles_only_its_own_devices_pending_command(tmp_path: Path) -> None:
    """dev-b's ack naming dev-a's request id leaves dev-a's command pending; dev-a's first ack stands."""
    db = tmp_path / "db.duckdb"
    bus = Bus(db)
    bus.flush([("dev-a", "cmd", {"request_id": "r2", "target_temp": 22.0})])
    bus.flush([("dev-b", "cmd/ack", {"request_id": "r2", "ok": False, "error": "forged"})])
    assert db_value(db, "SELECT ok FROM commands WHERE device_id = 'dev-a' AND request_id = 'r2'") is None
    bus.flush([("dev-a", "cmd/ack", {"request_id": "r2", "ok": True, "target_temp": 22.0})])
    bus.flush([("dev-a", "cmd/ack", {"request_id": "r2", "ok": False, "error": "later"})])
    assert db_rows(db, "SELECT ok, error FROM commands WHERE device_id = 'dev-a' AND request_id = 'r2'") == [
        (True, None)]


def test_an_ack_before_its_command_is_completed_by_the_command(tmp_path: Path) -> None:
    """The ack arrives first (another topic, another publisher): the command's fields are filled in once."""
    db = tmp_path / "db.duckdb"
    bus = Bus(db)
    bus.flush([("dev-a", "cmd/ack", {"request_id": "r3", "ok": True, "target_temp": 23.0})])
    bus.flush([("dev-a", "cmd", {"request_id": "r3", "target_temp": 23.0, "issued_by": "bob"})])
    bus.flush([("dev-a", "cmd", {"request_id": "r3", "target_temp": 31.0, "issued_by": "mallory"})])
    assert db_rows(db, "SELECT target_temp, issued_by, ok, sent_at IS NOT NULL FROM commands") == [
        (23.0, "bob", True, True)]


def test_home_assistant_mode_commands_are_audited_not_rejected(tmp_path: Path) -> None:
    """`{"request_id": "ha-mode-...", "mode": "off"}` on the cmd topic lands in `commands` with its mode."""
    db = tmp_path / "db.duckdb"
    bus = Bus(db)
    bus.flush([("dev-a", "cmd", {"request_id": "ha-mode-1751587200000000", "mode": "off"}),
               ("dev-a", "cmd/ack", {"request_id": "ha-mode-1751587200000000", "ok": True}),
               ("dev-a", "cmd", {"request_id": "ha-both-1", "mode": "heat", "target_temp": 20.5})])
    assert db_value(db, "SELECT count(*) FROM rejected") == 0
    assert db_rows(db, AUDIT) == [("dev-a", "ha-both-1", 20.5, "heat", None, None),
                                  ("dev-a", "ha-mode-1751587200000000", None, "off", True, None)]


@pytest.mark.parametrize(("payload", "reason"), [
    ({"request_id": "x"}, "needs target_temp or mode"),
    ({"request_id": "x", "mode": "cool"}, "mode"),
])
def test_a_command_without_anything_to_do_or_with_an_unknown_mode_is_refused(payload: dict, reason: str) -> None:
    with pytest.raises(contract.ContractError, match=reason):
        contract.parse_command(orjson.dumps(payload))


def test_a_version_2_file_gets_commands_keyed_by_device_and_keeps_its_rows(tmp_path: Path) -> None:
    """Opening an older file rebuilds `commands` with the (device_id, request_id) key and the mode column."""
    db = tmp_path / "db.duckdb"
    Bus(db).flush([])
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE commands")
    con.execute("CREATE TABLE commands (request_id VARCHAR PRIMARY KEY, device_id VARCHAR NOT NULL, sent_at "
                "TIMESTAMPTZ, issued_by VARCHAR, target_temp DOUBLE, acked_at TIMESTAMPTZ, ok BOOLEAN, error VARCHAR, "
                "transport VARCHAR)")
    con.execute("INSERT INTO commands (request_id, device_id, target_temp, ok) VALUES ('old', 'dev-a', 20, true)")
    con.close()
    bus = Bus(db)
    bus.flush([("dev-b", "cmd", {"request_id": "old", "target_temp": 25.0})])
    assert db_rows(db, AUDIT) == [("dev-a", "old", 20.0, None, True, None), ("dev-b", "old", 25.0, None, None, None)]
    assert db_value(db, "SELECT value FROM ingest_state WHERE key = 'schema_version'") == str(schema.SCHEMA_VERSION)
