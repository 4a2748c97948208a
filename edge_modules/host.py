"""The host's own numbers, free of Azure: its name in the contract's id alphabet and one psutil sample.

Shared by the ``system_reader`` edge module (to edgeHub) and ``thermolog host-metrics`` (plain MQTT).
"""

from __future__ import annotations

import os
import re
import socket
from datetime import UTC, datetime

from thermolog import contract

DISK_PATH = "/"


def safe_host_name(name: str | None = None) -> str:
    """``name`` (default: the IoT Edge device id, else the host name) in the contract's id alphabet
    ``[A-Za-z0-9_-]{1,64}``."""
    name = name or os.environ.get("IOTEDGE_DEVICEID") or socket.gethostname()
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "-", name)[:64]
    return cleaned or "edge"


def sample(disk_path: str = DISK_PATH, now: datetime | None = None) -> contract.SystemMetrics:
    """One validated sample. CPU usage is since the previous call (prime it once with ``psutil.cpu_percent()``)."""
    import psutil  # here, not on top: modules that only need the host name (via common) ship without psutil

    net = psutil.net_io_counters()
    return contract.SystemMetrics(
        timestamp=now or datetime.now(UTC),
        cpu_usage=float(psutil.cpu_percent(interval=None)),
        memory_usage=float(psutil.virtual_memory().percent),
        disk_usage=float(psutil.disk_usage(disk_path).percent),
        net_bytes_sent=int(net.bytes_sent) if net else None,
        net_bytes_recv=int(net.bytes_recv) if net else None,
    )
