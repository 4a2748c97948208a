"""Turn journal records into table-shaped batches, validating each against ``thermolog.contract``.

Validation happens here, in the flusher, not in the MQTT callback: receiving only journals raw bytes, so it keeps
pace with the broker. A record that breaks the contract becomes a ``rejected`` row with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ingest.journal import Record
from thermolog import contract, profiles
from thermolog.contract import ContractError
from thermolog.profiles import ProfileSet, TopicMatch
from thermolog.schedule import ScheduleError, parse_program

REASON_MAX_CHARS = 500
"""Longest rejection reason stored (a payload with thousands of bad keys would otherwise give a reason of
hundreds of kilobytes per message)."""
META_REJECTED = "rejected"
"""Record meta key under which a source stores why it refused a message on receipt (an untrusted sender, say):
the message is journalled all the same and stored in ``rejected`` with that reason, so nothing vanishes."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_us(dt: datetime) -> int:
    """Microseconds since the epoch, exact (no float rounding)."""
    return (dt - _EPOCH) // _MICROSECOND


def from_epoch_us(us: int) -> datetime:
    """The UTC time ``us`` microseconds after the epoch (the inverse of :func:`epoch_us`)."""
    return _EPOCH + us * _MICROSECOND


def _printable_topic(topic: str) -> str:
    # Journal topics may carry undecodable bytes as surrogates; DuckDB needs valid UTF-8.
    return topic.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


@dataclass
class Batch:
    """Parsed records, column-wise per target table (times as epoch microseconds, UTC)."""

    telemetry: dict[str, list[Any]] = field(default_factory=lambda: {
        "device_id": [], "ts": [], "temperature": [], "humidity": [], "target_temp": [], "heating": [],
        "received_at": []})
    system: dict[str, list[Any]] = field(default_factory=lambda: {
        "host": [], "ts": [], "cpu_usage": [], "memory_usage": [], "disk_usage": [], "net_bytes_sent": [],
        "net_bytes_recv": [], "received_at": []})
    status: list[tuple[str, int, str]] = field(default_factory=list)
    """(device_id, received_at, status) in arrival order."""
    state: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    schedules: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    rejected: dict[str, list[Any]] = field(default_factory=lambda: {
        "received_at": [], "topic": [], "reason": [], "payload": [], "payload_size": [], "source": []})
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    """device_id -> {kind, name, address, details (JSON text or None), seen_at} for devices of a profile."""
    ignored: int = 0
    """Messages a profile knows carry no readings (Zigbee2MQTT's other devices, its bridge topics)."""
    telemetry_records: list[int] = field(default_factory=list)
    """For each telemetry row, the index of its record in the flushed list (to reject it later if it conflicts)."""
    records: int = 0
    max_ahead_s: float | None = None
    """Device clock policy (``thermolog.contract.check_clock``); None skips it."""
    oldest_us: int | None = None
    """Readings stamped before this (epoch µs) are rejected: older than the raw retention (None: no limit)."""
    rejected_max_bytes: int = 16 * 1024
    """Rejected payloads are stored cut to this many bytes."""

    @property
    def accepted(self) -> int:
        """Records that passed validation."""
        return self.records - len(self.rejected["topic"])


_CLOCK_FLOOR_US = (contract.CLOCK_FLOOR - _EPOCH) // _MICROSECOND


def _check_clock(batch: Batch, timestamp: datetime, received_us: int, ts_us: int | None = None) -> None:
    max_ahead_s = batch.max_ahead_s
    if max_ahead_s is None:
        return
    # In whole microseconds a reading is plainly within the policy (a millisecond of margin keeps float rounding
    # out of it); otherwise the contract decides and says why.
    if ts_us is not None and ts_us >= _CLOCK_FLOOR_US and (
            max_ahead_s <= 0 or ts_us - received_us < max_ahead_s * 1_000_000 - 1000):
        return
    contract.check_clock(timestamp, from_epoch_us(received_us), max_ahead_s)


