"""``thermolog schedule show|set|refresh``: a thermostat's weekly program (format: ``thermolog.schedule``)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from thermolog.mode_cmd import cli_user
from thermolog.schedule import ScheduleError, expand, load_file, parse_program
from thermolog.schedule_publish import current_programs, refresh_schedules, set_schedule
from thermolog.settings import get_settings

DESCRIPTION = ("Show or set a thermostat's weekly program (TOML or JSON file; the format is documented in "
               "docs/schedules.md), or re-send every device's change points.")
SHOWN_POINTS = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Subcommands show, set and refresh."""
    sub = parser.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="print the stored program and its next change points")
    show.add_argument("device")
    put = sub.add_parser("set", help="validate and send a new program")
    put.add_argument("device")
    put.add_argument("--file", type=Path, required=True, help="program file (.toml, else JSON)")
    sub.add_parser("refresh", help="re-send every stored program's change points (the automation does this)")


def _show(device_id: str) -> int:
    settings = get_settings()
    try:
        stored = current_programs(settings.db_path).get(device_id)
    except (duckdb.Error, OSError) as exc:
        print(f"thermolog schedule: cannot read {settings.db_path}: {exc}", file=sys.stderr)
        return 1
    if stored is None:
        print(f"thermolog schedule: no schedule stored for {device_id}", file=sys.stderr)
        return 1
    print(f"# set by {stored['issued_by'] or 'unknown'} at {stored['changed_at']:%Y-%m-%d %H:%M %Z}")
    print(json.dumps(stored["program"], indent=2))
    program = parse_program(stored["program"], settings.display_timezone)
    print(f"# next changes ({program.tz.key}):")
    now = datetime.now(UTC)
    for point in [p for p in expand(program, now) if p.at > now][:SHOWN_POINTS]:
        print(f"#   {point.at.astimezone(program.tz):%a %Y-%m-%d %H:%M}  {point.target:g} °C  ({point.label})")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the chosen action."""
    if args.action == "show":
        return _show(args.device)
    if args.action == "refresh":
        try:
            count = refresh_schedules()
        except (duckdb.Error, OSError) as exc:
            print(f"thermolog schedule: {exc}", file=sys.stderr)
            return 1
        print(f"refreshed {count} device(s)")
        return 0
    try:
        program = set_schedule(args.device, load_file(args.file), cli_user())
    except ScheduleError as exc:
        print(f"thermolog schedule: invalid program: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"thermolog schedule: not sent: {exc}", file=sys.stderr)
        return 1
    print(f"{args.device}: schedule set ({len(program.slots)} slot(s), {len(program.overrides)} override(s), "
          f"time zone {program.tz.key})")
    return 0
