"""The ingest journal: framing, positions, rotation, release, and recovery of a torn last record."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ingest.journal import (
    MAGIC,
    START,
    Journal,
    Position,
    list_segments,
    measure_lag,
    read_records,
    segment_path,
)

TOPIC = "thermostats/esp32c3-01/telemetry"


def _fill(journal: Journal, count: int, start: int = 0) -> list[Position]:
    return [journal.append("mqtt", TOPIC, f"payload-{i}".encode(), received_ns=i) for i in range(start, start + count)]


def test_append_then_read_returns_records_in_order_with_fields(tmp_path: Path) -> None:
    """Each record comes back with its source, topic, time, payload, meta and the position after it."""
    journal = Journal(tmp_path, fsync_interval_s=0)
    first = journal.append("mqtt", TOPIC, b'{"a": 1}', received_ns=123)
    second = journal.append("eventhub", "devices/x", b"\x00\xff", received_ns=456,
                            meta={"partition": "0", "offset": "42", "sequence_number": 7})
    records = journal.read(START)
    assert [(r.source, r.topic, r.received_ns, r.payload, r.meta) for r in records] == [
        ("mqtt", TOPIC, 123, b'{"a": 1}', None),
        ("eventhub", "devices/x", 456, b"\x00\xff", {"partition": "0", "offset": "42", "sequence_number": 7}),
    ]
    assert [r.end for r in records] == [first, second]
    assert first < second == journal.end
    journal.close()


def test_read_after_a_position_returns_only_later_records_and_respects_max(tmp_path: Path) -> None:
    """Reading after a committed position resumes exactly there."""
    journal = Journal(tmp_path)
    positions = _fill(journal, 10)
    assert [r.payload for r in journal.read(positions[3])] == [f"payload-{i}".encode() for i in range(4, 10)]
    assert [r.payload for r in journal.read(positions[3], max_records=2)] == [b"payload-4", b"payload-5"]
    assert journal.read(positions[-1]) == []
    journal.close()


def test_segments_rotate_and_release_deletes_only_committed_ones(tmp_path: Path) -> None:
    """Small segments rotate; releasing keeps the segment holding uncommitted records."""
    journal = Journal(tmp_path, segment_bytes=1024)
    positions = _fill(journal, 200)
    segments = list_segments(tmp_path)
    assert len(segments) > 3
    assert [r.payload for r in journal.read(START)] == [f"payload-{i}".encode() for i in range(200)]
    committed = positions[120]
    deleted = journal.release(committed)
    assert deleted and max(deleted) < committed.segment
    assert min(list_segments(tmp_path)) == committed.segment
    assert [r.payload for r in journal.read(committed)] == [f"payload-{i}".encode() for i in range(121, 200)]
    journal.close()


def test_a_batch_is_journalled_as_the_same_records_as_single_appends(tmp_path: Path) -> None:
    """append_batch writes byte for byte what one append per message writes, and returns the end of the last."""
    messages = [(TOPIC.encode(), b'{"a": 1}'), (b"thermostats/\xff/status", b""), (TOPIC.encode(), b"x" * 70_000)]
    single = Journal(tmp_path / "single", fsync_interval_s=0)
    for topic, payload in messages:
        single.append("mqtt", topic.decode("utf-8", errors="surrogateescape"), payload, received_ns=99)
    batched = Journal(tmp_path / "batched", fsync_interval_s=0)
    end = batched.append_batch("mqtt", messages, received_ns=99)
    assert end == batched.end
    single.close()
    batched.close()
    [one], [other] = (list((tmp_path / name).iterdir()) for name in ("single", "batched"))
    assert one.read_bytes() == other.read_bytes()
    assert [r.end for r in read_records(tmp_path / "batched", START)][-1] == end


def test_a_batch_crossing_the_segment_size_rotates_between_whole_records(tmp_path: Path) -> None:
    """A batch larger than what is left of the segment goes on in the next one; no segment outgrows the size."""
    journal = Journal(tmp_path, segment_bytes=1024, fsync_interval_s=0)
    _fill(journal, 5)
    end = journal.append_batch("mqtt", [(TOPIC.encode(), f"batch-{i}".encode()) for i in range(100)], 7)
    journal.close()
    segments = list_segments(tmp_path)
    assert len(segments) > 3 and end == Position(segments[-1], segment_path(tmp_path, segments[-1]).stat().st_size)
    assert all(segment_path(tmp_path, s).stat().st_size <= 1024 for s in segments)
    assert [r.payload for r in read_records(tmp_path, START)] == [
        *(f"payload-{i}".encode() for i in range(5)), *(f"batch-{i}".encode() for i in range(100))]


def test_torn_last_record_is_dropped_and_everything_before_it_kept(tmp_path: Path) -> None:
    """A record cut short by a crash is removed on open; earlier records and new appends read back fine."""
    journal = Journal(tmp_path)
    _fill(journal, 5)
    journal.close()
    path = segment_path(tmp_path, list_segments(tmp_path)[-1])
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(size - 3)  # the last record loses its tail
    reopened = Journal(tmp_path)
    assert path.stat().st_size < size - 3
    reopened.append("mqtt", TOPIC, b"after-restart")
    assert [r.payload for r in reopened.read(START)] == [b"payload-0", b"payload-1", b"payload-2", b"payload-3",
                                                         b"after-restart"]
    reopened.close()


def test_corrupted_last_record_fails_its_crc_and_is_dropped(tmp_path: Path) -> None:
    """A flipped byte in the last record (power loss garbage) is detected by the CRC."""
    journal = Journal(tmp_path)
    _fill(journal, 3)
    journal.close()
    path = segment_path(tmp_path, list_segments(tmp_path)[-1])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert [r.payload for r in read_records(tmp_path, START)] == [b"payload-0", b"payload-1"]
    reopened = Journal(tmp_path)
    assert [r.payload for r in reopened.read(START)] == [b"payload-0", b"payload-1"]
    reopened.close()


def test_new_segment_numbers_never_go_below_the_committed_one(tmp_path: Path) -> None:
    """With an emptied directory the writer still starts above the committed position's segment."""
    journal = Journal(tmp_path, min_segment=41)
    position = journal.append("mqtt", TOPIC, b"x")
    assert position.segment == 42
    assert segment_path(tmp_path, 42).read_bytes().startswith(MAGIC)
    journal.close()


