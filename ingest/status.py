"""Ingest health: journal lag, message counts and rates, the worker's last flush, MQTT connection, devices.

``collect_status`` reads through ``thermolog.queries`` (read-only, never holding the file) plus the journal
directory, so it works while the worker runs and while it is down. ``thermolog status`` prints it; the app's
Health page calls ``collect_status`` too.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.journal import START, Position, measure_lag
from ingest.sinks.lake import worker_id
from thermolog import queries
from thermolog.reader import DatabaseNotReady, query
from thermolog.settings import Settings, get_settings
from thermolog.units import format_bytes

DESCRIPTION = """\
Show what the ingest worker has done: messages stored and rejected, rates over the last 1 and 5 minutes (by
arrival time), how much of the journal is not yet in the database (lag), when the worker last flushed, whether it
is connected to MQTT, and each device's newest reading and online/offline status. Times are UTC. Reads the
database read-only, so it is safe to run while the worker is running.
"""

STALE_FLUSH_S = 90.0
"""An idle worker still records a heartbeat every 30 s; older than this, it is probably not running."""


@dataclass(frozen=True)
class DeviceHealth:
    """One device as ingest sees it."""

    device_id: str
    last_seen: datetime | None
    """Timestamp of its newest reading."""
    status: str | None
    """``online`` / ``offline`` (last will), or None when it never sent a status."""
    status_since: datetime | None


@dataclass(frozen=True)
class IngestStatus:
    """Everything ``thermolog status`` shows."""

    checked_at: datetime
    db_path: str
    journal_dir: str
    database_ready: bool
    problem: str | None = None
    journal_lag_records: int = 0
    journal_lag_bytes: int = 0
    journal_segments: int = 0
    committed_position: str | None = None
    messages_total: int = 0
    rejected_total: int = 0
    duplicates_total: int = 0
    telemetry_rate_1m: float = 0.0
    telemetry_rate_5m: float = 0.0
    rejected_rate_1m: float = 0.0
    last_flush_at: datetime | None = None
    mqtt_connected: bool | None = None
    mqtt_broker: str | None = None
    journal_write_failed: bool = False
    """Receiving is paused because the journal could not take a message (disk full); it resumes by itself."""
    mqtt_sessions_lost: int = 0
    """Reconnects on which the broker had no session for ingest (messages queued for it may be gone)."""
    mqtt_session_lost_at: datetime | None = None
    raw_retention_days: int = 0
    """``THERMOLOG_RAW_RETENTION_DAYS`` (0: raw readings are kept for ever)."""
    retention_deleted_total: int = 0
    retention_cutoff: datetime | None = None
    """The cutoff of the latest retention round: raw readings stamped before it were deleted."""
    devices: list[DeviceHealth] = field(default_factory=list)

    @property
    def worker_running(self) -> bool:
        """Whether the worker flushed (or sent its heartbeat) recently."""
        return self.last_flush_at is not None and \
            (self.checked_at - self.last_flush_at).total_seconds() <= STALE_FLUSH_S

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (times as ISO-8601 UTC)."""
        data = asdict(self)
        data["worker_running"] = self.worker_running
        return json.loads(json.dumps(data, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))


def _int(state: dict[str, str], key: str) -> int:
    try:
        return int(state.get(key, 0))
    except ValueError:
        return 0


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


def _utc(value: Any) -> datetime | None:
    return value.astimezone(UTC) if isinstance(value, datetime) else None


def _own_position(settings: Settings) -> str | None:
    """With the lake, the journal position this machine's worker committed (each worker has its own journal)."""
    frame = query("SELECT arg_max(value, updated_at) AS value FROM worker_state WHERE worker = ? "
                  "AND key = 'journal_position'", [worker_id(settings)])
    return frame["value"][0] if frame.height else None


def collect_status(settings: Settings | None = None) -> IngestStatus:
    """Gather the ingest status from the database (read-only) and the journal directory."""
    settings = settings or get_settings()
    db = settings.db_path
    now = datetime.now(UTC)
    base = {"checked_at": now, "db_path": str(db), "journal_dir": str(settings.journal_dir)}
    try:
        state = queries.ingest_state(db)
        rate_1m = queries.message_rates(60.0, db)
        rate_5m = queries.message_rates(300.0, db)
        latest = queries.latest_state(db)
    except DatabaseNotReady as exc:
        lag = measure_lag(Path(settings.journal_dir), START)
        return IngestStatus(**base, database_ready=False, problem=str(exc), journal_lag_records=lag.records,
                            journal_lag_bytes=lag.bytes, journal_segments=lag.segments)
    position = _own_position(settings) if settings.lake_catalog else state.get("journal_position")
    lag = measure_lag(Path(settings.journal_dir), Position.decode(position) if position else START)
    devices = [
        DeviceHealth(row["device_id"], _utc(row["last_seen"]), row["status"], _utc(row["status_ts"]))
        for row in latest.iter_rows(named=True)
    ]
    connected = state.get("mqtt_connected")
    return IngestStatus(
        **base,
        database_ready=True,
        journal_lag_records=lag.records,
        journal_lag_bytes=lag.bytes,
        journal_segments=lag.segments,
        committed_position=position,
        messages_total=_int(state, "messages_total"),
        rejected_total=_int(state, "rejected_total"),
        duplicates_total=_int(state, "duplicates_total"),
        telemetry_rate_1m=rate_1m["telemetry_per_s"],
        telemetry_rate_5m=rate_5m["telemetry_per_s"],
        rejected_rate_1m=rate_1m["rejected_per_s"],
        last_flush_at=_time(state.get("last_flush_at")),
        mqtt_connected=None if connected is None else connected == "true",
        mqtt_broker=state.get("mqtt_broker"),
        journal_write_failed=state.get("journal_write_failed") == "true",
        mqtt_sessions_lost=_int(state, "mqtt_sessions_lost"),
        mqtt_session_lost_at=_time(state.get("mqtt_session_lost_at")),
        raw_retention_days=settings.raw_retention_days,
        retention_deleted_total=_int(state, "retention_deleted_total"),
        retention_cutoff=_time(state.get("retention_cutoff")),
        devices=devices,
    )


