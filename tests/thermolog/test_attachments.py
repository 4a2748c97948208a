"""Shared attachments: overlapping reads use one, an old one is released for the writer, failures start afresh."""

from __future__ import annotations

import threading
import time

import pytest

from thermolog.attachments import SharedAttachments

FILE = "/data/t.duckdb"


class Recorder:
    """Fake attach/detach that log what happened, in order, with the time."""

    def __init__(self, fail_first: int = 0) -> None:
        self.events: list[tuple[str, str, float]] = []
        self.fail_first = fail_first

    def attach(self, alias: str, file: str, window_s: float) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise RuntimeError("locked")
        self.events.append(("attach", alias, time.monotonic()))

    def detach(self, alias: str) -> None:
        self.events.append(("detach", alias, time.monotonic()))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.events]


def in_thread(shared: SharedAttachments, window_s: float = 5.0) -> tuple[threading.Thread, threading.Event,
                                                                        threading.Event, list[str]]:
    """A read in another thread: it sets ``entered`` with its alias, then holds until ``release`` is set."""
    entered, release, alias = threading.Event(), threading.Event(), []

    def read() -> None:
        with shared.use(FILE, window_s) as name:
            alias.append(name)
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=read)
    thread.start()
    return thread, entered, release, alias


def test_overlapping_reads_share_one_attachment_detached_when_the_last_ends() -> None:
    rec = Recorder()
    shared = SharedAttachments(rec.attach, rec.detach, share_s=60)
    with shared.use(FILE, 5) as first:
        thread, entered, release, second = in_thread(shared)
        assert entered.wait(10)
        assert second == [first]
        release.set()
        thread.join(10)
        assert rec.kinds() == ["attach"]  # the second read's end kept the file attached for the first
    assert rec.kinds() == ["attach", "detach"]


def test_other_files_get_their_own_attachment() -> None:
    rec = Recorder()
    shared = SharedAttachments(rec.attach, rec.detach)
    with shared.use(FILE, 5) as one, shared.use("/data/other.duckdb", 5) as other:
        assert one != other
    assert rec.kinds() == ["attach", "attach", "detach", "detach"]


def test_a_read_after_the_share_window_waits_for_release_then_leaves_the_writer_a_gap() -> None:
    rec = Recorder()
    shared = SharedAttachments(rec.attach, rec.detach, share_s=0, writer_gap_s=0.05)
    with shared.use(FILE, 5) as first:
        thread, entered, release, later = in_thread(shared)
        assert not entered.wait(0.2)  # the attachment is too old to join: the read waits
    assert entered.wait(10)
    release.set()
    thread.join(10)
    assert later != [first]
    assert rec.kinds() == ["attach", "detach", "attach", "detach"]
    detached, attached_again = rec.events[1][2], rec.events[2][2]
    assert attached_again - detached >= 0.05  # the writer's turn


def test_a_read_that_waited_its_whole_window_joins_rather_than_fails() -> None:
    rec = Recorder()
    shared = SharedAttachments(rec.attach, rec.detach, share_s=0, writer_gap_s=0.05)
    with shared.use(FILE, 5) as first:
        thread, entered, release, later = in_thread(shared, window_s=0.1)
        assert entered.wait(10)
        assert later == [first]
        release.set()
        thread.join(10)
    assert rec.kinds() == ["attach", "detach"]


def test_a_failed_attach_raises_and_the_next_read_attaches_afresh() -> None:
    rec = Recorder(fail_first=1)
    shared = SharedAttachments(rec.attach, rec.detach)
    with pytest.raises(RuntimeError, match="locked"), shared.use(FILE, 5):
        pass
    with shared.use(FILE, 5):
        pass
    assert rec.kinds() == ["attach", "detach"]


def test_the_file_is_detached_when_the_block_raises() -> None:
    rec = Recorder()
    shared = SharedAttachments(rec.attach, rec.detach)
    with pytest.raises(ValueError), shared.use(FILE, 5):
        raise ValueError("query failed")
    assert rec.kinds() == ["attach", "detach"]
