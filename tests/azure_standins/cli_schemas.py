"""The Azure CLI's own check of a deployment manifest, run locally with the CLI's schemas.

``az iot edge set-modules`` validates ``{"$edgeAgent": ...}`` and ``{"$edgeHub": ...}`` separately, each against
``azure-iot-edge{agent,hub}-deployment-{schemaVersion}.json``, with jsonschema's Draft 4 validator unless the
schema names draft-07, and refuses the manifest on any error. Unlike the CLI, which skips a schema version it has
no file for, this check calls that an error: a test must not pass by validating nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft4Validator, Draft7Validator

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "azure-iot-cli"
"""Vendored copies of the CLI's schemas (source and licence in NOTICE.md there)."""
SCHEMA_FILES = {"$edgeAgent": "azure-iot-edgeagent-deployment-{}.json",
                "$edgeHub": "azure-iot-edgehub-deployment-{}.json"}


def schema_for(system_module: str, schema_version: str) -> dict:
    """The CLI's schema for ``$edgeAgent`` or ``$edgeHub`` at ``schema_version``; FileNotFoundError if it has none."""
    return json.loads((SCHEMAS / SCHEMA_FILES[system_module].format(schema_version)).read_text(encoding="utf-8"))


def cli_schema_errors(manifest: dict) -> list[str]:
    """Every error the CLI would report for ``manifest``, as ``"$edgeAgent.path.to.value: message"``."""
    content = manifest["modulesContent"]
    errors: list[str] = []
    for system_module in SCHEMA_FILES:
        desired = content[system_module]["properties.desired"]
        schema = schema_for(system_module, desired["schemaVersion"])
        validator = Draft7Validator if "/draft-07/" in schema.get("$schema", "") else Draft4Validator
        for error in sorted(validator(schema).iter_errors({system_module: content[system_module]}), key=str):
            errors.append(".".join(str(p) for p in error.path) + f": {error.message}")
    return errors
