"""A stand-in for the IoT Edge workload API on a unix socket: the trust bundle and HMAC signing that
``IoTHubModuleClient.create_from_edge_environment`` asks for."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import socketserver
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import orjson

MODULE_KEY = b"workload-stand-in-module-key-012"


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class WorkloadApi:
    """Serves ``GET /trust-bundle`` and ``POST /modules/{m}/genid/{g}/sign`` on ``socket_path``; records requests."""

    def __init__(self, socket_path: Path, trust_bundle: str, fail_trust_bundle: bool = False) -> None:
        self.socket_path = socket_path
        self.trust_bundle = trust_bundle
        self.fail_trust_bundle = fail_trust_bundle
        self.requests: list[tuple[str, str, dict[str, list[str]], dict | None]] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def address_string(self) -> str:  # unix sockets have no peer address
                return "workload-client"

            def log_message(self, *_args: object) -> None:
                return

            def _answer(self, status: int, body: dict) -> None:
                data = orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urlparse(self.path)
                api.requests.append(("GET", url.path, parse_qs(url.query), None))
                if url.path == "/trust-bundle" and not api.fail_trust_bundle:
                    self._answer(200, {"certificate": api.trust_bundle})
                else:
                    self._answer(500, {"message": "trust bundle unavailable"})

            def do_POST(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                body = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                api.requests.append(("POST", url.path, parse_qs(url.query), body))
                if not url.path.endswith("/sign"):
                    self._answer(404, {"message": "not found"})
                    return
                digest = hmac.new(MODULE_KEY, base64.b64decode(body["data"]), hashlib.sha256).digest()
                self._answer(200, {"digest": base64.b64encode(digest).decode()})

        self._server = _Server(str(socket_path), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def uri(self) -> str:
        """``IOTEDGE_WORKLOADURI`` for this socket."""
        return f"unix://{self.socket_path}"

    def start(self) -> WorkloadApi:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove the socket."""
        self._server.shutdown()
        self._server.server_close()
        self.socket_path.unlink(missing_ok=True)