def _add_telemetry(batch: Batch, device_id: str, payload: bytes, received_us: int) -> None:
    plain = _plain_reading(payload, device_id)
    if plain is None:  # anything unusual: the model accepts it or says why not
        reading = contract.parse_telemetry(payload, topic_device_id=device_id)
        plain = (reading.timestamp, reading.temperature, reading.humidity, reading.target_temp,
                 reading.heating == contract.HEATING_ON)
    _append_values(batch, device_id, *plain, received_us)


_READING_KEYS = frozenset(contract.Telemetry.model_fields)
_READING_KEYS_DRY = _READING_KEYS - {"humidity"}
_NUMBER = (int, float)  # compared with type(): a bool is not a number here
_HEATING = (contract.HEATING_ON, contract.HEATING_OFF)
PlainReading = tuple[datetime, float, float | None, float, bool]
"""timestamp (UTC), temperature, humidity, target_temp, heating on."""


def _plain_reading(payload: bytes, device_id: str) -> PlainReading | None:
    """A telemetry payload in its usual form (a ``Z`` timestamp, every field there and in range) read without the
    pydantic model, which costs most of a flush; None for anything else, which ``contract.parse_telemetry`` then
    judges. Whatever this accepts, the model accepts with the same values."""
    if len(payload) > contract.MAX_PAYLOAD_BYTES:
        return None
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or (data.keys() != _READING_KEYS and data.keys() != _READING_KEYS_DRY):
        return None
    temperature, target, humidity = data["temperature"], data["target_temp"], data.get("humidity")
    stamp = data["timestamp"]
    low, high = contract.TEMPERATURE_MIN_C, contract.TEMPERATURE_MAX_C
    if not (type(temperature) in _NUMBER and low <= temperature <= high and type(target) in _NUMBER
            and low <= target <= high
            and (humidity is None or (type(humidity) in _NUMBER
                                      and contract.PERCENT_MIN <= humidity <= contract.PERCENT_MAX))
            and data["device_id"] == device_id and data["heating"] in _HEATING and type(stamp) is str
            and stamp.endswith("Z")):
        return None
    try:
        timestamp = datetime.fromisoformat(stamp[:-1] + "+00:00")
    except ValueError:
        return None
    if timestamp.tzinfo is not UTC:  # a date alone parses naive, whatever the suffix
        return None
    return (timestamp, float(temperature), None if humidity is None else float(humidity), float(target),
            data["heating"] == contract.HEATING_ON)


def _append_reading(batch: Batch, reading: contract.Telemetry, received_us: int) -> None:
    """A validated reading into the batch, held to the clock policy and the raw retention."""
    _append_values(batch, reading.device_id, reading.timestamp, reading.temperature, reading.humidity,
                   reading.target_temp, reading.heating == contract.HEATING_ON, received_us)


def _append_values(batch: Batch, device_id: str, timestamp: datetime, temperature: float, humidity: float | None,
                   target_temp: float, heating: bool, received_us: int) -> None:
    ts_us = epoch_us(timestamp)
    _check_clock(batch, timestamp, received_us, ts_us)
    if batch.oldest_us is not None and ts_us < batch.oldest_us:
        raise ContractError(f"timestamp {contract.format_timestamp(timestamp)} is older than the raw "
                            "retention (THERMOLOG_RAW_RETENTION_DAYS): it would be deleted at once")
    cols = batch.telemetry
    cols["device_id"].append(device_id)
    cols["ts"].append(ts_us)
    cols["temperature"].append(temperature)
    cols["humidity"].append(humidity)
    cols["target_temp"].append(target_temp)
    cols["heating"].append(heating)
    cols["received_at"].append(received_us)


