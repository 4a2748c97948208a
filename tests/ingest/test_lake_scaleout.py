"""Three `thermolog ingest` processes share MQTT into one lake; one is SIGKILLed mid-burst and never returns.

Real parts only: the machine's PostgreSQL (a fresh catalog database), a private Mosquitto, the workers as
processes. Every published reading must be stored exactly once, and the dead worker's slots must be taken over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PrivateBroker
from tests.ingest.test_crash import Publisher
from tests.lake_support import fresh_database, lake_env
from tests.waiting import wait_until
from thermolog import lake
from thermolog.settings import Settings

pytestmark = pytest.mark.slow  # seconds per test: outside the fast loop (docs/testing.md)

ROOT = Path(__file__).resolve().parents[2]
BURST = 6000
SLOTS = 6


@pytest.fixture
def catalog() -> Iterator[str]:
    with fresh_database() as conninfo:
        yield conninfo


def _owners(conninfo: str) -> dict[int, str | None]:
    try:
        with psycopg.connect(conninfo) as con:
            return dict(con.execute("SELECT slot, owner FROM thermolog_slot_leases WHERE expires_at > now()"))
    except psycopg.errors.UndefinedTable:
        return {}


def _start(env: dict[str, str], name: str, workdir: Path) -> subprocess.Popen[bytes]:
    worker_env = {**os.environ, **env, "THERMOLOG_JOURNAL_DIR": str(workdir / f"journal-{name}"),
                  "THERMOLOG_LAKE_WORKER_ID": name}
    with (workdir / f"{name}.log").open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "thermolog.cli", "ingest"], env=worker_env, cwd=workdir,
                                stdout=out, stderr=subprocess.STDOUT)


def test_three_workers_one_killed_for_good_lose_nothing_and_store_nothing_twice(
        tmp_path: Path, catalog: str, private_broker: PrivateBroker, topic_prefix: str) -> None:
    # Queues without limit for sessions whose holder is gone; 100 unacknowledged messages in flight per session.
    private_broker.extra_config = "max_queued_messages 0\nmax_inflight_messages 100\n"
    private_broker.start()
    env = {**lake_env(catalog, tmp_path / "lake-data"),
           "THERMOLOG_MQTT_URL": f"mqtt://127.0.0.1:{private_broker.port}",
           "THERMOLOG_TOPIC_PREFIX": topic_prefix, "THERMOLOG_INGEST_CLIENT_ID": f"ingest-{topic_prefix}",
           "THERMOLOG_LAKE_MQTT_SLOTS": str(SLOTS), "THERMOLOG_LAKE_LEASE_S": "3",
           "THERMOLOG_FLUSH_INTERVAL_S": "0.2"}
    workers = {name: _start(env, name, tmp_path) for name in ("w1", "w2", "w3")}
    settings = Settings(**{k.removeprefix("THERMOLOG_").lower(): v for k, v in lake_env(
        catalog, tmp_path / "lake-data").items()})
    con = None
    publisher = Publisher(private_broker.port, topic_prefix, BURST, per_tick=50, tick_s=0.05)  # ~6 s
    try:
        def balanced() -> bool:
            for name, proc in workers.items():
                assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()
            owners = _owners(catalog)
            return len(owners) == SLOTS and sorted(list(owners.values()).count(n) for n in workers) == [2, 2, 2]
        wait_until(balanced, 60, interval=0.3, what="six slots held two by two")

        con = lake.connect(settings)
        stored = lambda: con.execute("SELECT count(*) FROM telemetry").fetchone()[0]  # noqa: E731
        publisher.start()
        wait_until(lambda: stored() >= 1000, 60, interval=0.2, what="the first stored readings")
        workers["w2"].send_signal(signal.SIGKILL)
        workers["w2"].wait(10)
        assert not publisher.done.is_set(), "the burst ended before the kill"
        assert publisher.done.wait(120) and publisher.error is None, publisher.error

        # The survivors take the dead worker's two slots over (lease 3 s) and receive its unstored share.
        wait_until(lambda: set(_owners(catalog).values()) == {"w1", "w3"} and len(_owners(catalog)) == SLOTS, 60,
                 interval=0.3, what="w2's slots taken over")
        wait_until(lambda: stored() >= BURST, 90, interval=0.3, what=f"all {BURST} readings")
        rows = con.execute("SELECT count(*), count(DISTINCT (device_id, ts)) FROM telemetry").fetchone()
        assert rows == (BURST, BURST)
        per_worker = dict(con.execute(
            "SELECT worker, arg_max(value, updated_at)::BIGINT FROM worker_state WHERE key = 'messages_total' "
            "GROUP BY worker").fetchall())
        assert set(per_worker) == {"w1", "w2", "w3"} and all(per_worker.values()), per_worker
        rollup = con.execute("SELECT sum(n) FROM telemetry_1m").fetchone()[0]
        assert rollup == BURST
        for name in ("w1", "w3"):  # a clean stop stores what is left and hands the slots back at once
            workers[name].send_signal(signal.SIGTERM)
        for name in ("w1", "w3"):
            assert workers[name].wait(60) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
        assert _owners(catalog) == {}
    finally:
        if con is not None:
            con.close()
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
