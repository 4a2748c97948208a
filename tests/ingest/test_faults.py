"""Faults against the production broker configuration and `thermolog ingest` as a real process: broker restarts,
kill -9 under load, a torn journal tail, a full journal disk, a reader holding the database.

Every test counts acknowledged readings (the broker PUBACKed them to the device) and checks that each is stored
exactly once. Set THERMOLOG_RELIABILITY_REPORT=path to append each test's figures as a JSON line (for
docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from ingest.journal import START, list_segments, read_records, segment_path, valid_length
from tests.broker_support import TlsBroker
from tests.fault_support import Device, IngestProcess, loss_and_duplicates, stored_numbers, wait_stored
from tests.ingest_support import db_value
from tests.waiting import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DEVICE = "dev-f1"
KILL_SEED = 20260
KILLS = 20


def report(name: str, **figures: object) -> None:
    """Append this test's figures to THERMOLOG_RELIABILITY_REPORT (if set)."""
    path = os.environ.get("THERMOLOG_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"test": name, **figures}) + "\n")


@pytest.fixture
def broker() -> Iterator[TlsBroker]:
    """The production configuration with persistence on (queued messages survive a broker restart)."""
    tls = TlsBroker([DEVICE, "dev-f2"], persistence=True).start()
    yield tls
    tls.cleanup()


@pytest.fixture
def ingest(broker: TlsBroker, tmp_path: Path) -> Iterator[IngestProcess]:
    process = IngestProcess(broker, tmp_path)
    yield process
    if process.proc is not None:
        process.stop()


def test_broker_restart_loses_nothing(broker: TlsBroker, ingest: IngestProcess) -> None:
    """Readings sent while ingest is away survive a broker restart; a restart under a running ingest too."""
    ingest.start().wait_connected()
    device = Device(broker, DEVICE)
    device.publish(100)  # A: ingest up
    wait_stored(ingest.db_path, DEVICE, device.acked)
    assert ingest.stop() == 0
    device.publish(100)  # B: ingest away; queued in its persistent session
    device.close()
    broker.stop()
    broker.start()  # B must come back from the broker's persistence file
    acked = list(device.acked)
    ingest.start()
    device = Device(broker, DEVICE, first=200)
    device.publish(100)  # C: right after the restart, maybe before ingest is back
    wait_stored(ingest.db_path, DEVICE, device.acked)
    device.close()
    acked += device.acked
    broker.stop()  # D: the broker restarts under a running ingest, which reconnects by itself
    broker.start()
    device = Device(broker, DEVICE, first=300)
    device.publish(100)
    device.close()
    acked += device.acked
    stored = wait_stored(ingest.db_path, DEVICE, acked)
    lost, duplicated = loss_and_duplicates(stored, acked)
    report("broker_restart", restarts=2, acked=len(acked), stored=len(stored), lost=lost, duplicated=duplicated)
    assert (lost, duplicated) == (0, 0)
    assert sorted(stored) == list(range(400))


def test_kill_9_at_random_moments_under_load(broker: TlsBroker, ingest: IngestProcess) -> None:
    """20 SIGKILLs of ingest at random moments while a device publishes continuously: 0 lost, 0 duplicated."""
    rng = random.Random(KILL_SEED)
    ingest.start().wait_connected()
    device = Device(broker, DEVICE)
    device.run_in_background(batch=20, pause_s=0.05)
    started = time.monotonic()
    kill_points = []
    for i in range(KILLS):
        if i % 2:
            # Once a run is connecting it replays its journal backlog and receives what the broker queued for it:
            # the kill lands at a random moment of that work.
            wait_until(ingest.connecting, 30, what="ingest to connect")
            delay = rng.uniform(0.05, 1.0)
        else:
            delay = rng.uniform(0.2, 2.0)  # from spawn: start-up, opening the database, replaying the journal
        threading.Event().wait(delay)  # the fault's timing is the point here, not a condition to await
        kill_points.append(round(delay, 2))
        ingest.kill()
        ingest.start()
    device.stop_background()
    device.close()
    stored = wait_stored(ingest.db_path, DEVICE, device.acked, timeout=90)
    lost, duplicated = loss_and_duplicates(stored, device.acked)
    redelivered = int(db_value(ingest.db_path, "SELECT value FROM ingest_state WHERE key = 'duplicates_total'")
                      or 0)
    report("kill_9", kills=KILLS, kills_while_receiving=KILLS // 2, kills_during_startup=KILLS - KILLS // 2,
           seconds=round(time.monotonic() - started, 1), acked=len(device.acked),
           stored=len(stored), lost=lost, duplicated=duplicated, redeliveries_dropped=redelivered,
           unacked=len(device.unacked))
    assert len(device.acked) > 1000, "the load was too light to mean anything"
    assert (lost, duplicated) == (0, 0)
    assert set(stored) <= set(device.acked) | set(device.unacked)


def test_torn_journal_tail_is_cut_and_the_rest_kept(broker: TlsBroker, tmp_path: Path) -> None:
    """A record cut short at the end of the journal (crash mid-write) is dropped on start; every record
    before it is stored and ingest carries on with new messages."""
    ingest = IngestProcess(broker, tmp_path)
    try:
        ingest.start().wait_connected()  # creates the persistent session
        ingest.stop()
        ingest.env["THERMOLOG_FLUSH_INTERVAL_S"] = "60"  # now keep the records in the journal:
        ingest.env["THERMOLOG_FLUSH_QUIET_S"] = "0"  # no early flush at the end of the burst either
        ingest.start()
        device = Device(broker, DEVICE)
        device.publish(50)
        wait_until(lambda: len(read_records(ingest.journal_dir, START)) >= 50, 20, what="50 journalled records")
        ingest.kill()
        newest = segment_path(ingest.journal_dir, list_segments(ingest.journal_dir)[-1])
        intact = newest.stat().st_size
        with newest.open("r+b") as fh:
            fh.truncate(intact - 7)  # the last record loses its end
        assert valid_length(newest) < intact - 7
        ingest.env["THERMOLOG_FLUSH_INTERVAL_S"] = "0.2"
        ingest.start()
        stored = wait_stored(ingest.db_path, DEVICE, list(range(49)))
        assert "dropped a torn last record" in ingest.log()
        device.publish(1)  # and it goes on
        stored = wait_stored(ingest.db_path, DEVICE, [*range(49), 50])
        device.close()
        report("torn_tail", journalled=50, torn=1, stored=len(stored), lost_intact=0,
               duplicated=len(stored) - len(set(stored)))
        assert sorted(stored) == [*range(49), 50], "the torn record is the only one missing"
    finally:
        ingest.stop()


def test_full_journal_disk_pauses_receiving_and_resumes_by_itself(broker: TlsBroker, tmp_path: Path,
                                                                   small_disk: Path) -> None:
    """When the journal's disk fills, ingest pauses receiving with a clear error and acknowledges nothing it could
    not journal; the journal stays readable; once space returns the same process resumes and stores every
    acknowledged reading, none twice."""
    ingest = IngestProcess(broker, tmp_path, journal_dir=str(small_disk / "journal"),
                           journal_segment_bytes="65536", journal_resume_free_bytes=str(128 * 1024))
    ingest.journal_dir = small_disk / "journal"
    filler = small_disk / "filler"
    try:
        ingest.start().wait_connected()
        free = shutil.disk_usage(small_disk).free
        filler.write_bytes(b"\0" * (free - 16 * 1024))  # leave 16 KiB: about 80 readings
        device = Device(broker, DEVICE)
        device.publish(400)
        wait_until(lambda: "receiving paused" in ingest.log(), 20, what="ingest to pause receiving")
        wait_until(lambda: db_value(ingest.db_path, "SELECT value FROM ingest_state WHERE key = 'journal_write_failed'")
                   == "true", 20, what="the pause to show in ingest_state")
        log = ingest.log()
        assert "cannot journal a message" in log
        assert "No space left on device" in log or "disk full" in log
        assert "THERMOLOG_JOURNAL_RESUME_FREE_BYTES" in log, "the error says what to do"
        status = subprocess.run([sys.executable, "-m", "thermolog.cli", "status"], env=ingest.env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert "PAUSED" in status.stdout and "disk is full" in status.stdout, status.stdout
        journalled = read_records(ingest.journal_dir, START)  # readable, no garbage in the middle
        for segment in list_segments(ingest.journal_dir)[:-1]:
            path = segment_path(ingest.journal_dir, segment)
            assert valid_length(path) == path.stat().st_size
        assert ingest.proc is not None and ingest.proc.poll() is None, "ingest keeps running while paused"
        filler.unlink()  # space returns
        stored = wait_stored(ingest.db_path, DEVICE, device.acked)
        device.close()
        assert "receiving resumed" in ingest.log()
        assert ingest.proc.poll() is None and ingest.starts == 1, "resumed without a restart"
        lost, duplicated = loss_and_duplicates(stored, device.acked)
        report("disk_full", disk_kib=512, acked=len(device.acked), journalled_before_full=len(journalled),
               stored=len(stored), lost=lost, duplicated=duplicated, restarts=0)
        assert (lost, duplicated) == (0, 0)
    finally:
        if ingest.proc is not None:
            ingest.stop()


HOLD_S = 60.0
"""How long the reader holds the database, as the issue asks: flushes wait, readings pile up in the journal."""


def test_reader_holding_the_database_loses_nothing(broker: TlsBroker, ingest: IngestProcess) -> None:
    """A process holding the database read-only blocks flushes for HOLD_S; readings pile up in the journal and
    are stored once it lets go; the lag returns to 0."""
    ingest.start().wait_connected()
    device = Device(broker, DEVICE)
    device.publish(50)
    wait_stored(ingest.db_path, DEVICE, device.acked)
    device.run_in_background(batch=10, pause_s=0.1)
    holder = duckdb.connect(str(ingest.db_path), read_only=True)
    held_at = time.monotonic()
    try:
        threading.Event().wait(HOLD_S)  # the fault is the hold's duration
        during = holder.execute("SELECT count(*) FROM telemetry").fetchone()[0]
    finally:
        holder.close()
    released_at = time.monotonic()
    pending = len(read_records(ingest.journal_dir, START))
    device.stop_background()
    device.close()
    stored = wait_stored(ingest.db_path, DEVICE, device.acked)
    caught_up_s = time.monotonic() - released_at
    wait_until(lambda: db_value(ingest.db_path, "SELECT value FROM ingest_state WHERE key = 'journal_lag_records'")
               == "0", 20, what="the lag to return to 0")
    lost, duplicated = loss_and_duplicates(stored, device.acked)
    report("reader_hold", hold_s=round(released_at - held_at, 1), stored_during_hold=during,
           journalled_waiting=pending, acked=len(device.acked), stored=len(stored), lost=lost,
           duplicated=duplicated, caught_up_s=round(caught_up_s, 1))
    assert during == 50, "nothing can be flushed while the reader holds the file"
    assert pending > 50, "readings waited in the journal"
    assert (lost, duplicated) == (0, 0)
    assert "database locked by another process" in ingest.log()
    assert stored_numbers(ingest.db_path, DEVICE) is not None