def _add_system(batch: Batch, host: str, payload: bytes, received_us: int) -> None:
    metrics = contract.parse_system(payload)
    _check_clock(batch, metrics.timestamp, received_us)
    cols = batch.system
    cols["host"].append(host)
    cols["ts"].append(epoch_us(metrics.timestamp))
    cols["cpu_usage"].append(metrics.cpu_usage)
    cols["memory_usage"].append(metrics.memory_usage)
    cols["disk_usage"].append(metrics.disk_usage)
    cols["net_bytes_sent"].append(metrics.net_bytes_sent)
    cols["net_bytes_recv"].append(metrics.net_bytes_recv)
    cols["received_at"].append(received_us)


def _add_state(batch: Batch, device_id: str, payload: bytes, received_us: int) -> None:
    state = contract.parse_state(payload)
    batch.state.append({
        "device_id": device_id, "updated_at": received_us, "target_temp": state.target_temp, "mode": state.mode,
        "hysteresis": state.hysteresis, "firmware": state.firmware,
        "raw": payload.decode("utf-8", errors="replace"),
    })


HOME_ASSISTANT_PREFIX = "ha-"
HOME_ASSISTANT = "home-assistant"
"""``issued_by`` recorded for a command without one whose request id starts with ``ha-`` (Home Assistant's
discovery templates, ``firmware/ha.py``, send no ``issued_by``)."""


def _add_command(batch: Batch, device_id: str, payload: bytes, received_us: int) -> None:
    command = contract.parse_command(payload)
    issued_by = command.issued_by
    if issued_by is None and command.request_id.startswith(HOME_ASSISTANT_PREFIX):
        issued_by = HOME_ASSISTANT
    batch.commands.append({
        "request_id": command.request_id, "device_id": device_id, "sent_at": received_us,
        "issued_by": issued_by, "target_temp": command.target_temp, "mode": command.mode,
    })


def _add_audit(batch: Batch, device_id: str, payload: bytes, received_us: int) -> None:
    # A command sent in a device's own format: the sent record, and the outcome once the sender knows it.
    audit = contract.parse_audit(payload)
    batch.commands.append({
        "request_id": audit.request_id, "device_id": device_id, "sent_at": received_us,
        "issued_by": audit.issued_by, "target_temp": audit.target_temp, "mode": audit.mode,
    })
    if audit.ok is not None:
        batch.acks.append({
            "request_id": audit.request_id, "device_id": device_id, "acked_at": received_us, "ok": audit.ok,
            "error": audit.error,
        })


def _add_ack(batch: Batch, device_id: str, payload: bytes, received_us: int) -> None:
    ack = contract.parse_ack(payload)
    batch.acks.append({
        "request_id": ack.request_id, "device_id": device_id, "acked_at": received_us, "ok": ack.ok,
        "error": ack.error,
    })


def _add_refusal(batch: Batch, device_id: str, payload: bytes, received_us: int) -> None:
    # Recorded like a command the device answered ok:false, so the `commands` audit shows it with its reason.
    refusal = contract.parse_refusal(payload)
    batch.commands.append({
        "request_id": refusal.request_id, "device_id": device_id, "sent_at": received_us,
        "issued_by": refusal.issued_by, "target_temp": refusal.target_temp, "mode": refusal.mode,
    })
    batch.acks.append({
        "request_id": refusal.request_id, "device_id": device_id, "acked_at": received_us, "ok": False,
        "error": f"refused by the app: {refusal.error}",
    })


def _add_schedule(batch: Batch, device_id: str, payload: bytes, received_us: int) -> None:
    change = contract.parse_schedule(payload)
    try:  # the sender resolved zone and override starts; here only the format is held to
        parse_program(change.program, "UTC")
    except ScheduleError as exc:
        raise ContractError(f"program: {exc}") from None
    batch.schedules.append({
        "device_id": device_id, "changed_at": received_us, "request_id": change.request_id,
        "issued_by": change.issued_by, "program": orjson.dumps(change.program).decode(),
    })


def _refuse_points(_batch: Batch, _device_id: str, _payload: bytes, _received_us: int) -> None:
    raise ContractError("schedule/points are for the device; the program is stored from `schedule`")


