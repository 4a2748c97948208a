"""Append-only journal: every accepted message is written here before the broker gets its acknowledgement.

The flusher moves records from the journal into DuckDB and stores the journal position in the same transaction,
so a restart replays exactly the records after that position: nothing lost, nothing twice.

On-disk format (all integers little-endian)
-------------------------------------------
The journal is a directory of segment files named ``{segment:012d}.journal``, segment numbers increasing. Each
segment starts with the 8-byte magic ``b"TLJRNL01"`` followed by records::

    u32 body_length | u32 crc32(body) | body
    body = i64 received_ns | u8 source_len | u16 topic_len | u16 meta_len | source | topic | meta | payload

``source`` is ASCII (``mqtt``, ``eventhub``), ``topic`` UTF-8, ``meta`` a small JSON object (empty when absent,
e.g. Event Hubs partition/offset/sequence number), ``payload`` the raw message bytes (whatever is left of the body).

A *position* ``(segment, offset)`` names the byte where the next record starts; the flusher commits the end
position of the last record it stored. A writer never appends to a segment it did not create: on open it cuts a
torn tail off the newest segment (a record cut short by a crash or power loss: bad length or CRC) and starts a
new segment. Everything before the first bad frame is kept. After a failed write (disk full) the writer refuses
appends until ``reopen`` has cut the torn tail in the same way and started a new segment. Segments rotate at
``segment_bytes`` and are deleted once every record in them is committed.

Durability: each append (one record, or the records of one ``append_batch``) is one ``os.write``, so it is in the
kernel before the call returns and a killed process loses nothing. ``fsync`` runs every ``fsync_interval_s`` on a
background thread (0: after every append), which bounds what a power failure can take.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

log = logging.getLogger(__name__)

MAGIC = b"TLJRNL01"
SUFFIX = ".journal"
_FRAME = struct.Struct("<II")  # body_length, crc32
_BODY = struct.Struct("<qBHH")  # received_ns, source_len, topic_len, meta_len
MAX_BODY_BYTES = 512 * 1024 * 1024
"""A length above this can only be garbage (MQTT's own limit is 256 MiB)."""


class Position(NamedTuple):
    """Where the next record starts: segment number and byte offset inside it (ordered like the journal)."""

    segment: int
    offset: int

    def encode(self) -> str:
        """Text form stored in ``ingest_state``: ``"segment:offset"``."""
        return f"{self.segment}:{self.offset}"

    @classmethod
    def decode(cls, text: str) -> Position:
        """Inverse of :meth:`encode`."""
        segment, offset = text.split(":")
        return cls(int(segment), int(offset))


START = Position(0, 0)
"""Before everything: reading after START returns every record still in the journal."""


class Record(NamedTuple):
    """One journalled message and the position right after it (a tuple: the flusher decodes many per second)."""

    source: str
    topic: str
    received_ns: int
    payload: bytes
    meta: dict[str, Any] | None
    end: Position


def encode_record(source: str, topic: str, payload: bytes, received_ns: int,
                  meta: dict[str, Any] | None = None) -> bytes:
    """One framed record, ready to append."""
    source_b = source.encode("ascii")
    topic_b = topic.encode("utf-8", errors="surrogateescape")
    meta_b = orjson.dumps(meta) if meta else b""
    body = b"".join((_BODY.pack(received_ns, len(source_b), len(topic_b), len(meta_b)), source_b, topic_b,
                     meta_b, payload))
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def encode_batch(source: str, messages: list[tuple[bytes, bytes]], received_ns: int) -> list[bytes]:
    """Framed records of ``(raw topic, payload)`` messages received together (no meta): the same as
    :func:`encode_record` gives for each, built with a few C calls per message."""
    source_b = source.encode("ascii")
    heads: dict[bytes, tuple[bytes, int]] = {}  # topic -> body up to the payload and its CRC (few topics repeat)
    frame = _FRAME.pack
    crc32 = zlib.crc32
    frames = []
    for topic, payload in messages:
        head = heads.get(topic)
        if head is None:
            prefix = _BODY.pack(received_ns, len(source_b), len(topic), 0) + source_b + topic
            head = heads[topic] = (prefix, crc32(prefix))
        prefix, prefix_crc = head
        frames.append(frame(len(prefix) + len(payload), crc32(payload, prefix_crc)) + prefix + payload)
    return frames


TEXT_CACHE_MAX_BYTES = 4 * 1024 * 1024
"""Most bytes of topics the decode cache holds (MQTT topics may be 64 KiB: a count bound is not a memory bound)."""
TEXT_CACHE_MAX_ITEM_BYTES = 256
"""Longer topics are decoded every time, never cached (a valid thermolog topic is under 100 bytes)."""
_TEXT_CACHE: dict[bytes, str] = {}
"""Decoded sources and topics: a journal repeats a few of them endlessly (bounded in bytes, see _text)."""
_text_cache_bytes = 0


def _text(raw: bytes) -> str:
    global _text_cache_bytes
    text = _TEXT_CACHE.get(raw)
    if text is None:
        text = raw.decode("utf-8", errors="surrogateescape")
        if len(raw) <= TEXT_CACHE_MAX_ITEM_BYTES:
            if _text_cache_bytes + len(raw) > TEXT_CACHE_MAX_BYTES:
                _TEXT_CACHE.clear()  # a flood of distinct topics: start over, the live few come back at once
                _text_cache_bytes = 0
            _TEXT_CACHE[raw] = text
            _text_cache_bytes += len(raw)
    return text


def text_cache_bytes() -> int:
    """Bytes of topics the decode cache holds now (keys; each value is a str of about the same size)."""
    return _text_cache_bytes


def _decode_frames(data: bytes, segment: int, start: int, records: list[Record], max_records: int | None) -> int:
    """Append the records of ``data`` (read from byte ``start`` of ``segment``) to ``records``, up to
    ``max_records`` in all; returns the offset in ``data`` of the first bad frame, or -1 when there is none.

    The same checks as :func:`_frames`, in one loop: a flush decodes tens of thousands of records."""
    view = memoryview(data)
    unpack_frame, unpack_body, crc32, text = _FRAME.unpack_from, _BODY.unpack_from, zlib.crc32, _text
    new = tuple.__new__
    head, body_head, stop, offset = _FRAME.size, _BODY.size, len(data), 0
    while offset < stop:
        if stop - offset < head:
            return offset
        length, crc = unpack_frame(data, offset)
        body_at = offset + head
        end = body_at + length
        if length < body_head or length > MAX_BODY_BYTES or end > stop or crc32(view[body_at:end]) != crc:
            return offset
        received_ns, source_len, topic_len, meta_len = unpack_body(data, body_at)
        topic_at = body_at + body_head + source_len
        meta_at = topic_at + topic_len
        payload_at = meta_at + meta_len
        records.append(new(Record, (text(data[body_at + body_head:topic_at]), text(data[topic_at:meta_at]),
                                    received_ns, data[payload_at:end],
                                    orjson.loads(data[meta_at:payload_at]) if meta_len else None,
                                    new(Position, (segment, start + end)))))
        offset = end
        if max_records is not None and len(records) >= max_records:
            break
    return -1


def segment_path(directory: Path, segment: int) -> Path:
    """File of one segment."""
    return directory / f"{segment:012d}{SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    """Segment numbers present in ``directory``, ascending."""
    if not directory.is_dir():
        return []
    numbers = []
    for path in directory.iterdir():
        if path.suffix == SUFFIX and path.stem.isdigit():
            numbers.append(int(path.stem))
    return sorted(numbers)


def _frames(data: bytes, start: int, stop: int) -> Iterator[tuple[int, int, bytes | None]]:
    """Yield ``(offset, end, body)`` for each valid frame in ``data[start:stop]``; body None marks a bad frame."""
    offset = start
    while offset < stop:
        if stop - offset < _FRAME.size:
            yield offset, stop, None
            return
        length, crc = _FRAME.unpack_from(data, offset)
        end = offset + _FRAME.size + length
        if length < _BODY.size or length > MAX_BODY_BYTES or end > stop:
            yield offset, stop, None
            return
        body = data[offset + _FRAME.size:end]
        if zlib.crc32(body) != crc:
            yield offset, stop, None
            return
        yield offset, end, body
        offset = end


def valid_length(path: Path) -> int:
    """Bytes of ``path`` up to the end of its last intact record (0 if the magic itself is missing)."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        return 0
    good = len(MAGIC)
    for _offset, end, body in _frames(data, len(MAGIC), len(data)):
        if body is None:
            break
        good = end
    return good


def read_records(directory: Path, after: Position, max_records: int | None = None,
                 end: Position | None = None) -> list[Record]:
    """Records that start at or after ``after`` (up to ``end`` when given), oldest first.

    A bad frame ends its segment: the rest of that segment is skipped with an error logged (a writer only leaves
    one behind on a crash or disk corruption, and cuts torn tails off when it opens).
    """
    records: list[Record] = []
    segments = list_segments(directory)
    for segment in segments:
        if segment < after.segment or (end is not None and segment > end.segment):
            continue
        path = segment_path(directory, segment)
        try:
            with path.open("rb") as fh:
                if fh.read(len(MAGIC)) != MAGIC:
                    log.error("journal segment %s has no journal header; skipped", path.name)
                    continue
                start = max(after.offset, len(MAGIC)) if segment == after.segment else len(MAGIC)
                fh.seek(start)
                limit = end.offset - start if end is not None and segment == end.segment else -1
                data = fh.read(limit)
        except FileNotFoundError:  # released meanwhile
            continue
        paused = gc.isenabled()
        gc.disable()  # tens of thousands of new tuples would set off collections that walk the whole heap
        try:
            bad = _decode_frames(data, segment, start, records, max_records)
        finally:
            if paused:
                gc.enable()
        # Unbounded readers (another process) may see the record being written right now at the tail of the
        # newest segment: not an error. Anywhere else it is damage.
        if bad >= 0 and (end is not None or segment != segments[-1]):
            log.error("journal segment %s: bad record at byte %s; rest of segment skipped", path.name, start + bad)
        if max_records is not None and len(records) >= max_records:
            return records
    return records


@dataclass(frozen=True, slots=True)
class Lag:
    """Journal content not yet committed to the database."""

    records: int
    bytes: int
    segments: int


def measure_lag(directory: Path, after: Position) -> Lag:
    """Count records and bytes after ``after`` by walking frame headers (no CRC check: cheap on big backlogs)."""
    records = size = segments = 0
    for segment in list_segments(directory):
        if segment < after.segment:
            continue
        path = segment_path(directory, segment)
        try:
            with path.open("rb") as fh:
                total = os.fstat(fh.fileno()).st_size
                offset = max(after.offset, len(MAGIC)) if segment == after.segment else len(MAGIC)
                segments += 1
                while offset + _FRAME.size <= total:
                    fh.seek(offset)
                    length, _crc = _FRAME.unpack(fh.read(_FRAME.size))
                    end = offset + _FRAME.size + length
                    if end > total or length > MAX_BODY_BYTES:
                        break
                    records += 1
                    size += end - offset
                    offset = end
        except FileNotFoundError:
            continue
    return Lag(records, size, segments)


def bytes_after(directory: Path, position: Position) -> int:
    """Journal bytes after ``position`` (file sizes only)."""
    total = 0
    for segment in list_segments(directory):
        if segment < position.segment:
            continue
        try:
            size = segment_path(directory, segment).stat().st_size
        except FileNotFoundError:
            continue
        total += size - (max(position.offset, len(MAGIC)) if segment == position.segment else len(MAGIC))
    return max(total, 0)


def release_segments(directory: Path, committed: Position, active: int) -> list[int]:
    """Delete segments below ``active`` whose every record is at or before ``committed``; returns their numbers."""
    deleted = []
    for segment in list_segments(directory):
        if segment >= active or segment > committed.segment:
            break
        path = segment_path(directory, segment)
        if segment == committed.segment:
            try:
                if committed.offset < path.stat().st_size:
                    break
            except FileNotFoundError:
                continue
        path.unlink(missing_ok=True)
        deleted.append(segment)
    return deleted


class Journal:
    """The writer side of the journal (one per directory and process), plus reads up to what it has written.

    ``append`` and ``append_batch`` are thread-safe and cheap (pack, CRC, one ``os.write``) because they run in
    the MQTT receive thread, before the acknowledgement.
    """

    def __init__(self, directory: Path | str, segment_bytes: int = 16 * 1024 * 1024,
                 fsync_interval_s: float = 0.2, min_segment: int = 0) -> None:
        """Open (and recover) the journal in ``directory``; new records go to a fresh segment.

        ``min_segment``: the new segment number is above it (pass the committed position's segment so numbers
        never go backwards, even when the directory was emptied).
        """
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_s
        self._lock = threading.Lock()
        self._closed = threading.Event()
        existing = list_segments(self.directory)
        if existing:
            self._cut_torn_tail(existing[-1])
        self._fd = -1
        self._dirty = False
        self._damaged = False
        self._open_segment(max([min_segment, *existing]) + 1)
        self._sync_thread: threading.Thread | None = None
        if fsync_interval_s > 0:
            self._sync_thread = threading.Thread(target=self._sync_loop, name="journal-fsync", daemon=True)
            self._sync_thread.start()

    @classmethod
    def from_settings(cls, settings: Any, min_segment: int = 0) -> Journal:
        """A journal configured by ``journal_dir``, ``journal_segment_bytes`` and ``journal_fsync_interval_s``."""
        return cls(settings.journal_dir, settings.journal_segment_bytes, settings.journal_fsync_interval_s,
                   min_segment=min_segment)

    # --- writing -------------------------------------------------------------------------------------------
    def _cut_torn_tail(self, segment: int) -> None:
        path = segment_path(self.directory, segment)
        size = path.stat().st_size
        good = valid_length(path)
        if good == 0:
            log.warning("journal segment %s has no header (%s bytes); removed", path.name, size)
            path.unlink()
        elif good < size:
            log.warning("journal segment %s: dropped a torn last record (%s bytes after byte %s)",
                        path.name, size - good, good)
            with path.open("r+b") as fh:
                fh.truncate(good)
                os.fsync(fh.fileno())

    def _open_segment(self, segment: int) -> None:
        path = segment_path(self.directory, segment)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            if os.write(fd, MAGIC) != len(MAGIC):
                raise OSError(errno.ENOSPC, f"no room for the header of journal segment {path.name}")
            os.fsync(fd)
            self._fsync_dir()
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd, self._segment, self._offset = fd, segment, len(MAGIC)

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def append(self, source: str, topic: str, payload: bytes, received_ns: int | None = None,
               meta: dict[str, Any] | None = None) -> Position:
        """Append one record; returns the position right after it. Durable against a process crash on return."""
        frame = encode_record(source, topic, payload, time.time_ns() if received_ns is None else received_ns, meta)
        with self._lock:
            self._check_writable()
            self._write_rotating(frame)
            return Position(self._segment, self._offset)

    def append_batch(self, source: str, messages: list[tuple[bytes, bytes]], received_ns: int) -> Position:
        """Append ``(raw topic, payload)`` records received together, in order, with one ``os.write`` (one per
        segment when they cross a rotation); returns the position after the last. Durable against a process crash
        on return; when it raises, any of them may be in the journal (whole) or none."""
        frames = encode_batch(source, messages, received_ns)
        with self._lock:
            self._check_writable()
            if self._offset + sum(map(len, frames)) <= self.segment_bytes:
                self._write(b"".join(frames))
            else:  # crossing a rotation: one frame at a time, as append does
                for frame in frames:
                    self._write_rotating(frame)
            return Position(self._segment, self._offset)

    def _check_writable(self) -> None:
        if self._closed.is_set():
            raise RuntimeError("journal is closed")
        if self._damaged:
            raise OSError(errno.ENOSPC, "journal segment has a torn tail from a failed write; reopen() first")

    def _write_rotating(self, frame: bytes) -> None:
        """Write one frame, starting a new segment first when it would not fit in this one (unless empty)."""
        if self._offset + len(frame) > self.segment_bytes and self._offset > len(MAGIC):
            try:
                self._rotate()
            except OSError:
                self._damaged = True
                raise
        self._write(frame)

    def _write(self, data: bytes) -> None:
        """``os.write`` whole frames at the end of the segment (caller holds the lock); fsync per settings."""
        try:
            written = os.write(self._fd, data)
        except OSError:
            self._damaged = True  # part of the frame may be on disk: nothing more goes after it
            raise
        if written != len(data):  # regular files only short-write when the disk is full
            self._damaged = True
            raise OSError(errno.ENOSPC, f"journal write cut short ({written} of {len(data)} bytes): disk full")
        self._offset += written
        if self.fsync_interval_s == 0:
            os.fsync(self._fd)
        else:
            self._dirty = True

    def reopen(self) -> None:
        """Recover from a failed write (disk full): cut the torn tail and continue in a new segment.

        Raises OSError while there is still no room for the new segment; the journal refuses appends until a
        call succeeds.
        """
        with self._lock:
            if self._closed.is_set():
                raise RuntimeError("journal is closed")
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            existing = list_segments(self.directory)
            if existing:
                self._cut_torn_tail(existing[-1])
            self._open_segment(max([self._segment, *existing]) + 1)
            self._damaged = False
            self._dirty = False
        log.info("journal reopened: new records go to segment %s", self._segment)

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._dirty = False
        self._open_segment(self._segment + 1)

    def sync(self) -> None:
        """fsync what has been written so far."""
        with self._lock:
            if self._fd < 0 or not self._dirty:
                return
            fd = os.dup(self._fd)  # fsync outside the lock so appends are not held up by the disk
            self._dirty = False
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _sync_loop(self) -> None:
        while not self._closed.wait(self.fsync_interval_s):
            try:
                self.sync()
            except OSError:
                log.exception("journal fsync failed")

    def close(self) -> None:
        """fsync and close; appends after this raise."""
        self._closed.set()
        if self._sync_thread is not None:
            self._sync_thread.join()
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1

    # --- reading -------------------------------------------------------------------------------------------
    @property
    def end(self) -> Position:
        """Position right after the last appended record."""
        with self._lock:
            return Position(self._segment, self._offset)

    def read(self, after: Position, max_records: int | None = None) -> list[Record]:
        """Records after ``after`` up to what this writer has appended so far."""
        return read_records(self.directory, after, max_records, end=self.end)

    def bytes_after(self, position: Position) -> int:
        """Record bytes after ``position`` (cheap: file sizes only)."""
        return bytes_after(self.directory, position)

    def lag(self, after: Position) -> Lag:
        """Records and bytes after ``after``."""
        return measure_lag(self.directory, after)

    def release(self, committed: Position) -> list[int]:
        """Delete segments whose every record is at or before ``committed``; returns the deleted numbers."""
        with self._lock:
            active = self._segment
        return release_segments(self.directory, committed, active)


class JournalReader:
    """The reading side for another process (the flusher process): reads whatever is on disk.

    The tail of the newest segment may hold a record being written; reading stops before it and picks it up
    on the next call. Older segments are complete (the writer rotates only after a whole record).
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def read(self, after: Position, max_records: int | None = None) -> list[Record]:
        """Records after ``after`` that are completely on disk."""
        return read_records(self.directory, after, max_records)

    def bytes_after(self, position: Position) -> int:
        """Record bytes after ``position``."""
        return bytes_after(self.directory, position)

    def lag(self, after: Position) -> Lag:
        """Records and bytes after ``after``."""
        return measure_lag(self.directory, after)

    def release(self, committed: Position) -> list[int]:
        """Delete fully committed segments, never the newest (the writer may still append to it)."""
        segments = list_segments(self.directory)
        return release_segments(self.directory, committed, segments[-1]) if segments else []
