"""Reading the alert history (``alert_events``, written by the ingest worker): the Health page's table, the
silences in force and the episodes a previous automation run left open."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from thermolog.contract import ALERT_CLEARED, ALERT_SILENCED, ALERT_STARTED
from thermolog.reader import query

DbPath = Path | str | None
HISTORY_COLUMNS = ("ts", "device_id", "rule", "event", "message", "delivered", "failed", "note", "actor", "until")


def _query(sql: str, params: list[object], db_path: DbPath) -> pl.DataFrame | None:
    try:
        return query(sql, params, db_path)
    except duckdb.CatalogException:  # a database the ingest worker has not upgraded yet: no history
        return None


def recent(limit: int = 100, db_path: DbPath = None) -> pl.DataFrame:
    """The newest ``limit`` events, newest first (columns ``HISTORY_COLUMNS``)."""
    frame = _query(f"SELECT {', '.join(HISTORY_COLUMNS)} FROM alert_events ORDER BY ts DESC, received_at DESC "
                   "LIMIT ?", [limit], db_path)
    return frame if frame is not None else pl.DataFrame(schema={c: pl.Utf8 for c in HISTORY_COLUMNS})


def silences(now: datetime | None = None, db_path: DbPath = None) -> dict[tuple[str, str], datetime]:
    """(device_id, rule or ``*``) -> the latest end of a silence still in force at ``now``."""
    frame = _query("SELECT device_id, rule, max(until) AS until FROM alert_events WHERE event = ? AND until > ? "
                   "GROUP BY ALL", [ALERT_SILENCED, now or datetime.now(UTC)], db_path)
    if frame is None:
        return {}
    return {(row["device_id"], row["rule"]): row["until"] for row in frame.iter_rows(named=True)}


def open_episodes(db_path: DbPath = None) -> list[dict[str, object]]:
    """Per (device, rule) whose newest started/cleared event is ``started``: when, the message and whether any
    start event of it was delivered somewhere (``notified``)."""
    frame = _query(
        """
        WITH last_clear AS (
            SELECT device_id, rule, max(ts) AS cleared FROM alert_events WHERE event = ? GROUP BY ALL
        )
        SELECT e.device_id, e.rule, min(e.ts) AS started_at, arg_max(e.message, e.ts) AS message,
               bool_or(len(e.delivered) > 0) AS notified
        FROM alert_events e LEFT JOIN last_clear c USING (device_id, rule)
        WHERE e.event = ? AND (c.cleared IS NULL OR e.ts > c.cleared)
        GROUP BY ALL
        """, [ALERT_CLEARED, ALERT_STARTED], db_path)
    return [] if frame is None else list(frame.iter_rows(named=True))
