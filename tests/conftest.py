"""Shared fixtures: free ports, isolated settings, a unique topic prefix, and private Mosquitto brokers; the
markers derived from fixtures (tests/needs.py)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import needs
from tests.waiting import wait_for_port
from thermolog import settings as settings_module

SYSTEM_BROKER = ("127.0.0.1", 1883)
SEED_TELEMETRY = (
    b'{"temperature": 25.8, "timestamp": "2025-07-04T00:13:36Z", "humidity": 44.9, '
    b'"target_temp": 25, "device_id": "esp32c3-01", "heating": "OFF"}'
)
SEED_SYSTEM = (
    b'{"timestamp": "2025-06-26T18:55:00.363867Z", "cpu_usage": 0.0, "memory_usage": 6.6, "disk_usage": 0.3}'
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by the fixtures it uses (tests/needs.py FIXTURE_NEEDS), so ``-m`` selects by need."""
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & needs.FIXTURE_NEEDS.keys():
            item.add_marker(needs.FIXTURE_NEEDS[fixture])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Let ``needs.require`` see which test is running."""
    needs.set_current(item)
    try:
        return (yield)
    finally:
        needs.set_current(None)


@pytest.fixture(autouse=True)
def _keep_main_module() -> Iterator[None]:
    """Streamlit's AppTest leaves the app script as ``__main__``; a process started later with multiprocessing's
    spawn (the flusher process) would then run that script while starting. Put pytest's own back after each test."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def system_broker() -> tuple[str, int]:
    """The Mosquitto this machine runs on 127.0.0.1:1883 (tools/test_setup.sh starts it if missing)."""
    needs.require("broker", "the system Mosquitto")
    wait_for_port(*SYSTEM_BROKER, timeout=5)
    return SYSTEM_BROKER


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix unique to this test, so tests sharing the system broker never see each other's traffic."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def thermolog_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topic_prefix: str,
                  system_broker: tuple[str, int]) -> dict[str, str]:
    """Settings pointing at a fresh database/journal in tmp_path and the system broker; returns the env vars."""
    env = {
        "THERMOLOG_MQTT_URL": f"mqtt://{system_broker[0]}:{system_broker[1]}",
        "THERMOLOG_DB_PATH": str(tmp_path / "thermolog.duckdb"),
        "THERMOLOG_JOURNAL_DIR": str(tmp_path / "journal"),
        "THERMOLOG_TOPIC_PREFIX": topic_prefix,
        "THERMOLOG_INGEST_CLIENT_ID": f"ingest-{topic_prefix}",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # keep any .env / thermolog.toml of the developer out of the test
    settings_module.get_settings.cache_clear()
    yield env
    settings_module.get_settings.cache_clear()


class PrivateBroker:
    """A Mosquitto process with its own generated configuration on a free port."""

    def __init__(self, workdir: Path, extra_config: str = "", port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, listener: str | None = None) -> PrivateBroker:
        """Start mosquitto; ``listener`` replaces the default plain listener block."""
        needs.require("broker", "a private Mosquitto")
        body = listener or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        self.conf.write_text(f"persistence false\n{body}{self.extra_config}")
        log = open(self.workdir / f"mosquitto-{self.port}.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        """Stop the broker and wait for it to exit."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    """A plain private Mosquitto on a free port, stopped after the test (call ``.start()`` to customise)."""
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed: run tools/test_setup.sh (or `apt-get install mosquitto`)")
    broker = PrivateBroker(tmp_path)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def roomy_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A private Mosquitto whose per-client queue is unbounded, for bursts larger than a subscriber keeps up with.

    The system broker keeps Mosquitto's default ``max_queued_messages 1000``: beyond that it drops QoS 1
    messages for a subscriber that lags, which a busy CI machine can provoke during a long backfill.
    """
    broker = PrivateBroker(tmp_path_factory.mktemp("roomy-broker"), extra_config="max_queued_messages 0\n").start()
    yield ("127.0.0.1", broker.port)
    broker.stop()


@pytest.fixture(scope="session")
def simulated_history(tmp_path_factory: pytest.TempPathFactory, roomy_broker: tuple[str, int]):  # noqa: ANN201
    """14 days of 3 simulated thermostats at 60 s, backfilled through Mosquitto and the ingest worker into a fresh
    DuckDB (one run per session, shared by the analytics and notebook tests); see tests/simhistory.py."""
    from tests.simhistory import backfilled_history

    return backfilled_history(tmp_path_factory.mktemp("history"), roomy_broker)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs, for filling a disk (needs root for ``mount -t tmpfs``; CI runs as root)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here ({done.stderr.strip()}): the disk-full tests need root")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)
