"""Real notification receivers on loopback: an HTTP server for Apprise's ``json://`` and aiosmtpd for ``mailto://``."""

from __future__ import annotations

import email
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from tests.conftest import free_port


class HttpInbox:
    """Collects the JSON bodies POSTed to it (Apprise's json:// payload: title, message, type)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                inbox.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def titles(self) -> list[str]:
        return [body["title"] for _path, body in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpInbox:
    """An aiosmtpd server that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.recipients: list[list[str]] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_DATA(self, _server: object, _session: object, envelope: object) -> str:  # noqa: N802
        self.recipients.append(list(envelope.rcpt_tos))
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for message in self.messages]

    def close(self) -> None:
        self.controller.stop()


@contextmanager
def receivers() -> Iterator[tuple[HttpInbox, SmtpInbox]]:
    """Both receivers, closed afterwards."""
    http, smtp = HttpInbox(), SmtpInbox()
    try:
        yield http, smtp
    finally:
        http.close()
        smtp.close()
