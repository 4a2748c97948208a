"""``thermolog setpoint DEVICE TARGET``: send a setpoint (or a mode) to any device that takes one and wait for
its confirmation, with the app's validation, audit and rate limit (``thermolog.commands.send_command``)."""

from __future__ import annotations

import argparse
import getpass
import sys

from thermolog import commands
from thermolog.commands.dispatch import check_recorded_rate
from thermolog.contract import MODES
from thermolog.settings import get_settings

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_TIMEOUT = 3
EXIT_UNREACHABLE = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``thermolog setpoint``."""
    parser.add_argument("device", metavar="DEVICE", help="device id, as shown on the Live page")
    parser.add_argument("target", metavar="TARGET", nargs="?", help="target temperature in °C, e.g. 21.5")
    parser.add_argument("--mode", choices=MODES, help="also (or only) switch the mode")
    parser.add_argument("--issued-by", default=None, help="name recorded in the audit (default: cli:<login>)")
    parser.epilog = (f"Exit status: {EXIT_OK} confirmed, {EXIT_REFUSED} refused (by thermolog or the device), "
                     f"{EXIT_TIMEOUT} no confirmation within the command timeout, {EXIT_UNREACHABLE} broker "
                     "unreachable.")


def run(args: argparse.Namespace) -> int:
    """Send, wait, print the outcome."""
    if args.target is None and args.mode is None:
        print("thermolog setpoint: give TARGET or --mode", file=sys.stderr)
        return EXIT_REFUSED
    issued_by = args.issued_by or f"cli:{getpass.getuser()}"
    settings = get_settings()
    try:
        check_recorded_rate(args.device, issued_by, args.target, settings)  # each run is a new process
        result = commands.send_command(args.device, args.target, issued_by=issued_by, settings=settings,
                                       mode=args.mode)
    except commands.InvalidCommand as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (ConnectionError, OSError) as exc:
        print(f"cannot reach the broker: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if result.outcome == commands.OUTCOME_OK:
        print(f"ok: {result.device_id} confirmed {result.describe()} (request {result.request_id})")
        return EXIT_OK
    print(f"{result.outcome}: {result.device_id}: {result.error} (request {result.request_id})", file=sys.stderr)
    return EXIT_REFUSED if result.outcome == commands.OUTCOME_REFUSED else EXIT_TIMEOUT
