"""``thermolog`` console script: one subcommand per job, each defined in the module that does the job.

A subcommand module exposes ``add_arguments(parser)``, ``run(args) -> int`` and optionally ``DESCRIPTION``; it is
imported only when chosen, so ``thermolog --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pydantic import ValidationError

# name -> (module, one-line help). Keep the help here so `thermolog --help` needs no heavy imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("thermolog.demo.run", "Start broker (embedded if needed), simulated thermostats, ingest and the app."),
    "ingest": ("ingest.worker", "Run the ingest worker: MQTT (and IoT Hub) in, journal, DuckDB out."),
    "simulate": ("simulator.run", "Run simulated thermostats that publish telemetry and obey commands."),
    "app": ("app.launch", "Start the Streamlit dashboard."),
    "automation": ("thermolog.alerting.service", "Evaluate the alert rules and notify THERMOLOG_NOTIFY_URLS."),
    "export": ("thermolog.export", "Export telemetry for devices and a time range to CSV or Parquet."),
    "lake": ("thermolog.lake_maintain", "Lake tools: `lake maintain` (retention, compaction, snapshot expiry), "
             "`lake status`."),
    "status": ("ingest.status", "Show ingest lag, message rates, rejected counts and devices."),
    "settings": ("thermolog.settings_cmd", "Show the effective settings or the settings reference table."),
    "mode": ("thermolog.mode_cmd", "Switch a thermostat to heat or off (exit 0 when it confirms)."),
    "schedule": ("thermolog.schedule_cmd", "Show or set a thermostat's weekly program; refresh change points."),
    "setpoint": ("thermolog.setpoint_cmd", "Send a setpoint to a thermostat and wait for it to confirm."),
    "host-metrics": ("edge_modules.system_reader.mqtt_publisher",
                     "Publish this host's CPU, memory and disk on edge/<host>/system over plain MQTT."),
    "broker": ("thermolog.broker_init", "Broker tools: `broker init` creates a TLS/ACL Mosquitto configuration."),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; subcommand arguments are added only for the chosen subcommand."""
    parser = argparse.ArgumentParser(
        prog="thermolog",
        description="Thermostat telemetry: simulate or connect thermostats, ingest MQTT into DuckDB, "
        "watch and control them in a dashboard. Settings come from THERMOLOG_* variables, .env or "
        "thermolog.toml (see `thermolog settings`).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``thermolog`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    top, rest = parser.parse_known_args(argv)
    if top.command is None:
        parser.print_help()
        return 2
    module_name, help_text = COMMANDS[top.command]
    module = importlib.import_module(module_name)
    description = getattr(module, "DESCRIPTION", help_text)
    sub = argparse.ArgumentParser(prog=f"thermolog {top.command}", description=description)
    module.add_arguments(sub)
    args = sub.parse_args(rest)
    args.verbose = top.verbose
    logging.basicConfig(
        level=logging.DEBUG if top.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(module.run(args) or 0)
    except ValidationError as exc:
        print(f"thermolog: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
