"""Sending a command from the app or the CLI: validation, the per-user rate limit, the refusal audit and the choice
of transport (``THERMOLOG_COMMAND_TRANSPORT``: mqtt or iothub)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable

from thermolog import contract
from thermolog.commands.model import CommandResult, InvalidCommand, build_command, new_request_id
from thermolog.commands.mqtt import deliver_mqtt
from thermolog.commands.profiled import check_command, deliver_profiled, find_device
from thermolog.mqttclient import connect, make_client
from thermolog.settings import Settings, get_settings

log = logging.getLogger(__name__)


class RateLimiter:
    """At most ``limit`` events per key in any sliding window of ``window_s`` seconds (thread-safe)."""

    def __init__(self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Count one event for ``key`` and return 0, or return the seconds to wait (nothing counted)."""
        if self.limit <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self.window_s:
                events.popleft()
            if len(events) >= self.limit:
                return events[0] + self.window_s - now
            events.append(now)
            return 0.0


_limiters: dict[int, RateLimiter] = {}
_limiters_lock = threading.Lock()


def command_limiter(settings: Settings) -> RateLimiter:
    """The process-wide limiter for ``command_rate_limit_per_min`` (one per configured limit)."""
    with _limiters_lock:
        return _limiters.setdefault(settings.command_rate_limit_per_min,
                                    RateLimiter(settings.command_rate_limit_per_min))


_audit_limiters: dict[int, RateLimiter] = {}


def reset_rate_limits() -> None:
    """Forget every counted command and audit record (a fresh process's state; for tests and long-lived shells)."""
    with _limiters_lock:
        _limiters.clear()
        _audit_limiters.clear()


def publish_refusal(device_id: str, issued_by: str | None, reason: str, target: object,
                    settings: Settings, mode: object = None) -> bool:
    """Publish the refusal on ``cmd/refused`` so the ingest worker records it in ``commands``; best effort.

    Only with the MQTT transport and a valid device id; at most ``command_rate_limit_per_min`` records per user
    per minute, so hammering the app cannot turn into a flood of audit connections. False when not published.
    """
    if settings.command_transport != "mqtt":
        return False
    try:
        topic_name = contract.topic(device_id, contract.CMD_REFUSED, settings.topic_prefix)
    except contract.ContractError:
        return False  # no per-device topic for an id that breaks the contract: the log line is the record
    with _limiters_lock:
        audit = _audit_limiters.setdefault(settings.command_rate_limit_per_min,
                                           RateLimiter(settings.command_rate_limit_per_min))
    if audit.acquire(issued_by or "unknown") > 0:
        return False
    if isinstance(target, str):  # the CLI's and forms' text: record the number that was asked for
        try:
            target = float(target.strip().replace(",", "."))
        except ValueError:
            target = None
    number = target if isinstance(target, int | float) and not isinstance(target, bool) else None
    record = contract.CommandRefusal(
        request_id=new_request_id(), issued_by=issued_by, error=reason[:500],
        target_temp=float(number) if number is not None and math.isfinite(number) else None,
        mode=mode if mode in contract.MODES else None,
    )
    client = make_client(f"{settings.mqtt_client_id_prefix}-audit-{record.request_id[:12]}", settings)
    try:
        connect(client, settings, timeout=5)
        info = client.publish(topic_name, contract.dumps(record), qos=contract.QOS[contract.CMD_REFUSED])
        info.wait_for_publish(5)
        client.disconnect()
        return info.is_published()
    except (ConnectionError, OSError, ValueError, RuntimeError) as exc:
        log.warning("could not publish the refusal audit record for %s: %s", device_id, exc)
        return False
    finally:
        client.loop_stop()


def refuse(device_id: str, issued_by: str | None, reason: str, target: object = None,
           settings: Settings | None = None, mode: object = None) -> InvalidCommand:
    """Record a refused command (a structured log record, and ``cmd/refused`` when ``settings`` are given) and
    return the InvalidCommand to raise."""
    log.warning("command refused for %s by %s: %s", device_id, issued_by or "unknown", reason,
                extra={"event": "command_refused", "device_id": device_id, "issued_by": issued_by,
                       "target": target, "mode": mode, "reason": reason})
    if settings is not None:
        publish_refusal(device_id, issued_by, reason, target, settings, mode)
    return InvalidCommand(reason)


def recorded_recently(issued_by: str, settings: Settings, window_s: float = 60.0) -> int:
    """Commands the ``commands`` audit holds from ``issued_by`` in the last ``window_s`` (0 without a database).

    The rate limit of a short-lived sender (one ``thermolog setpoint`` per process) counts these, since its own
    in-process limiter starts empty every time."""
    from thermolog.reader import DatabaseNotReady, query  # only for this check; keeps the package import light

    try:
        frame = query("SELECT count(*) AS n FROM commands WHERE issued_by = ? AND "
                      "coalesce(sent_at, acked_at) > now() - to_microseconds((? * 1e6)::BIGINT)",
                      [issued_by, window_s], settings.db_path)
    except DatabaseNotReady:
        return 0
    return int(frame.item(0, 0))


def check_recorded_rate(device_id: str, issued_by: str, target: object, settings: Settings) -> None:
    """Refuse (and audit the refusal) when ``issued_by`` already has ``command_rate_limit_per_min`` commands in
    the audit of the last minute."""
    limit = settings.command_rate_limit_per_min
    if limit > 0 and recorded_recently(issued_by, settings) >= limit:
        raise refuse(device_id, issued_by, f"rate limit: at most {limit} commands per minute per user; try again "
                     "in a minute", target, settings)


def send_command(device_id: str, target: object, issued_by: str | None = None,
                 settings: Settings | None = None, mode: str | None = None,
                 rate_limited: bool = True) -> CommandResult:
    """Send a setpoint and/or a mode (``heat``/``off``) over the configured transport (``THERMOLOG_COMMAND_TRANSPORT``:
    mqtt or iothub); a device of another profile (``thermolog.profiles``: the original firmware, Zigbee2MQTT, a
    user's) gets it in its own format over MQTT, checked against its own rules first.

    Raises InvalidCommand for a bad device id, setpoint or mode, one the device's kind cannot take, or when
    ``issued_by`` has sent ``command_rate_limit_per_min`` commands in the last 60 s (unless ``rate_limited`` is
    False: the schedule driver, bounded by the programs, not a user); the refusal is logged
    (``command_refused``) and published on ``cmd/refused`` for the ``commands`` audit table.
    """
    settings = settings or get_settings()
    try:
        command = build_command(device_id, target, issued_by, settings, mode=mode)
        device = find_device(device_id, settings)
        if device is not None:
            check_command(device, command)
        elif command.mode is not None and settings.command_transport == "iothub":
            raise InvalidCommand("mode commands go over MQTT only: the edge module's direct method sets a target")
    except InvalidCommand as exc:
        raise refuse(device_id, issued_by, str(exc), target, settings, mode) from None
    wait_s = command_limiter(settings).acquire(issued_by or "unknown") if rate_limited else 0.0
    if wait_s > 0:
        raise refuse(device_id, issued_by, f"rate limit: at most {settings.command_rate_limit_per_min} commands "
                     f"per minute per user; try again in {math.ceil(wait_s)} s", target, settings, mode)
    if device is not None:
        return deliver_profiled(device, command, settings)
    if settings.command_transport == "iothub":
        from thermolog.commands.iothub import deliver_iothub  # azure-iot-hub is only needed for this path

        return deliver_iothub(device_id, command, settings)
    return deliver_mqtt(device_id, command, settings)