# --- formatting ------------------------------------------------------------------------------------------------
def _ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "never"
    seconds = max((now - then).total_seconds(), 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def _when(then: datetime | None) -> str:
    return then.strftime("%Y-%m-%d %H:%M:%S UTC") if then else "-"


def _retention(status: IngestStatus) -> str:
    if status.raw_retention_days <= 0:
        kept = "raw readings kept for ever (THERMOLOG_RAW_RETENTION_DAYS=0)"
        if status.retention_deleted_total:
            kept += f"; {status.retention_deleted_total:,} deleted earlier"
        return kept
    text = (f"raw readings older than {status.raw_retention_days} days are deleted (rollups kept); "
            f"{status.retention_deleted_total:,} deleted so far")
    if status.retention_cutoff is not None:
        text += f", everything before {_when(status.retention_cutoff)}"
    return text


def format_status(status: IngestStatus) -> str:
    """The human-readable report ``thermolog status`` prints."""
    now = status.checked_at
    lines = [f"thermolog ingest status at {_when(now)}",
             f"  database     {status.db_path}"]
    lag = (f"{status.journal_lag_records:,} records ({format_bytes(status.journal_lag_bytes)}) not yet in the "
           f"database, {status.journal_segments} segment(s)")
    lines.append(f"  journal      {status.journal_dir}: {lag}")
    if not status.database_ready:
        lines.append(f"  problem      {status.problem}")
        return "\n".join(lines) + "\n"
    running = "running" if status.worker_running else "NOT running (no flush or heartbeat recently)"
    last = f"{_when(status.last_flush_at)} ({_ago(status.last_flush_at, now)})"
    lines.append(f"  worker       {running}; last flush {last}")
    if status.mqtt_connected is None:
        mqtt = "unknown (no MQTT source has run)"
    elif not status.worker_running:
        mqtt = f"last known {'connected' if status.mqtt_connected else 'disconnected'}"
    else:
        mqtt = "connected" if status.mqtt_connected else "DISCONNECTED (reconnecting)"
    lines.append(f"  MQTT         {mqtt}{f' to {status.mqtt_broker}' if status.mqtt_broker else ''}")
    if status.journal_write_failed and status.worker_running:
        lines.append("  PAUSED       the journal's disk is full: nothing is acknowledged and the broker keeps the "
                     "messages; free space in the journal directory and receiving resumes by itself")
    if status.mqtt_sessions_lost:
        lines.append(f"  SESSION LOST {status.mqtt_sessions_lost:,} time(s), last {_when(status.mqtt_session_lost_at)}:"
                     " on reconnecting, the broker had no session for ingest, so messages queued while it was away "
                     "may be lost (another client using ingest's client id? broker restarted without persistence?)")
    lines.append(f"  messages     {status.messages_total:,} stored or rejected in total; "
                 f"{status.rejected_total:,} rejected; {status.duplicates_total:,} repeated readings dropped")
    lines.append(f"  retention    {_retention(status)}")
    lines.append(f"  rates        telemetry {status.telemetry_rate_1m:.2f} msg/s (last 1 min), "
                 f"{status.telemetry_rate_5m:.2f} msg/s (last 5 min); rejected {status.rejected_rate_1m:.2f} "
                 "msg/s (last 1 min)")
    lines.append(f"devices ({len(status.devices)})")
    if status.devices:
        width = max(len("device"), *(len(d.device_id) for d in status.devices))
        lines.append(f"  {'device':<{width}}  {'status':<8}  {'newest reading':<23}  {'':>14}")
        for device in status.devices:
            lines.append(f"  {device.device_id:<{width}}  {device.status or '-':<8}  {_when(device.last_seen):<23}  "
                         f"{_ago(device.last_seen, now) if device.last_seen else '':>14}")
    return "\n".join(lines) + "\n"


# --- CLI ---------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``thermolog status``."""
    parser.add_argument("--db", type=Path, metavar="PATH", help="DuckDB file (default: THERMOLOG_DB_PATH)")
    parser.add_argument("--journal-dir", type=Path, metavar="DIR",
                        help="journal directory (default: THERMOLOG_JOURNAL_DIR)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    """Print the status; exit 1 when the database is not there yet."""
    overrides: dict[str, Any] = {}
    if args.db is not None:
        overrides["db_path"] = args.db
    if args.journal_dir is not None:
        overrides["journal_dir"] = args.journal_dir
    settings = Settings(**overrides) if overrides else get_settings()
    status = collect_status(settings)
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        print(format_status(status), end="")
    return 0 if status.database_ready else 1
