"""Edge module ``system_reader``: the host's CPU, memory, disk and network counters every N seconds to output
``system``, as the seed's payload (``timestamp``, ``cpu_usage``, ``memory_usage``, ``disk_usage``) plus
``net_bytes_sent`` / ``net_bytes_recv``, validated with ``thermolog.contract.SystemMetrics``.

The interval is ``THERMOLOG_EDGE_SYSTEM_INTERVAL_S``; the twin desired property ``interval_s`` overrides it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psutil
from azure.iot.device import IoTHubModuleClient

from edge_modules import common
from edge_modules.host import DISK_PATH, sample
from thermolog import contract
from thermolog.settings import Settings, get_settings

log = logging.getLogger("edge_modules.system_reader")

OUTPUT = "system"
__all__ = ["DISK_PATH", "OUTPUT", "SystemReader", "main", "sample"]
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 86_400.0


class SystemReader:
    """Samples the host on a timer and sends each sample to output ``system``."""

    def __init__(self, client: IoTHubModuleClient, settings: Settings | None = None,
                 host: str | None = None) -> None:
        settings = settings or get_settings()
        self.client = client
        self.interval_s = settings.edge_system_interval_s
        self.host = common.safe_host_name(host)
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0

    def apply_twin(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Twin hook: take a new ``interval_s`` at once (the current wait is cut short)."""
        if "interval_s" in changes:
            self.interval_s = changes["interval_s"]
            self._wake.set()
        return {"interval_s": self.interval_s}

    def send_sample(self) -> contract.SystemMetrics:
        """Take one sample and send it; a failure is logged and the next tick tries again with a fresh sample."""
        metrics = sample()
        message = common.json_message(
            contract.dumps(metrics), {common.PROP_HOST: self.host, common.PROP_KIND: common.KIND_SYSTEM}
        )
        try:
            self.client.send_message_to_output(message, OUTPUT)
            self.sent += 1
        except Exception as exc:  # noqa: BLE001 - a missed sample is replaced by the next one
            log.warning("could not send system sample: %s: %s", type(exc).__name__, exc)
        return metrics

    def _loop(self) -> None:
        psutil.cpu_percent(interval=None)  # the first reading is meaningless: it only sets the reference point
        while not self.stop_event.is_set():
            self._wake.clear()
            self._wake.wait(min(self.interval_s, 1.0) if self.sent == 0 else self.interval_s)
            if self.stop_event.is_set():
                break
            self.send_sample()

    def start(self) -> None:
        """Connect, apply the twin and start sampling in a background thread."""
        self.client.connect()
        common.TwinSettings(
            self.client, {"interval_s": common.number_field(MIN_INTERVAL_S, MAX_INTERVAL_S)}, self.apply_twin
        ).start()
        self._thread = threading.Thread(target=self._loop, name="system-reader", daemon=True)
        self._thread.start()
        log.info("system_reader started: host %s, every %.1f s to output %s", self.host, self.interval_s, OUTPUT)

    def stop(self) -> None:
        """Stop sampling and close the client."""
        self.stop_event.set()
        self._wake.set()
        if self._thread:
            self._thread.join(5)
        self.client.shutdown()


def main() -> int:
    """Run until SIGTERM."""
    return common.run_module(SystemReader)


if __name__ == "__main__":
    raise SystemExit(main())
