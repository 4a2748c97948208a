"""edgeHub route strings of a deployment manifest, parsed into (source module, output, sink)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

UPSTREAM = "$upstream"
_ROUTE = re.compile(
    r"^FROM\s+/messages/modules/(?P<module>[^/\s]+)/outputs/(?P<output>[^/\s]+)(?:\s+WHERE\s+.+?)?\s+INTO\s+"
    r"(?:(?P<upstream>\$upstream)|BrokeredEndpoint\(\s*\"/modules/(?P<sink>[^/\"]+)/inputs/(?P<input>[^/\"]+)\"\s*\))$"
)


@dataclass(frozen=True)
class Route:
    """One route: messages from ``module``'s ``output`` (``*`` for all) go to ``sink_module``'s ``sink_input``,
    or upstream when ``sink_module`` is ``$upstream``."""

    name: str
    module: str
    output: str
    sink_module: str
    sink_input: str | None

    def matches(self, module: str, output: str | None) -> bool:
        """Whether a message from ``module`` on ``output`` takes this route."""
        return module == self.module and (self.output == "*" or output == self.output)


def parse_route(name: str, text: str) -> Route:
    """Parse ``FROM /messages/modules/M/outputs/O INTO BrokeredEndpoint("/modules/N/inputs/I")`` or
    ``... INTO $upstream``; raises ValueError for anything else."""
    match = _ROUTE.match(text.strip())
    if not match:
        raise ValueError(f"route {name!r} is not a module-output route: {text!r}")
    if match["upstream"]:
        return Route(name, match["module"], match["output"], UPSTREAM, None)
    return Route(name, match["module"], match["output"], match["sink"], match["input"])


def load_manifest(path: Path) -> dict:
    """The deployment manifest as a dict."""
    return json.loads(path.read_text(encoding="utf-8"))


def manifest_routes(manifest: dict) -> list[Route]:
    """Every route of ``$edgeHub``'s desired properties, parsed. Routes may be strings or ``{"route": ...}``."""
    routes = manifest["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]
    parsed = []
    for name, value in routes.items():
        parsed.append(parse_route(name, value["route"] if isinstance(value, dict) else value))
    return parsed
