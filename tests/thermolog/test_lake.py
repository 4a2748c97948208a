"""The lake (DuckLake, catalog in PostgreSQL): extensions load signed, flushes of several workers land exactly once,
rollups stay exact, each worker's journal position is its own, and readers read it through the same queries."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from ingest.journal import START, Position, Record
from ingest.parse import parse_records
from ingest.sinks.duckdb import PositionMoved
from ingest.sinks.lake import LakeSink
from tests.ingest_support import telemetry
from tests.lake_support import fresh_database, lake_env
from thermolog import lake, queries, reader
from thermolog.settings import Settings, get_settings

pytestmark = pytest.mark.slow  # seconds per test: outside the fast loop (docs/testing.md)

PREFIX = "thermostats"


@pytest.fixture
def lake_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    with fresh_database() as conninfo:
        for key, value in lake_env(conninfo, tmp_path / "lake-data").items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("THERMOLOG_JOURNAL_DIR", str(tmp_path / "journal"))
        get_settings.cache_clear()
        lake.close_shared()
        yield get_settings()
        lake.close_shared()
        get_settings.cache_clear()


def _records(items: list[tuple[str, bytes]], offset: int = 0, segment: int = 1) -> list[Record]:
    return [Record("mqtt", topic, 1_750_000_000_000_000_000 + (offset + i) * 1000, payload, None,
                   Position(segment, offset + i + 1))
            for i, (topic, payload) in enumerate(items)]


def _readings(rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    out = []
    for _ in range(count):
        device = rng.choice(["dev-1", "dev-2", "dev-3"])
        out.append((f"{PREFIX}/{device}/telemetry",
                    telemetry(device, rng.randrange(0, 3 * 3600), temperature=round(rng.uniform(15, 25), 2),
                              heating=rng.choice(["ON", "OFF"]))))
    return out


def test_extensions_load_from_the_packages_with_the_signature_check_on() -> None:
    con = duckdb.connect()
    for name in ("ducklake", "postgres_scanner", "azure"):
        path = lake.extension_path(name)
        assert path.name == f"{name}.duckdb_extension" and duckdb.__version__ in str(path)
        lake.load_extension(con, name)
    loaded = {row[0] for row in con.execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}
    assert {"ducklake", "postgres_scanner", "azure"} <= loaded
    assert con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone()[0] is False


def test_a_tampered_extension_file_is_refused(tmp_path: Path) -> None:
    """The signature check is what makes the repackaged binaries safe: one flipped byte and DuckDB refuses it."""
    data = bytearray(lake.extension_path("ducklake").read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered = tmp_path / "ducklake.duckdb_extension"
    tampered.write_bytes(bytes(data))
    with pytest.raises(duckdb.Error, match="signature"):
        duckdb.connect().execute(f"LOAD '{tampered}'")


def test_catalog_without_data_path_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="THERMOLOG_LAKE_DATA_PATH"):
        Settings(lake_catalog="postgres:dbname=x")


def test_two_workers_flush_into_one_lake_with_their_own_positions_and_exact_rollups(lake_settings: Settings) -> None:
    rng = random.Random(3)
    readings = _readings(rng, 2000)
    readings += rng.sample(readings, 200)  # repeats, also across workers
    a, b = LakeSink(lake_settings, "worker-a"), LakeSink(lake_settings, "worker-b")
    assert a.committed_position() == START
    halves = {a: readings[0::2], b: readings[1::2]}
    for sink, items in halves.items():
        for start in range(0, len(items), 400):
            records = _records(items[start:start + 400], offset=start)
            sink.write(parse_records(records, PREFIX), records, {}, expected=sink.committed_position())
    assert a.committed_position() == Position(1, len(halves[a]))
    assert b.committed_position() == Position(1, len(halves[b]))
    with pytest.raises(PositionMoved):  # a stale flusher of worker-a cannot commit over the stored position
        records = _records(readings[:1], offset=5)
        a.write(parse_records(records, PREFIX), records, {}, expected=Position(1, 3))
    con = lake.connect(lake_settings)
    distinct = con.execute("SELECT count(DISTINCT (device_id, ts)) FROM telemetry").fetchone()[0]
    assert con.execute("SELECT count(*) FROM telemetry").fetchone()[0] == distinct
    for table, unit in (("telemetry_1m", "minute"), ("telemetry_1h", "hour")):
        stored = con.execute(f"SELECT device_id, bucket, n, temp_min, temp_max, round(temp_sum, 6), heating_n, "
                             f"first_ts, last_ts FROM {table} ORDER BY ALL").fetchall()
        raw = con.execute(f"SELECT device_id, date_trunc('{unit}', ts) b, count(*), min(temperature), "
                          f"max(temperature), round(sum(temperature), 6), count(*) FILTER (WHERE heating), min(ts), "
                          f"max(ts) FROM telemetry GROUP BY ALL ORDER BY ALL").fetchall()
        assert stored == raw, table
    state = dict(con.execute("SELECT key, value FROM ingest_state").fetchall())
    assert int(state["messages_total"]) == len(readings)  # the refused write counted nothing
    # A repeat with the same values is a duplicate; one with other values (random collisions) is rejected.
    assert int(state["duplicates_total"]) + int(state["rejected_total"]) == len(readings) - distinct
    assert int(state["duplicates_total"]) > 150  # most of the 200 resent readings (others hit a collision)
    con.close()
    # Readers: the same query functions, through the lake.
    frame = reader.query("SELECT count(*) AS n FROM telemetry")
    assert frame["n"][0] == distinct
    assert set(queries.devices()) == {"dev-1", "dev-2", "dev-3"}
    assert queries.latest_state().height == 3
    a.close()
    b.close()


def test_state_and_commands_logs_read_as_latest_values(lake_settings: Settings) -> None:
    sink = LakeSink(lake_settings, "w")
    items = [
        (f"{PREFIX}/dev-1/state", b'{"target_temp": 20, "mode": "heat"}'),
        (f"{PREFIX}/dev-1/cmd", b'{"request_id": "r1", "target_temp": 22}'),
        (f"{PREFIX}/dev-1/cmd/ack", b'{"request_id": "r1", "ok": true, "target_temp": 22}'),
    ]
    records = _records(items)
    sink.write(parse_records(records, PREFIX), records, {})
    records = _records([(f"{PREFIX}/dev-1/state", b'{"target_temp": 22, "mode": "heat"}')], offset=3)
    sink.write(parse_records(records, PREFIX), records, {})
    assert reader.query("SELECT target_temp FROM device_state").rows() == [(22.0,)]
    assert reader.query("SELECT request_id, target_temp, ok, error FROM commands").rows() == [("r1", 22.0, True, None)]
    assert queries.device_names() == {}  # the devices view reads (no device profile in use here)
    sink.close()


def _write_in_small_flushes(settings: Settings, readings: list[tuple[str, bytes]], size: int) -> None:
    sinks = [LakeSink(settings, "w1"), LakeSink(settings, "w2")]
    for index, start in enumerate(range(0, len(readings), size)):
        sink = sinks[index % 2]
        records = _records(readings[start:start + size], offset=start)
        sink.write(parse_records(records, PREFIX), records, {}, expected=sink.committed_position())
    for sink in sinks:
        sink.close()


ROLLUP_ROWS = "SELECT device_id, bucket, n, temp_min, temp_max, round(temp_sum, 6), heating_n FROM {} ORDER BY ALL"


def test_maintain_compacts_merges_expires_and_applies_retention(lake_settings: Settings) -> None:
    from thermolog import lake_maintain

    readings = _readings(random.Random(11), 3000)
    _write_in_small_flushes(lake_settings, readings, 100)
    con = lake.connect(lake_settings)
    before = lake_maintain.health(con)
    rollups = {view: con.execute(ROLLUP_ROWS.format(view)).fetchall() for view in lake.ROLLUP_PARTS}
    cutoff = datetime(2025, 7, 4, 1, 30, tzinfo=UTC)
    kept = con.execute("SELECT count(*) FROM telemetry WHERE ts >= ?", [cutoff]).fetchone()[0]
    con.close()
    settings = lake_settings.model_copy(update={"raw_retention_days": 1, "lake_snapshot_retention_h": 0})
    after = lake_maintain.maintain(settings, now=cutoff + timedelta(days=1))
    assert after.telemetry_rows == kept < before.telemetry_rows
    assert after.snapshots < before.snapshots
    assert after.files <= before.files
    con = lake.connect(lake_settings)
    for view, parts in lake.ROLLUP_PARTS.items():  # rollups keep every bucket, merged to one row each
        assert con.execute(ROLLUP_ROWS.format(view)).fetchall() == rollups[view]
        assert con.execute(f"SELECT count(*) FROM {parts}").fetchone()[0] == len(rollups[view])
    assert con.execute("SELECT count(*) FROM telemetry WHERE ts < ?", [cutoff]).fetchone()[0] == 0
    con.close()


def test_delta_export_appends_only_what_is_new(lake_settings: Settings, tmp_path: Path) -> None:
    from deltalake import DeltaTable

    from thermolog.export_delta import export_delta

    readings = _readings(random.Random(13), 1500)
    out = str(tmp_path / "delta")
    _write_in_small_flushes(lake_settings, readings[:1000], 250)
    first = export_delta(out)
    stored = reader.query("SELECT count(*) AS n FROM telemetry")["n"][0]
    assert first.rows == stored and first.previous is None
    assert export_delta(out).rows == 0  # nothing new
    more = [(topic, payload.replace(b"2025-07-04", b"2025-07-05")) for topic, payload in readings[1000:]]
    _write_in_small_flushes(lake_settings, more, 250)
    second = export_delta(out)
    total = reader.query("SELECT count(*) AS n FROM telemetry")["n"][0]
    assert second.rows == total - stored and second.previous == first.watermark
    table = DeltaTable(out).to_pyarrow_table()
    assert table.num_rows == total
    assert len({(d, t) for d, t in zip(table["device_id"].to_pylist(), table["ts"].to_pylist(), strict=True)}) == total


def test_lake_cli_maintain_and_status_print_the_health_figures(lake_settings: Settings,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from thermolog import cli

    _write_in_small_flushes(lake_settings, _readings(random.Random(17), 400), 100)
    assert cli.main(["lake", "maintain", "--json"]) == 0
    maintained = json.loads(capsys.readouterr().out)
    assert maintained["telemetry_rows"] == reader.query("SELECT count(*) AS n FROM telemetry")["n"][0]
    assert maintained["files"] >= 1 and maintained["bytes"] > 0 and maintained["snapshots"] >= 1
    assert cli.main(["lake", "status"]) == 0
    assert f"{maintained['telemetry_rows']} readings" in capsys.readouterr().out


def test_lake_cli_without_a_lake_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from thermolog import cli

    monkeypatch.delenv("THERMOLOG_LAKE_CATALOG", raising=False)
    get_settings.cache_clear()
    assert cli.main(["lake", "status"]) == 2
    assert "no lake configured" in capsys.readouterr().out
    get_settings.cache_clear()


def test_storage_credentials_become_secrets_and_the_password_joins_the_catalog() -> None:
    settings = Settings(lake_catalog="postgres:dbname=t host=db user=u", lake_data_path="s3://bucket/lake/",
                        lake_postgres_password="pw", lake_s3_key_id="AKIA", lake_s3_secret="s3cr3t",
                        lake_s3_region="eu-west-1", lake_s3_endpoint="http://127.0.0.1:9000",
                        lake_azure_connection_string="DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5")
    assert lake.attach_target(settings) == "ducklake:postgres:dbname=t host=db user=u password=pw"
    assert "pw" not in repr(settings) and "s3cr3t" not in repr(settings)
    con = duckdb.connect()
    lake.load_extension(con, "httpfs")
    lake.load_extension(con, "azure")
    lake.create_secrets(con, settings)
    secrets = {row[0]: row[1] for row in con.execute("SELECT type, secret_string FROM duckdb_secrets()").fetchall()}
    assert "region=eu-west-1" in secrets["s3"] and "endpoint=127.0.0.1:9000" in secrets["s3"]
    assert "use_ssl=false" in secrets["s3"] and "key_id=AKIA" in secrets["s3"]
    assert "azure" in secrets


def test_status_shows_this_workers_position_and_the_lakes_totals(lake_settings: Settings) -> None:
    from ingest.sinks.lake import worker_id
    from ingest.status import collect_status

    mine, other = LakeSink(lake_settings, worker_id(lake_settings)), LakeSink(lake_settings, "elsewhere")
    for sink, count, offset in ((mine, 30, 0), (other, 50, 1000)):
        records = _records(_readings(random.Random(count), count), offset=offset)
        sink.write(parse_records(records, PREFIX), records, {"last_flush_at": "2026-01-01T00:00:00+00:00"})
        sink.close()
    status = collect_status(lake_settings)
    assert status.database_ready
    assert status.committed_position == Position(1, 30).encode()  # not the other worker's, written later
    assert status.messages_total == 80


def test_alert_events_and_commands_keep_their_first_row_across_redelivery(lake_settings: Settings) -> None:
    from tests.ingest.test_alert_events import SILENCED, STARTED

    sink = LakeSink(lake_settings, "w")
    items = [(f"{PREFIX}/dev-1/alert", STARTED), (f"{PREFIX}/dev-1/alert", SILENCED),
             (f"{PREFIX}/dev-1/cmd", b'{"request_id": "r1", "target_temp": 22}'),
             (f"{PREFIX}/dev-1/cmd/ack", b'{"request_id": "r1", "ok": true, "target_temp": 22}')]
    for offset in (0, 4):  # the same messages again, as a redelivery after a crash brings them
        records = _records(items, offset=offset)
        sink.write(parse_records(records, PREFIX), records, {})
    sink.close()
    assert reader.query("SELECT event_id, event FROM alert_events ORDER BY event_id").rows() == [
        ("e1", "started"), ("e2", "silenced")]
    assert reader.query("SELECT request_id, ok, acked_at IS NOT NULL AS acked FROM commands").rows() == [
        ("r1", True, True)]


def test_the_maintenance_timer_runs_maintain_every_interval(lake_settings: Settings) -> None:
    from thermolog.lake_maintain import MaintenanceTimer

    _write_in_small_flushes(lake_settings, _readings(random.Random(19), 300), 100)
    now = [1000.0]
    settings = lake_settings.model_copy(update={"lake_maintain_interval_h": 1.0})
    timer = MaintenanceTimer(settings, clock=lambda: now[0])
    assert timer.tick() is None  # not due before one interval
    now[0] += 3600
    figures = timer.tick()
    assert figures is not None and figures.telemetry_rows == reader.query("SELECT count(*) AS n FROM telemetry")["n"][0]
    assert timer.tick() is None  # the next run is one interval later
    off = MaintenanceTimer(settings.model_copy(update={"lake_maintain_interval_h": 0}), clock=lambda: now[0])
    now[0] += 10 * 3600
    assert off.tick() is None
