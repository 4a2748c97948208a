"""Commands to devices of a profile (``thermolog.profiles``): written in the device's own format, confirmed by the
state it publishes next, audited on ``cmd/audit``.

Which profile a device has comes from the ``devices`` table the ingest worker keeps; a device not in it is native
and goes through the contract's ``cmd``/``cmd/ack`` (``thermolog.commands.mqtt``).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from thermolog import contract, profiles
from thermolog.commands.model import OUTCOME_OK, OUTCOME_TIMEOUT, CommandResult, InvalidCommand
from thermolog.mqttclient import connect, make_client
from thermolog.profiles import Profile
from thermolog.settings import Settings

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ProfiledDevice:
    """A device of a profile: its kind's profile, the address its own topics use and what ingest learnt."""

    device_id: str
    profile: Profile
    address: str
    details: dict[str, Any]

    def limit(self, key: str) -> float | None:
        """A setpoint limit: the device's own (Zigbee2MQTT's climate feature) before the profile's."""
        value = self.details.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return getattr(self.profile, key)


def find_device(device_id: str, settings: Settings) -> ProfiledDevice | None:
    """The device's profile from the ``devices`` table; None for a native device (or no database yet).

    A device whose kind's profile is switched off or gone raises InvalidCommand: commands in the native format
    would reach nobody."""
    from thermolog.reader import DatabaseNotReady, query  # only needed here; keeps the package import light

    try:
        frame = query("SELECT kind, address, details FROM devices WHERE device_id = ?", [device_id],
                      settings.db_path)
    except DatabaseNotReady:
        return None
    except Exception as exc:  # noqa: BLE001 - an older file without the table: treat the device as native
        log.debug("no devices table to look %s up in: %s", device_id, exc)
        return None
    if frame.is_empty():
        return None
    kind, address, details = frame.row(0)
    profile = profiles.profiles_from_settings(settings).by_name(kind)
    if profile is None:
        raise InvalidCommand(f"{device_id} is a {kind} device, and that profile is switched off in the settings")
    return ProfiledDevice(device_id, profile, address, orjson.loads(details) if details else {})


def check_command(device: ProfiledDevice, command: contract.Command) -> None:
    """The device's own rules, checked before sending; raises InvalidCommand saying why."""
    profile = device.profile
    if profile.command_topic is None:
        raise InvalidCommand(f"{device.device_id} ({profile.name}) takes no commands: its profile has no "
                             "command_topic")
    target = command.target_temp
    if target is not None:
        if profile.setpoint_payload is None:
            raise InvalidCommand(f"{device.device_id} ({profile.name}) takes no setpoint: its profile has no "
                                 "setpoint_payload")
        step, low, high = device.limit("setpoint_step"), device.limit("setpoint_min"), device.limit("setpoint_max")
        if step == 1.0 and target != math.floor(target):
            raise InvalidCommand(
                f"{device.device_id} runs the {profile.name} firmware, which takes whole degrees only (it applies "
                f"int(value), so {target:g} would become {math.floor(target)}): send {math.floor(target)} or "
                f"{math.floor(target) + 1}" if profile.name == profiles.ORIGINAL else
                f"{device.device_id} takes whole degrees only: {target:g} is not one")
        if step and step != 1.0 and not math.isclose(target / step, round(target / step), abs_tol=1e-9):
            raise InvalidCommand(f"{device.device_id} takes setpoints in steps of {step:g} °C: {target:g} is not one")
        if low is not None and target < low or high is not None and target > high:
            raise InvalidCommand(f"{device.device_id} accepts {low:g}-{high:g} °C: {target:g} is outside")
    if command.mode is not None and command.mode not in profile.mode_payloads:
        raise InvalidCommand(f"{device.device_id} ({profile.name}) takes no mode commands")