def test_measure_lag_counts_uncommitted_records_and_bytes(tmp_path: Path) -> None:
    """Lag is what lies after the committed position, across segments."""
    journal = Journal(tmp_path, segment_bytes=512)
    positions = _fill(journal, 50)
    lag = measure_lag(tmp_path, positions[9])
    assert lag.records == 40
    assert lag.bytes == sum(len(r.payload) for r in journal.read(positions[9])) + 40 * (8 + 13 + 4 + len(TOPIC))
    assert measure_lag(tmp_path, positions[-1]).records == 0
    journal.close()


def test_position_text_round_trip() -> None:
    """Positions are stored in ingest_state as text."""
    assert Position.decode(Position(3, 1234).encode()) == Position(3, 1234)


def test_records_survive_kill_minus_9_of_the_writer(tmp_path: Path) -> None:
    """Appended records are in the kernel when append returns: SIGKILL loses none of them."""
    script = textwrap.dedent(f"""
        import sys, time
        from ingest.journal import Journal
        journal = Journal({str(tmp_path)!r}, fsync_interval_s=60)
        for i in range(1000):
            journal.append("mqtt", "t/d/telemetry", str(i).encode())
        print("appended", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout.readline().strip() == b"appended"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [r.payload for r in read_records(tmp_path, START)] == [str(i).encode() for i in range(1000)]


def test_a_full_disk_refuses_appends_until_reopen_and_keeps_every_appended_record(small_disk: Path) -> None:
    """Appends fail with ENOSPC when the disk fills (a torn frame may stay behind); further appends are refused,
    even once space returns, until reopen() cuts the torn tail and starts a new segment. Every append that
    returned is readable in order, with no garbage in between."""
    journal = Journal(small_disk / "journal", fsync_interval_s=0)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 8 * 1024))
    payload = b"x" * 150
    appended: list[int] = []
    with pytest.raises(OSError) as full:
        for i in range(10_000):
            journal.append("mqtt", TOPIC, payload, received_ns=i)
            appended.append(i)
    assert full.value.errno == errno.ENOSPC
    assert appended, "some records fitted before the disk filled"
    filler.unlink()
    with pytest.raises(OSError, match="reopen"):
        journal.append("mqtt", TOPIC, payload, received_ns=-1)
    journal.reopen()
    after = [journal.append("mqtt", TOPIC, payload, received_ns=10_000 + i) for i in range(3)]
    journal.close()
    records = read_records(small_disk / "journal", START)
    assert [r.received_ns for r in records] == [*appended, 10_000, 10_001, 10_002]
    assert records[-1].end == after[-1]
    assert len(list_segments(small_disk / "journal")) == 2


def test_a_batch_the_full_disk_cuts_leaves_whole_records_and_refuses_appends_until_reopen(small_disk: Path) -> None:
    """A batch write cut short by a full disk raises ENOSPC and leaves whole records before the cut (the message
    senders get no acknowledgement, so they come again and the repeats are dropped); nothing more is appended
    until reopen() cuts the torn frame."""
    journal = Journal(small_disk / "journal", fsync_interval_s=0)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 8 * 1024))
    batch = [(TOPIC.encode(), f"{i:04d}".encode() * 40) for i in range(200)]  # about 34 KiB
    with pytest.raises(OSError) as full:
        journal.append_batch("mqtt", batch, received_ns=1)
    assert full.value.errno == errno.ENOSPC
    filler.unlink()
    with pytest.raises(OSError, match="reopen"):
        journal.append_batch("mqtt", batch[:1], received_ns=2)
    journal.reopen()
    end = journal.append_batch("mqtt", batch[:3], received_ns=3)
    journal.close()
    records = read_records(small_disk / "journal", START)
    assert [r.payload for r in records] == [payload for _t, payload in batch[:len(records) - 3]] + [
        payload for _t, payload in batch[:3]]
    assert records[-1].end == end


def test_reopen_fails_cleanly_while_the_disk_is_still_full(small_disk: Path) -> None:
    """No room for a new segment: reopen raises and leaves no header-less file; it succeeds once space returns."""
    journal = Journal(small_disk / "journal", fsync_interval_s=0)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * shutil.disk_usage(small_disk).free)
    with pytest.raises(OSError):
        for i in range(10_000):
            journal.append("mqtt", TOPIC, b"y" * 100, received_ns=i)
    segments = list_segments(small_disk / "journal")
    with pytest.raises(OSError):
        journal.reopen()
    assert list_segments(small_disk / "journal") == segments
    filler.unlink()
    journal.reopen()
    journal.append("mqtt", TOPIC, b"z", received_ns=1)
    journal.close()
    assert read_records(small_disk / "journal", START)[-1].payload == b"z"
