"""Setting and refreshing schedules: the program goes to the ingest worker (``schedule``: stored and audited,
who and when), its change points to the device (``schedule/points``, retained), and ``refresh_schedules``
re-sends every device's points so they never run out. The app, the CLI and the automation process call these;
only the ingest worker writes the database."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from thermolog import contract
from thermolog.commands.model import InvalidCommand, new_request_id, validate_setpoint
from thermolog.mqttclient import connect, make_client
from thermolog.reader import query
from thermolog.schedule import Program, ScheduleError, expand, parse_program
from thermolog.settings import Settings, get_settings

log = logging.getLogger(__name__)
PUBLISH_TIMEOUT_S = 10.0


def check_target(settings: Settings) -> Any:
    """A target check with the configured setpoint range and step, for ``parse_program``."""
    def check(value: object) -> float:
        try:
            return validate_setpoint(value, settings)
        except InvalidCommand as exc:
            raise ValueError(str(exc)) from None
    return check


def validate(data: Any, settings: Settings, now: datetime | None = None) -> Program:
    """Parse a program as it will be stored: the display time zone by default, targets within the setpoint
    limits, overrides without a start starting ``now``."""
    return parse_program(data, settings.display_timezone, check_target(settings), now or datetime.now(UTC))


def points_payload(program: Program, now: datetime) -> bytes:
    """The retained ``schedule/points`` payload for ``program`` from ``now``."""
    points = [(int(p.at.timestamp()), p.target) for p in expand(program, now)]
    return contract.dumps(contract.SchedulePoints(issued_at=now, points=points))


def _publish(client: mqtt.Client, topic: str, payload: bytes, kind: str) -> None:
    info = client.publish(topic, payload, qos=contract.QOS[kind], retain=contract.RETAIN[kind])
    info.wait_for_publish(PUBLISH_TIMEOUT_S)
    if not info.is_published():
        raise ConnectionError(f"the broker did not acknowledge {topic} within {PUBLISH_TIMEOUT_S:g} s")


def _client(settings: Settings, purpose: str) -> mqtt.Client:
    client = make_client(f"thermolog-{purpose}-{new_request_id()[:12]}", settings)
    connect(client, settings)
    return client


def _close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def set_schedule(device_id: str, data: Any, issued_by: str | None, settings: Settings | None = None,
                 now: datetime | None = None) -> Program:
    """Validate and publish a device's new program (audit + storage through ingest) and its change points.

    Raises ScheduleError for a bad program or device id, ConnectionError when the broker is unreachable.
    """
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    try:
        contract.check_device_id(device_id)
    except contract.ContractError as exc:
        raise ScheduleError(exc.reason) from None
    program = validate(data, settings, now)
    change = contract.ScheduleChange(request_id=new_request_id(), issued_by=issued_by, program=program.raw)
    client = _client(settings, "schedule")
    try:
        _publish(client, contract.topic(device_id, contract.SCHEDULE, settings.topic_prefix),
                 contract.dumps(change), contract.SCHEDULE)
        _publish(client, contract.topic(device_id, contract.SCHEDULE_POINTS, settings.topic_prefix),
                 points_payload(program, now), contract.SCHEDULE_POINTS)
    finally:
        _close(client)
    log.info("schedule of %s set by %s: %d slot(s), %d override(s)", device_id, issued_by or "unknown",
             len(program.slots), len(program.overrides),
             extra={"event": "schedule_set", "device_id": device_id, "issued_by": issued_by})
    return program


def current_programs(db_path: Path | str | None = None) -> dict[str, dict[str, Any]]:
    """Each device's newest program as stored by ingest: ``{device_id: {program, changed_at, issued_by}}``."""
    frame = query(
        """SELECT device_id, arg_max(program, changed_at) AS program, max(changed_at) AS changed_at,
                  arg_max(issued_by, changed_at) AS issued_by
           FROM schedules GROUP BY device_id ORDER BY device_id""", None, db_path)
    return {row["device_id"]: {"program": orjson.loads(row["program"]), "changed_at": row["changed_at"],
                               "issued_by": row["issued_by"]} for row in frame.iter_rows(named=True)}


def schedule_history(device_id: str | None = None, limit: int = 50, db_path: Path | str | None = None):  # noqa: ANN201
    """Newest schedule changes first (changed_at, device_id, issued_by, program) as a Polars frame."""
    where, params = ("WHERE device_id = ?", [device_id]) if device_id else ("", [])
    return query(f"SELECT changed_at, device_id, issued_by, program FROM schedules {where} "
                 "ORDER BY changed_at DESC LIMIT ?", [*params, limit], db_path)


def refresh_schedules(settings: Settings | None = None, now: datetime | None = None,
                      db_path: Path | str | None = None) -> int:
    """Re-publish every stored program's change points from ``now`` (call it periodically, e.g. hourly: the
    devices hold ``HORIZON_DAYS`` days). Returns how many devices were refreshed; a program that no longer
    validates is logged and skipped."""
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    programs = current_programs(db_path or settings.db_path)
    if not programs:
        return 0
    client = _client(settings, "schedule-refresh")
    sent = 0
    try:
        for device_id, stored in programs.items():
            try:
                program = parse_program(stored["program"], settings.display_timezone, float, now)
            except ScheduleError as exc:
                log.warning("schedule of %s not refreshed: %s", device_id, exc)
                continue
            _publish(client, contract.topic(device_id, contract.SCHEDULE_POINTS, settings.topic_prefix),
                     points_payload(program, now), contract.SCHEDULE_POINTS)
            sent += 1
    finally:
        _close(client)
    return sent
