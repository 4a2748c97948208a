"""The MQTT contract: topics, QoS/retain, payload models and their validation.

Every part of thermolog (ingest, simulator, app, edge modules) speaks through this module; the firmware mirrors
its constants in ``firmware/contract.py`` and ``tests/firmware/test_contract.py`` compares the two.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_TOPIC_PREFIX = "thermostats"
EDGE_PREFIX = "edge"

DEVICE_ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
DEVICE_ID_RE = re.compile(rf"^{DEVICE_ID_PATTERN}$")

# Sub-topics below thermostats/{device_id}/ and their QoS / retain flags.
TELEMETRY = "telemetry"
STATUS = "status"
STATE = "state"
CMD = "cmd"
CMD_ACK = "cmd/ack"
CMD_REFUSED = "cmd/refused"
"""The app's audit record of a command it refused before sending (devices never see it; ingest records it)."""
ALERT = "alert"
"""Alert audit events (started, cleared, acknowledged, silenced) from ``thermolog automation`` and the app."""
CMD_AUDIT = "cmd/audit"
"""The app's audit record of a command it sent in a device's own format (a device profile without acks): once when
sent, once more with the outcome. Devices never see it; ingest records it in ``commands``."""
SCHEDULE = "schedule"
"""A weekly program someone set (app/CLI -> ingest): the audit record and the stored program."""
SCHEDULE_POINTS = "schedule/points"
"""The program expanded into the next days' change points in UTC (server -> device, retained, refreshed)."""
SYSTEM = "system"

QOS = {TELEMETRY: 1, STATUS: 1, STATE: 1, CMD: 1, CMD_ACK: 1, CMD_REFUSED: 1, CMD_AUDIT: 1, ALERT: 1, SCHEDULE: 1,
       SCHEDULE_POINTS: 1, SYSTEM: 0}
RETAIN = {TELEMETRY: False, STATUS: True, STATE: True, CMD: False, CMD_ACK: False, CMD_REFUSED: False,
          CMD_AUDIT: False, ALERT: False, SCHEDULE: False, SCHEDULE_POINTS: True, SYSTEM: False}
_DEVICE_KINDS = (TELEMETRY, STATUS, STATE, CMD, CMD_ACK, CMD_REFUSED, CMD_AUDIT, ALERT, SCHEDULE, SCHEDULE_POINTS)

# IoT Hub application properties the edge modules set on their messages and the Event Hubs ingest reads.
IOTHUB_PROP_DEVICE_ID = "device_id"
"""The thermostat a ``telemetry`` message is about (the connection's device id is the edge device's)."""
IOTHUB_PROP_HOST = "host"
"""The edge host a ``system`` message is about."""
IOTHUB_PROP_KIND = "message_kind"
"""``telemetry`` or ``system``: which payload model the message body follows."""

MODE_HEAT = "heat"
MODE_OFF = "off"
MODES = (MODE_HEAT, MODE_OFF)
"""Modes a command may set (Home Assistant's climate entity sends them as ``{"request_id": ..., "mode": ...}``)."""

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
HEATING_ON = "ON"
HEATING_OFF = "OFF"

MAX_PAYLOAD_BYTES = 64 * 1024
"""Payloads above this size are rejected before parsing (a reading is ~150 bytes)."""

CLOCK_FLOOR = datetime(2020, 1, 1, tzinfo=UTC)
"""Readings stamped before this come from a clock that was never set (an ESP32 boots at 2000-01-01)."""
DEFAULT_CLOCK_MAX_AHEAD_S = 3600.0