def _add_alert(batch: Batch, device_id: str, payload: bytes, received_us: int) -> None:
    event = contract.parse_alert_event(payload)
    batch.alerts.append({
        "event_id": event.event_id, "device_id": device_id, "rule": event.rule, "event": event.event,
        "ts": epoch_us(event.timestamp), "message": event.message, "delivered": list(event.delivered),
        "failed": list(event.failed), "note": event.note, "actor": event.by,
        "until": epoch_us(event.until) if event.until is not None else None, "received_at": received_us,
    })


def _add_status(batch: Batch, device_id: str, payload: bytes, received_us: int) -> None:
    batch.status.append((device_id, received_us, contract.parse_status(payload)))


_HANDLERS = {
    contract.TELEMETRY: _add_telemetry,
    contract.SYSTEM: _add_system,
    contract.STATE: _add_state,
    contract.CMD: _add_command,
    contract.CMD_ACK: _add_ack,
    contract.CMD_REFUSED: _add_refusal,
    contract.SCHEDULE: _add_schedule,
    contract.SCHEDULE_POINTS: _refuse_points,
    contract.ALERT: _add_alert,
    contract.CMD_AUDIT: _add_audit,
    contract.STATUS: _add_status,
}


def _see_device(batch: Batch, device_id: str, kind: str, name: str | None, address: str, seen_us: int,
                details: dict[str, Any] | None = None) -> None:
    row = batch.devices.get(device_id)
    if row is None:
        row = batch.devices[device_id] = {"device_id": device_id, "kind": kind, "name": name, "address": address,
                                          "details": None, "seen_at": seen_us}
    row["seen_at"] = max(row["seen_at"], seen_us)
    if details:
        merged = {**orjson.loads(row["details"]), **details} if row["details"] else details
        row["details"] = orjson.dumps(merged).decode()


def _know(batch: Batch, device_profiles: ProfileSet, device_id: str) -> None:
    """Mark a device as a thermostat; an availability it sent before that is recorded now."""
    if device_id not in device_profiles.known:
        device_profiles.known.add(device_id)
        held = device_profiles.pending.pop(device_id, None)
        if held is not None:
            batch.status.append((device_id, *held))


def _add_profile_message(batch: Batch, device_profiles: ProfileSet, match: TopicMatch, payload: bytes,
                         received_us: int) -> None:
    """A message on a device profile's topics: a reading, availability, a device list, or known other traffic."""
    profile = match.profile
    if match.role == profiles.ROLE_IGNORED:
        batch.ignored += 1
        return
    if match.role == profiles.ROLE_REGISTRY:
        for entry in profiles.parse_zigbee2mqtt_devices(profile, payload):
            _see_device(batch, entry.device_id, profile.name, entry.name, entry.name, received_us,
                        {k: v for k, v in entry.details.items() if v is not None})
            _know(batch, device_profiles, entry.device_id)
        return
    name = match.address if "{name}" in profile.state_topic else None
    if match.role == profiles.ROLE_AVAILABILITY:
        device_id = match.device_id
        status = profiles.parse_availability(profile, payload)
        if device_id in device_profiles.known:
            batch.status.append((device_id, received_us, status))
        else:  # perhaps a lamp or a sensor: recorded once its device list entry or a reading says thermostat
            device_profiles.hold_availability(device_id, received_us, status)
            batch.ignored += 1
        return
    try:
        translated = profiles.translate(profile, match.address, payload, profiles.utc_from_us(received_us))
    except profiles.NotAThermostat:
        if profile.non_thermostat == "ignore":
            batch.ignored += 1
            return
        raise
    reading = translated.reading
    _append_reading(batch, reading, received_us)
    batch.state.append({
        "device_id": reading.device_id, "updated_at": received_us, "target_temp": reading.target_temp,
        "mode": translated.mode, "hysteresis": None, "firmware": None,
        "raw": payload.decode("utf-8", errors="replace"),
    })
    _see_device(batch, reading.device_id, profile.name, name, match.address, received_us,
                {"target_key": translated.target_key})
    _know(batch, device_profiles, reading.device_id)