def command_payloads(device: ProfiledDevice, command: contract.Command) -> list[bytes]:
    """The payloads to publish on the device's command topic, mode first (a valve switched on, then set)."""
    profile = device.profile
    out = []
    if command.mode is not None:
        out.append(profiles.render_payload(profile.mode_payloads[command.mode], {}))
    if command.target_temp is not None and profile.setpoint_payload is not None:
        target_key = device.details.get("target_key") or profile.target_temp[0]
        value = float(command.target_temp)
        out.append(profiles.render_payload(profile.setpoint_payload, {"value": value, "target_key": target_key}))
    return out


def _audit(client: mqtt.Client, device: ProfiledDevice, command: contract.Command, settings: Settings,
           ok: bool | None = None, error: str | None = None) -> None:
    record = contract.CommandAudit(request_id=command.request_id, target_temp=command.target_temp,
                                   mode=command.mode, issued_by=command.issued_by, kind=device.profile.name, ok=ok,
                                   error=error)
    client.publish(contract.topic(device.device_id, contract.CMD_AUDIT, settings.topic_prefix),
                   contract.dumps(record), qos=contract.QOS[contract.CMD_AUDIT]).wait_for_publish(5)


def deliver_profiled(device: ProfiledDevice, command: contract.Command, settings: Settings,
                     timeout_s: float | None = None) -> CommandResult:
    """Publish a checked ``command`` in the device's format; ``ok`` once its state shows the new target (and
    mode), ``timeout`` otherwise. Sent and confirmed are published on ``cmd/audit`` for the ingest audit."""
    profile = device.profile
    timeout = max(settings.command_timeout_s if timeout_s is None else timeout_s, profile.min_confirm_s)
    state_topic = profile.topic_for(profile.state_topic, device.address)
    confirmed = threading.Event()
    granted: set[int] = set()
    granted_lock = threading.Condition()

    def on_state(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        try:
            seen = profiles.translate(profile, device.address, message.payload, datetime.now(UTC))
        except contract.ContractError:
            return
        target_ok = command.target_temp is None or math.isclose(seen.reading.target_temp, command.target_temp,
                                                                abs_tol=1e-6)
        if target_ok and (command.mode is None or seen.mode == command.mode):
            confirmed.set()

    def on_subscribe(_c: mqtt.Client, _u: object, mid: int, _granted: Any) -> None:
        # Recorded before anyone waits: a SUBACK handled before the wait starts is not lost.
        with granted_lock:
            granted.add(mid)
            granted_lock.notify_all()

    def result(outcome: str, error: str | None = None) -> CommandResult:
        return CommandResult(command.request_id, device.device_id, command.target_temp, outcome, error,
                             mode=command.mode)

    client = make_client(f"thermolog-cmd-{command.request_id[:12]}", settings)
    client.on_subscribe = on_subscribe
    client.message_callback_add(state_topic, on_state)
    connect(client, settings)
    try:
        _rc, mid = client.subscribe(state_topic, qos=1)
        with granted_lock:
            if not granted_lock.wait_for(lambda: mid in granted, SUBSCRIBE_TIMEOUT_S):
                raise ConnectionError(f"the broker did not confirm the subscription to {state_topic!r}")
        _audit(client, device, command, settings)
        command_topic = profile.topic_for(profile.command_topic or "", device.address)
        for payload in command_payloads(device, command):
            client.publish(command_topic, payload, qos=profile.command_qos).wait_for_publish(timeout)
        log.info("sent %s command %s to %s on %s: %s by %s", profile.name, command.request_id, device.device_id,
                 command_topic, result("").describe(), command.issued_by or "unknown")
        if confirmed.wait(timeout):
            _audit(client, device, command, settings, ok=True)
            return result(OUTCOME_OK)
        # No outcome record: unanswered, the audit shows the command as a timeout (as for an unacked native one).
        return result(OUTCOME_TIMEOUT, f"{device.device_id} published no state with {result('').describe()} "
                                       f"within {timeout:.0f} s: is it online?")
    finally:
        client.disconnect()
        client.loop_stop()