class ContractError(ValueError):
    """A topic or payload that breaks the contract; ``reason`` is short and human readable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def topic(device_id: str, kind: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """Topic for one device, e.g. ``topic("esp32c3-01", CMD_ACK)`` -> ``thermostats/esp32c3-01/cmd/ack``."""
    check_device_id(device_id)
    return f"{prefix}/{device_id}/{kind}"


def system_topic(host: str) -> str:
    """Topic the edge ``system_reader`` publishes host metrics on."""
    check_device_id(host)
    return f"{EDGE_PREFIX}/{host}/{SYSTEM}"


def subscriptions(prefix: str = DEFAULT_TOPIC_PREFIX) -> list[tuple[str, int]]:
    """Topic filters (with QoS) the ingest worker subscribes to."""
    return [
        (f"{prefix}/+/{TELEMETRY}", QOS[TELEMETRY]),
        (f"{prefix}/+/{STATUS}", QOS[STATUS]),
        (f"{prefix}/+/{STATE}", QOS[STATE]),
        (f"{prefix}/+/{CMD}", QOS[CMD]),
        (f"{prefix}/+/{CMD_ACK}", QOS[CMD_ACK]),
        (f"{prefix}/+/{CMD_REFUSED}", QOS[CMD_REFUSED]),
        (f"{prefix}/+/{ALERT}", QOS[ALERT]),
        (f"{prefix}/+/{CMD_AUDIT}", QOS[CMD_AUDIT]),
        (f"{prefix}/+/{SCHEDULE}", QOS[SCHEDULE]),
        (f"{EDGE_PREFIX}/+/{SYSTEM}", QOS[SYSTEM]),
    ]


def check_device_id(device_id: str) -> str:
    """Return ``device_id`` if it matches ``[A-Za-z0-9_-]{1,64}``, else raise ContractError."""
    # fullmatch: with match(), ``$`` would also accept a trailing newline ("dev-1\n").
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        shown = device_id[:80] if isinstance(device_id, str | bytes) else device_id
        raise ContractError(f"device_id {shown!r} must match {DEVICE_ID_PATTERN}")
    return device_id


def parse_topic(topic_name: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> tuple[str, str]:
    """Split a topic into ``(device_id, kind)``; kind is one of the sub-topic constants.

    ``edge/{host}/system`` yields ``(host, SYSTEM)``.
    """
    parts = topic_name.split("/")
    if len(parts) == 3 and parts[0] == EDGE_PREFIX and parts[2] == SYSTEM:
        return check_device_id(parts[1]), SYSTEM
    if len(parts) >= 3 and parts[0] == prefix:
        kind = "/".join(parts[2:])
        if kind in _DEVICE_KINDS:
            return check_device_id(parts[1]), kind
    raise ContractError(f"unknown topic {topic_name[:120]!r}")


def _parse_utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("timestamp is empty")
        try:
            dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError as exc:
            raise ValueError(f"timestamp {value!r} is not ISO-8601") from exc
    else:
        raise ValueError("timestamp must be an ISO-8601 string")
    if dt.tzinfo is None:
        raise ValueError("timestamp needs a time zone (use a trailing Z for UTC)")
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-14:00 is past year 9999 in UTC
        raise ValueError(f"timestamp {value!r} is out of range in UTC") from None




TEMPERATURE_MIN_C, TEMPERATURE_MAX_C = -60, 120
PERCENT_MIN, PERCENT_MAX = 0, 100
Temperature = Annotated[float, Field(ge=TEMPERATURE_MIN_C, le=TEMPERATURE_MAX_C, allow_inf_nan=False, description="°C")]
Percent = Annotated[float, Field(ge=PERCENT_MIN, le=PERCENT_MAX, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Telemetry(_Strict):
    """One reading from a thermostat, exactly as the seed's ESP32 sends it."""

    temperature: Temperature
    timestamp: datetime
    humidity: Percent | None = None
    target_temp: Temperature
    device_id: str
    heating: Literal["ON", "OFF"]

    _ts = field_validator("timestamp", mode="before")(_parse_utc)

    @field_validator("temperature", "target_temp", "humidity", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        # strict mode refuses ints for floats; the seed sends "target_temp": 25.
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        if isinstance(value, int):
            return float(value)
        return value

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        return check_device_id(value)


class SystemMetrics(_Strict):
    """Host metrics from the edge ``system_reader`` (percentages)."""

    timestamp: datetime
    cpu_usage: Percent
    memory_usage: Percent
    disk_usage: Percent
    net_bytes_sent: int | None = Field(default=None, ge=0)
    net_bytes_recv: int | None = Field(default=None, ge=0)

    _ts = field_validator("timestamp", mode="before")(_parse_utc)

    @field_validator("cpu_usage", "memory_usage", "disk_usage", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return float(value) if isinstance(value, int) else value


class DeviceState(BaseModel):
    """Retained settings a device reports; unknown keys are kept (newer firmware may add some)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    target_temp: float | None = None
    mode: str | None = None
    hysteresis: float | None = None
    firmware: str | None = None


def _optional_number(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return float(value) if isinstance(value, int) else value


class Command(_Strict):
    """A command to one device: a setpoint, a mode (``heat`` / ``off``), or both."""

    request_id: Annotated[str, Field(min_length=1, max_length=64)]
    target_temp: Annotated[float, Field(allow_inf_nan=False)] | None = None
    issued_by: Annotated[str, Field(max_length=256)] | None = None
    mode: Literal["heat", "off"] | None = None

    @model_validator(mode="after")
    def _something_to_do(self) -> Command:
        if self.target_temp is None and self.mode is None:
            raise ValueError("a command needs target_temp or mode")
        return self

    _number = field_validator("target_temp", mode="before")(_optional_number)


class ScheduleChange(_Strict):
    """A weekly program set for one device (``thermolog.schedule`` documents ``program``), for the audit."""

    request_id: Annotated[str, Field(min_length=1, max_length=64)]
    issued_by: Annotated[str, Field(max_length=256)] | None = None
    program: dict[str, Any]


class SchedulePoints(_Strict):
    """The change points a device follows: ``[unix_seconds, target_temp]`` pairs in time order, the first one
    the point in force when issued."""

    issued_at: datetime
    points: Annotated[list[tuple[int, Annotated[float, Field(allow_inf_nan=False)]]], Field(max_length=512)]

    _ts = field_validator("issued_at", mode="before")(_parse_utc)

    @field_validator("points", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        # strict mode refuses ints for floats and JSON has no tuples: [1764480600, 21] -> (1764480600, 21.0)
        if isinstance(value, list):
            return [tuple(float(v) if i == 1 and isinstance(v, int) and not isinstance(v, bool) else v
                          for i, v in enumerate(p)) if isinstance(p, list) else p for p in value]
        return value


class CommandAck(_Strict):
    """The device's answer to a command."""

    request_id: Annotated[str, Field(min_length=1, max_length=64)]
    ok: bool
    target_temp: float | None = None
    error: str | None = None
    mode: Literal["heat", "off"] | None = None

    @field_validator("target_temp", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class CommandRefusal(_Strict):
    """A command the app refused before it reached the bus (invalid or over the rate limit), for the audit."""

    request_id: Annotated[str, Field(min_length=1, max_length=64)]
    target_temp: Annotated[float, Field(allow_inf_nan=False)] | None = None
    issued_by: Annotated[str, Field(max_length=256)] | None = None
    error: Annotated[str, Field(min_length=1, max_length=500)]
    mode: Literal["heat", "off"] | None = None

    @field_validator("target_temp", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return float(value) if isinstance(value, int) else value


class CommandAudit(_Strict):
    """A command sent in a device's own format (``cmd/audit``): without ``ok`` when sent, with it once known."""

    request_id: Annotated[str, Field(min_length=1, max_length=64)]
    target_temp: Annotated[float, Field(allow_inf_nan=False)] | None = None
    mode: Literal["heat", "off"] | None = None
    issued_by: Annotated[str, Field(max_length=256)] | None = None
    kind: Annotated[str, Field(min_length=1, max_length=32)]
    ok: bool | None = None
    error: Annotated[str, Field(max_length=500)] | None = None

    _number = field_validator("target_temp", mode="before")(_optional_number)


MAX_REASON_ERRORS = 5
"""A reason names at most this many validation errors (a payload with thousands of unknown keys has as many)."""


ALERT_STARTED = "started"
ALERT_CLEARED = "cleared"
ALERT_ACKNOWLEDGED = "acknowledged"
ALERT_SILENCED = "silenced"
ALERT_EVENTS = (ALERT_STARTED, ALERT_CLEARED, ALERT_ACKNOWLEDGED, ALERT_SILENCED)

ShortText = Annotated[str, Field(min_length=1, max_length=256)]


class AlertEvent(_Strict):
    """One entry of an alert's history on ``thermostats/{device_id}/alert``.

    ``started``/``cleared`` come from ``thermolog automation`` with where the notice went (``delivered``: Apprise
    URLs with secrets masked; ``failed`` likewise; ``note`` says why nothing was sent, e.g. cool-down or silence).
    ``acknowledged``/``silenced`` come from the app with who (``by``); a silence lasts until ``until``.
    """

    event_id: Annotated[str, Field(min_length=1, max_length=64)]
    event: Literal["started", "cleared", "acknowledged", "silenced"]
    rule: Annotated[str, Field(min_length=1, max_length=64)]
    timestamp: datetime
    message: Annotated[str, Field(max_length=1000)] | None = None
    delivered: Annotated[list[ShortText], Field(max_length=32)] = []
    failed: Annotated[list[ShortText], Field(max_length=32)] = []
    note: Annotated[str, Field(max_length=500)] | None = None
    by: Annotated[str, Field(max_length=256)] | None = None
    until: datetime | None = None

    _ts = field_validator("timestamp", "until", mode="before")(
        lambda value: None if value is None else _parse_utc(value))


def describe_errors(exc: ValidationError) -> str:
    """A pydantic validation error as one line: ``field: message; ...`` (at most ``MAX_REASON_ERRORS``)."""
    errors = exc.errors(include_url=False)
    parts = []
    for err in errors[:MAX_REASON_ERRORS]:
        loc = ".".join(str(p) for p in err["loc"])[:80] or "payload"
        parts.append(f"{loc}: {err['msg'][:200]}")
    if len(errors) > MAX_REASON_ERRORS:
        parts.append(f"and {len(errors) - MAX_REASON_ERRORS:,} more errors")
    return "; ".join(parts)


def load_json(payload: bytes) -> Any:
    """Decode a JSON payload, raising ContractError with a reason for size, encoding or syntax problems."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"not valid JSON: {exc}") from None


def _model(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise ContractError(f"payload must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ContractError(describe_errors(exc)) from None


def parse_telemetry(payload: bytes, topic_device_id: str | None = None) -> Telemetry:
    """Validate a telemetry payload; the payload's device_id must equal the topic's when given."""
    reading = _model(Telemetry, load_json(payload))
    if topic_device_id is not None and reading.device_id != topic_device_id:
        raise ContractError(
            f"device_id {reading.device_id!r} in payload does not match {topic_device_id!r} in topic"
        )
    return reading


def parse_system(payload: bytes) -> SystemMetrics:
    """Validate an ``edge/{host}/system`` payload."""
    return _model(SystemMetrics, load_json(payload))


def parse_state(payload: bytes) -> DeviceState:
    """Validate a retained ``state`` payload."""
    return _model(DeviceState, load_json(payload))


def parse_command(payload: bytes) -> Command:
    """Validate a ``cmd`` payload (range checks are the caller's: see ``thermolog.commands``)."""
    return _model(Command, load_json(payload))


def parse_schedule(payload: bytes) -> ScheduleChange:
    """Validate a ``schedule`` payload (the program itself is checked by ``thermolog.schedule``)."""
    return _model(ScheduleChange, load_json(payload))


def parse_points(payload: bytes) -> SchedulePoints:
    """Validate a ``schedule/points`` payload."""
    return _model(SchedulePoints, load_json(payload))


def parse_ack(payload: bytes) -> CommandAck:
    """Validate a ``cmd/ack`` payload."""
    return _model(CommandAck, load_json(payload))


def parse_refusal(payload: bytes) -> CommandRefusal:
    """Validate a ``cmd/refused`` payload."""
    return _model(CommandRefusal, load_json(payload))


def parse_alert_event(payload: bytes) -> AlertEvent:
    """Validate an ``alert`` payload."""
    return _model(AlertEvent, load_json(payload))


def parse_audit(payload: bytes) -> CommandAudit:
    """Validate a ``cmd/audit`` payload."""
    return _model(CommandAudit, load_json(payload))


def parse_status(payload: bytes) -> str:
    """Validate a ``status`` payload: ``online`` or ``offline``."""
    text = payload.decode("utf-8", errors="replace").strip()
    if text not in (STATUS_ONLINE, STATUS_OFFLINE):
        raise ContractError(f"status must be {STATUS_ONLINE!r} or {STATUS_OFFLINE!r}, got {text[:40]!r}")
    return text


def check_clock(timestamp: datetime, received_at: datetime, max_ahead_s: float = DEFAULT_CLOCK_MAX_AHEAD_S) -> None:
    """The device clock policy; raises ContractError for a reading no clock-correct device could send.

    - More than ``max_ahead_s`` after it was received: the device clock runs ahead (or sends local time as UTC).
      Stored, it would sit in the future of every chart and mask newer readings; rejected (0 turns this off).
    - Before ``CLOCK_FLOOR`` (2020-01-01): the clock was never set; rejected.
    - Anything else in the past is kept, however old: backfills and messages queued while ingest was away are
      legitimately late.
    """
    ahead = (timestamp - received_at).total_seconds()
    if max_ahead_s > 0 and ahead > max_ahead_s:
        raise ContractError(
            f"timestamp {format_timestamp(timestamp)} is {ahead / 3600:.1f} h ahead of its receive time "
            f"{format_timestamp(received_at)}: device clock wrong? (limit {max_ahead_s:.0f} s)"
        )
    if timestamp < CLOCK_FLOOR:
        raise ContractError(
            f"timestamp {format_timestamp(timestamp)} is before {CLOCK_FLOOR.year}: device clock not set"
        )


def format_timestamp(dt: datetime) -> str:
    """UTC ISO-8601 with a trailing ``Z``, as devices send it."""
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dumps(model: BaseModel) -> bytes:
    """Serialise a payload model as the wire JSON (timestamps with ``Z``, no ``None`` fields)."""
    data = model.model_dump(exclude_none=True)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = format_timestamp(value)
    return orjson.dumps(data)
