"""Commands to thermostats: one model (``model``), two transports (``mqtt``, ``iothub``) and the dispatch that
the app and the CLI call (``dispatch``: validation, rate limit, refusal audit, transport choice)."""

from thermolog.commands.dispatch import RateLimiter, refuse, reset_rate_limits, send_command
from thermolog.commands.model import (
    OUTCOME_OK,
    OUTCOME_REFUSED,
    OUTCOME_TIMEOUT,
    CommandResult,
    InvalidCommand,
    build_command,
    new_request_id,
    validate_setpoint,
)
from thermolog.commands.mqtt import send_mqtt_command

__all__ = [
    "OUTCOME_OK", "OUTCOME_REFUSED", "OUTCOME_TIMEOUT", "CommandResult", "InvalidCommand", "RateLimiter",
    "build_command", "new_request_id", "refuse", "reset_rate_limits", "send_command", "send_mqtt_command",
    "validate_setpoint",
]
