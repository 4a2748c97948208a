"""The one command model: outcomes, validation of a setpoint against the settings, building a contract command.

Both transports (``thermolog.commands.mqtt``, ``thermolog.commands.iothub``) depend on this module only; the device
validates again with the same rules (``thermolog.control.Thermostat.check_target``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from thermolog import contract
from thermolog.control import Thermostat
from thermolog.settings import Settings, get_settings

OUTCOME_OK = "ok"
OUTCOME_REFUSED = "refused"
OUTCOME_TIMEOUT = "timeout"


class InvalidCommand(ValueError):
    """A command refused before it reaches any device; the message says which rule it broke."""


@dataclass(frozen=True)
class CommandResult:
    """What happened to one command: ``ok``, ``refused`` by the device (with its reason) or ``timeout``."""

    request_id: str
    device_id: str
    target_temp: float | None
    outcome: str
    error: str | None = None
    ack: contract.CommandAck | None = None
    mode: str | None = None

    def describe(self) -> str:
        """What was asked, for messages: ``21.5 °C``, ``mode off`` or both."""
        parts = [f"{self.target_temp:g} °C"] if self.target_temp is not None else []
        return ", ".join(parts + ([f"mode {self.mode}"] if self.mode else [])) or "nothing"


def validate_setpoint(value: object, settings: Settings | None = None) -> float:
    """Return the setpoint as float if within the configured range and step, else raise InvalidCommand."""
    settings = settings or get_settings()
    if isinstance(value, str):
        try:
            value = float(value.strip().replace(",", "."))
        except ValueError:
            raise InvalidCommand(f"{value!r} is not a number") from None
    limits = Thermostat(
        target=settings.setpoint_min_c,
        min_target=settings.setpoint_min_c,
        max_target=settings.setpoint_max_c,
        step=settings.setpoint_step_c,
    )
    try:
        return limits.check_target(value)
    except ValueError as exc:
        raise InvalidCommand(str(exc)) from None


def new_request_id() -> str:
    """A fresh request id (32 hex characters)."""
    return uuid.uuid4().hex


def validate_mode(mode: object) -> str:
    """Return ``mode`` if it is one of the contract's modes (heat, off), else raise InvalidCommand."""
    if mode not in contract.MODES:
        raise InvalidCommand(f"mode {mode!r} must be one of {', '.join(contract.MODES)}")
    return str(mode)


def build_command(device_id: str, target: object, issued_by: str | None, settings: Settings | None = None,
                  request_id: str | None = None, mode: str | None = None) -> contract.Command:
    """A validated command model (a setpoint, a mode or both); raises InvalidCommand for a bad device id,
    setpoint or mode."""
    try:
        contract.check_device_id(device_id)
    except contract.ContractError as exc:
        raise InvalidCommand(exc.reason) from None
    return contract.Command(
        request_id=request_id or new_request_id(),
        # Without a mode the setpoint is required: None is refused as "not a number" by the validation.
        target_temp=None if target is None and mode is not None else validate_setpoint(target, settings),
        mode=None if mode is None else validate_mode(mode),
        issued_by=issued_by,
    )
