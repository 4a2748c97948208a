"""A stand-in for IoT Hub's HTTPS service API: records each request and answers with a scripted response."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

import orjson

from tests.azure_standins.certs import TlsFiles, make_tls_files

SERVICE_KEY = base64.b64encode(b"iothub-stand-in-service-key-0123").decode()
POLICY = "service"


@dataclass(frozen=True)
class HubRequest:
    """One request as the hub received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


Responder = Callable[[HubRequest], tuple[int, Any]]


def check_sas(header: str, key: str = SERVICE_KEY) -> dict[str, str]:
    """Parse a service SAS ``Authorization`` header and verify its signature; returns its fields."""
    scheme, _, fields_text = header.partition(" ")
    assert scheme == "SharedAccessSignature", header
    fields = dict(part.split("=", 1) for part in fields_text.split("&"))
    message = f"{fields['sr']}\n{fields['se']}".encode()
    expected = base64.b64encode(hmac.new(base64.b64decode(key), message, hashlib.sha256).digest()).decode()
    assert unquote(fields["sig"]) == expected, "SAS signature does not verify"
    return fields


class IoTHubHttpsStandIn:
    """HTTPS on 127.0.0.1 with a certificate for ``localhost``; ``responder`` decides every answer."""

    def __init__(self, workdir: Path, responder: Responder) -> None:
        self.tls: TlsFiles = make_tls_files(workdir / "iothub-tls")
        self.responder = responder
        self.requests: list[HubRequest] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                url = urlparse(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = HubRequest("POST", url.path, parse_qs(url.query), dict(self.headers.items()),
                                     orjson.loads(raw) if raw else None)
                hub.requests.append(request)
                status, body = hub.responder(request)
                data = orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.cert, self.tls.key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def connection_string(self, key: str = SERVICE_KEY) -> str:
        """A service connection string whose HostName is this stand-in."""
        return f"HostName=localhost:{self.port};SharedAccessKeyName={POLICY};SharedAccessKey={key}"

    @property
    def expected_sr(self) -> str:
        """The SAS resource (``sr``) a client signs for this hub."""
        return quote(f"localhost:{self.port}", safe="")

    def start(self) -> IoTHubHttpsStandIn:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def iothub_error(code: int, message: str) -> dict[str, str]:
    """An error body as IoT Hub sends it: a JSON document serialised into ``Message``."""
    inner = {"errorCode": code, "trackingId": "stand-in", "message": message, "timestampUtc": "2026-01-01T00:00:00Z"}
    return {"Message": orjson.dumps(inner).decode(), "ExceptionMessage": ""}
