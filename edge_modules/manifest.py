"""Render ``deployment.template.json`` into a deployment manifest for ``az iot edge set-modules``.

``${MODULES.<module>}`` becomes the module's image as ``module.json`` names it (repository and version, plus a
platform suffix such as ``-amd64`` when given) and every ``$UPPER_CASE`` placeholder is taken from the environment
(``CONTAINER_REGISTRY_ADDRESS``, ``CONTAINER_REGISTRY_USERNAME``, ``CONTAINER_REGISTRY_PASSWORD``,
``THERMOLOG_MQTT_URL``, ...). Hub names such as ``$edgeAgent`` or ``$upstream`` start in lower case and stay.
A placeholder without a value is an error naming it; nothing half-filled is written.

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


def module_image(module: str, platform: str | None = None) -> str:
    """The image ``edge_modules/<module>/module.json`` names (its ``$CONTAINER_REGISTRY_ADDRESS`` still a
    placeholder)."""
    meta = json.loads((HERE / module / "module.json").read_text(encoding="utf-8"))["image"]
    tag = meta["tag"]["version"] + (f"-{platform}" if platform else "")
    return f"{meta['repository']}:{tag}"


def render(env: Mapping[str, str], platform: str | None = None, template: Path = TEMPLATE) -> dict:
    """The filled-in manifest; raises ValueError naming every placeholder that has no value."""
    text = template.read_text(encoding="utf-8")
    text = _MODULE_IMAGE.sub(lambda m: module_image(m[1], platform), text)
    missing = sorted({name for name in _VARIABLE.findall(text) if name not in env})
    if missing:
        raise ValueError(f"no value for {', '.join(missing)}: set them in the environment")
    # json.dumps(...)[1:-1] escapes quotes and backslashes so a value cannot break the JSON document.
    text = _VARIABLE.sub(lambda m: json.dumps(env[m[1]])[1:-1], text)
    return json.loads(text)


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
