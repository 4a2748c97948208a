"""Helpers shared by the ingest tests: read the database, publish, forget broker sessions."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from tests import needs
from thermolog.reader import DatabaseNotReady, read_connection


def db_rows(db_path: Path | str, sql: str, params: list[Any] | None = None) -> list[tuple] | None:
    """Rows of a read-only query, or None while the database does not exist or stays locked."""
    try:
        with read_connection(db_path, retry_s=2.0) as con:
            return con.execute(sql, params or []).fetchall()
    except DatabaseNotReady:
        return None


def db_value(db_path: Path | str, sql: str, params: list[Any] | None = None) -> Any:
    """First column of the first row, or None."""
    rows = db_rows(db_path, sql, params)
    return rows[0][0] if rows else None


def mosquitto_pub(topic: str, payload: bytes, port: int = 1883, qos: int = 1, retain: bool = False) -> None:
    """Publish one message with the plain ``mosquitto_pub`` client (payload from stdin, any bytes)."""
    needs.require("broker", "mosquitto_pub")
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", str(qos), "-t", topic, "-s"]
    if retain:
        cmd.append("-r")
    subprocess.run(cmd, input=payload, check=True, timeout=10)


def telemetry(device_id: str, second: int, temperature: float = 20.0, heating: str = "OFF") -> bytes:
    """A valid telemetry payload whose timestamp is ``second`` seconds after 2025-07-04T00:00:00Z."""
    minutes, sec = divmod(second, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    ts = f"2025-07-{4 + days:02d}T{hours:02d}:{minutes:02d}:{sec:02d}Z"
    return (f'{{"temperature": {temperature}, "timestamp": "{ts}", "humidity": 40.5, "target_temp": 21, '
            f'"device_id": "{device_id}", "heating": "{heating}"}}').encode()


def forget_session(client_id: str, port: int = 1883) -> None:
    """Remove a persistent session from the broker (connect with clean_session, then disconnect)."""
    client = mqtt.Client(client_id=client_id, clean_session=True)
    try:
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.disconnect()
        client.loop_stop()
    except OSError:
        pass  # the broker is gone already: so is the session