def cap_reason(reason: str, limit: int = REASON_MAX_CHARS) -> str:
    """``reason`` cut to ``limit`` characters, saying how much was cut."""
    if len(reason) <= limit:
        return reason
    suffix = f" ... ({len(reason):,} characters in all)"
    return reason[:limit - len(suffix)] + suffix


def reject(batch: Batch, record: Record, reason: str, max_bytes: int) -> None:
    """Add ``record`` to the batch's rejected rows, its payload cut to ``max_bytes`` and its reason to
    ``REASON_MAX_CHARS``."""
    cols = batch.rejected
    cols["received_at"].append(record.received_ns // 1000)
    cols["topic"].append(_printable_topic(record.topic))
    cols["reason"].append(cap_reason(reason))
    cols["payload"].append(record.payload[:max_bytes])
    cols["payload_size"].append(len(record.payload))
    cols["source"].append(record.source)


def parse_records(records: list[Record], prefix: str = contract.DEFAULT_TOPIC_PREFIX,
                  rejected_max_bytes: int = 16 * 1024, max_ahead_s: float | None = None,
                  oldest_us: int | None = None, device_profiles: ProfileSet | None = None) -> Batch:
    """Validate every record and sort it into the batch; never raises for a bad record. A record its source
    refused (``META_REJECTED`` in its meta) is rejected with that reason.

    With ``max_ahead_s`` readings are also held to the device clock policy (``contract.check_clock``); with
    ``oldest_us`` readings stamped before it are rejected (the raw retention would delete them at once, and a
    rollup must not count a reading twice once its raw row is gone). Topics outside the contract are tried
    against ``device_profiles`` (``thermolog.profiles``) before being rejected.
    """
    batch = Batch(records=len(records), max_ahead_s=max_ahead_s, oldest_us=oldest_us,
                  rejected_max_bytes=rejected_max_bytes)
    topics: dict[str, tuple[str, str] | TopicMatch] = {}  # a batch repeats a few topics thousands of times
    readings = batch.telemetry["ts"]
    for index, record in enumerate(records):
        if record.meta and record.meta.get(META_REJECTED):
            reject(batch, record, str(record.meta[META_REJECTED]), rejected_max_bytes)
            continue
        try:
            parsed = topics.get(record.topic)
            if parsed is None:
                parsed = topics[record.topic] = _route(record.topic, prefix, device_profiles)
            if isinstance(parsed, TopicMatch):
                _add_profile_message(batch, device_profiles, parsed, record.payload, record.received_ns // 1000)
            else:
                device_id, kind = parsed
                _HANDLERS[kind](batch, device_id, record.payload, record.received_ns // 1000)
            if len(readings) > len(batch.telemetry_records):  # this record added a reading (native or profile)
                batch.telemetry_records.append(index)
        except ContractError as exc:
            reject(batch, record, exc.reason, rejected_max_bytes)
        except (ValueError, TypeError, UnicodeError) as exc:  # defensive: the contract should have said why
            reject(batch, record, f"{type(exc).__name__}: {exc}", rejected_max_bytes)
    return batch


def _route(topic: str, prefix: str, device_profiles: ProfileSet | None) -> tuple[str, str] | TopicMatch:
    """The contract's (device_id, kind) for a topic, else the matching profile role; ContractError when neither."""
    try:
        return contract.parse_topic(topic, prefix)
    except ContractError as exc:
        match = device_profiles.match(topic) if device_profiles is not None else None
        if match is None:
            names = ", ".join(p.name for p in device_profiles.profiles) if device_profiles else ""
            raise ContractError(f"{exc.reason}: no device profile matches it"
                                f"{f' (profiles: {names})' if names else ''}") from None
        if match.role == profiles.ROLE_STATE and "{id}" in match.profile.state_topic:
            match.device_id  # noqa: B018 - raises ContractError for an id outside the contract's pattern
        return match
