"""Render ``deployment.template.json`` into a deployment manifest for ``az iot edge set-modules``.

``${MODULES.<module>}`` becomes the module's image as ``module.json`` names it (repository and version, plus a
platform suffix such as ``-amd64`` when given) and every ``$UPPER_CASE`` placeholder is taken from the environment
(``CONTAINER_REGISTRY_ADDRESS``, ``CONTAINER_REGISTRY_USERNAME``, ``CONTAINER_REGISTRY_PASSWORD``,
``THERMOLOG_MQTT_URL``, ...). Hub names such as ``$edgeAgent`` or ``$upstream`` start in lower case and stay.
A placeholder without a value is an error naming it; nothing half-filled is written.

The Azure CLI checks ``$edgeAgent`` and ``$edgeHub`` against its JSON schemas before sending anything, and there
every ``createOptions`` is a string of at most 512 characters. The template keeps them as readable objects; the
rendered manifest has them as compact JSON strings cut into ``createOptions``, ``createOptions01``, ... as Azure's
iotedgedev does (the IoT Edge agent joins them again), and no ``$schema-template`` key.

    python -m edge_modules.manifest --platform amd64 -o deployment.amd64.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "deployment.template.json"
_MODULE_IMAGE = re.compile(r"\$\{MODULES\.([A-Za-z0-9_]+)\}")
_VARIABLE = re.compile(r"\$([A-Z][A-Z0-9_]*)")
TWIN_VALUE_MAX_CHARS = 512
"""Longest string a twin property may hold, so the longest ``createOptions`` piece."""
TWIN_VALUE_MAX_CHUNKS = 8
"""Most ``createOptions`` pieces the IoT Edge agent joins (``createOptions`` to ``createOptions07``)."""


def module_image(module: str, platform: str | None = None) -> str:
    """The image ``edge_modules/<module>/module.json`` names (its ``$CONTAINER_REGISTRY_ADDRESS`` still a
    placeholder)."""
    meta = json.loads((HERE / module / "module.json").read_text(encoding="utf-8"))["image"]
    tag = meta["tag"]["version"] + (f"-{platform}" if platform else "")
    return f"{meta['repository']}:{tag}"


def split_create_options(module: str, value: object) -> dict[str, str]:
    """``createOptions`` as twin-sized strings: ``{"createOptions": ..., "createOptions01": ..., ...}``.

    An object becomes compact JSON (iotedgedev's ``separators=(",", ":")``); raises ValueError naming ``module``
    when it needs more than :data:`TWIN_VALUE_MAX_CHUNKS` pieces.
    """
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    pieces = [text[i:i + TWIN_VALUE_MAX_CHARS] for i in range(0, len(text), TWIN_VALUE_MAX_CHARS)] or [text]
    if len(pieces) > TWIN_VALUE_MAX_CHUNKS:
        raise ValueError(f"createOptions of {module} is {len(text)} characters: the most IoT Edge takes is "
                         f"{TWIN_VALUE_MAX_CHARS * TWIN_VALUE_MAX_CHUNKS}")
    return {("createOptions" if i == 0 else f"createOptions{i:02d}"): piece for i, piece in enumerate(pieces)}


def stringify_create_options(manifest: dict) -> None:
    """Replace every module's ``createOptions`` (system modules included) by its string pieces, in place."""
    agent = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    for group in ("systemModules", "modules"):
        for name, module in agent.get(group, {}).items():
            settings = module.get("settings", {})
            if "createOptions" in settings:
                settings.update(split_create_options(name, settings["createOptions"]))


def render(env: Mapping[str, str], platform: str | None = None, template: Path = TEMPLATE) -> dict:
    """The filled-in manifest as ``az iot edge set-modules`` takes it; raises ValueError naming every placeholder
    that has no value, or a module whose ``createOptions`` is too long."""
    text = template.read_text(encoding="utf-8")
    text = _MODULE_IMAGE.sub(lambda m: module_image(m[1], platform), text)
    missing = sorted({name for name in _VARIABLE.findall(text) if name not in env})
    if missing:
        raise ValueError(f"no value for {', '.join(missing)}: set them in the environment")
    # json.dumps(...)[1:-1] escapes quotes and backslashes so a value cannot break the JSON document.
    text = _VARIABLE.sub(lambda m: json.dumps(env[m[1]])[1:-1], text)
    manifest = json.loads(text)
    manifest.pop("$schema-template", None)  # the template format's version, not part of a deployment
    stringify_create_options(manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Write the manifest to ``--output`` (or stdout)."""
    parser = argparse.ArgumentParser(prog="python -m edge_modules.manifest", description=__doc__.split("\n")[0])
    parser.add_argument("--platform", help="image tag suffix, e.g. amd64 or arm64v8 (as module.json lists them)")
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    try:
        manifest = render(os.environ, args.platform)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(manifest, indent=2) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
