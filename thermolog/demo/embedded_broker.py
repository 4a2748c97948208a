"""An embedded MQTT broker (amqtt, pure Python) for `thermolog demo` when ``THERMOLOG_MQTT_URL`` is empty.

It is a convenience for a first run on a machine without Mosquitto, bound to 127.0.0.1 only, anonymous, without
persistence; production and the tests use a real broker. Run it in a thread (``EmbeddedBroker``) or as its own
process (``python -m thermolog.demo.embedded_broker --port N``), which is what the demo does so it gets its own core.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import threading

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1883


def port_is_free(host: str, port: int) -> bool:
    """True if nothing listens on host:port and it can be bound."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host: str = DEFAULT_HOST, preferred: int = DEFAULT_PORT) -> int:
    """``preferred`` if it is free, else any free port."""
    if port_is_free(host, preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def broker_config(host: str, port: int) -> dict[str, object]:
    """amqtt configuration: one TCP listener, anonymous clients, no $SYS or packet logging."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


class _SnapshotDict(dict):
    """A dict whose iteration walks a snapshot of its keys/items.

    amqtt 0.12 iterates its subscription table across ``await`` points (on every CONNECT and for every message
    it routes); a SUBSCRIBE handled meanwhile raises "dictionary changed size during iteration", which kills that
    client's session or the broadcast loop, and messages are silently lost.
    """

    def __iter__(self):  # type: ignore[override]
        return iter(list(super().keys()))

    def keys(self):  # type: ignore[override]
        return list(super().keys())

    def items(self):  # type: ignore[override]
        return list(super().items())

    def values(self):  # type: ignore[override]
        return list(super().values())


def _broker_class() -> type:
    """amqtt's Broker with the two fixes thermolog relies on (imported lazily: only the demo needs amqtt)."""
    from amqtt.broker import Broker

    class FixedBroker(Broker):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self._subscriptions = _SnapshotDict()

        async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                              session: object) -> None:
            # amqtt sends every connecting client the retained messages of *all* clients' subscriptions;
            # only the client's own subscriptions should get them.
            subscribers = self._subscriptions.get(subscription[0], [])
            if any(s.client_id == session.client_id for s, _qos in subscribers):  # type: ignore[attr-defined]
                await super()._publish_retained_messages_for_subscription(subscription, session)

    return FixedBroker


class EmbeddedBroker:
    """An amqtt broker running on its own event loop in a daemon thread."""

    def __init__(self, host: str = DEFAULT_HOST, port: int | None = None) -> None:
        self.host = host
        self.port = port if port is not None else choose_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The ``THERMOLOG_MQTT_URL`` clients use to reach this broker."""
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start listening; raises RuntimeError if the broker does not come up."""
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"embedded broker did not start on {self.host}:{self.port} within {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"embedded broker failed to start on {self.host}:{self.port}: {self._error}")
        log.info("embedded MQTT broker (amqtt) listening on %s", self.url)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            self._broker = _broker_class()(broker_config(self.host, self.port), loop=loop)
            loop.run_until_complete(self._broker.start())
        except BaseException as exc:  # report any start failure to the thread that waits in start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._broker.shutdown())
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the broker down and wait for its thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        log.info("embedded MQTT broker stopped")


def main(argv: list[str] | None = None) -> int:
    """Run the embedded broker in the foreground until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m thermolog.demo.embedded_broker", description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=None, help="default 1883 if free, else a free port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        broker = EmbeddedBroker(args.host, args.port).start()
    except RuntimeError as exc:
        print(f"thermolog: {exc}", file=sys.stderr)
        return 1
    print(broker.url, flush=True)  # the demo reads the URL from the first line
    stop.wait()
    broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
