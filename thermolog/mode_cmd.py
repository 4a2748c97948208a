"""``thermolog mode DEVICE heat|off``: switch a thermostat's mode through the same dispatch as the app
(validation, rate limit, audit); exit 0 only when the device confirms."""

from __future__ import annotations

import argparse
import getpass
import sys

from thermolog import commands, contract
from thermolog.commands.dispatch import check_recorded_rate
from thermolog.settings import get_settings

DESCRIPTION = ("Switch a thermostat to heat or off and wait for its answer: exit 0 when it confirms, 1 when it "
               "refuses or stays silent, 2 when the command is refused before sending.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``thermolog mode``."""
    parser.add_argument("device", help="device id, e.g. sim-01")
    parser.add_argument("mode", choices=contract.MODES, help="heat: follow the target; off: heater never on")


def cli_user() -> str:
    """Who a command from this shell is recorded as (as ``thermolog setpoint`` records it)."""
    return f"cli:{getpass.getuser()}"


def run(args: argparse.Namespace) -> int:
    """Send the mode and report the outcome."""
    settings = get_settings()
    try:
        check_recorded_rate(args.device, cli_user(), None, settings)  # each run is a new process
        result = commands.send_command(args.device, None, cli_user(), settings=settings, mode=args.mode)
    except commands.InvalidCommand as exc:
        print(f"thermolog mode: refused: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"thermolog mode: not sent: {exc}", file=sys.stderr)
        return 1
    if result.outcome == commands.OUTCOME_OK:
        print(f"{args.device}: mode {args.mode} confirmed")
        return 0
    print(f"thermolog mode: {args.device} {result.outcome}: {result.error}", file=sys.stderr)
    return 1
