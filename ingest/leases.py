"""Leases on the MQTT worker slots, kept in the lake's PostgreSQL catalog database.

Each ingest worker registers itself (``thermolog_workers``), renews the leases of the slots it holds every third
of ``THERMOLOG_LAKE_LEASE_S``, and aims to hold its fair share: ceil(slots / live workers). It claims slots that
are free or whose lease expired (a dead worker's: within one lease plus one renewal period), and hands back
slots above its share so a newly started worker gets some. Claims use ``FOR UPDATE SKIP LOCKED`` and expiry is
judged by the database's clock only, so two workers never hold one slot.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import psycopg

from thermolog.settings import Settings

log = logging.getLogger(__name__)

SETUP = """
CREATE TABLE IF NOT EXISTS thermolog_slot_leases (
    slot INTEGER PRIMARY KEY, owner TEXT, expires_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    claims BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS thermolog_workers (worker TEXT PRIMARY KEY, seen_at TIMESTAMPTZ NOT NULL);
"""


def catalog_conninfo(settings: Settings) -> str:
    """The libpq connection string of the lake's PostgreSQL catalog."""
    if not settings.lake_catalog.startswith("postgres:"):
        raise ValueError("several ingest workers need the lake's catalog in PostgreSQL "
                         "(THERMOLOG_LAKE_CATALOG=postgres:...): their slot leases live there")
    conninfo = settings.lake_catalog.removeprefix("postgres:")
    if settings.lake_postgres_password:
        conninfo += f" password={settings.lake_postgres_password}"
    return conninfo


@dataclass(frozen=True)
class LeaseRound:
    """The outcome of one renewal: slots held now, slots newly claimed, slots lost, slots to hand back."""

    held: frozenset[int]
    claimed: frozenset[int]
    lost: frozenset[int]
    surplus: frozenset[int]


class SlotLeases:
    """This worker's view of the slot leases; call :meth:`renew` every ``lease_s / 3``."""

    def __init__(self, conninfo: str, worker: str, slots: int, lease_s: float) -> None:
        self.conninfo = conninfo
        self.worker = worker
        self.slots = slots
        self.lease_s = lease_s
        self.held: frozenset[int] = frozenset()
        self._con: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._con is None or self._con.closed:
            self._con = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
        return self._con

    def setup(self) -> None:
        """Create the lease tables and the slot rows (idempotent; workers may race here)."""
        con = self._connection()
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(8615)")  # CREATE TABLE IF NOT EXISTS races otherwise
            con.execute(SETUP)
            con.execute("INSERT INTO thermolog_slot_leases (slot) SELECT generate_series(0, %s - 1) "
                        "ON CONFLICT DO NOTHING", [self.slots])

    def renew(self) -> LeaseRound:
        """Heartbeat, renew held slots, claim up to the fair share, name the surplus."""
        con = self._connection()
        interval = f"{self.lease_s} seconds"
        con.execute("INSERT INTO thermolog_workers VALUES (%s, now()) ON CONFLICT (worker) DO UPDATE SET "
                    "seen_at = excluded.seen_at", [self.worker])
        renewed = frozenset(row[0] for row in con.execute(
            "UPDATE thermolog_slot_leases SET expires_at = now() + %s::interval WHERE owner = %s RETURNING slot",
            [interval, self.worker]).fetchall())
        lost = self.held - renewed
        live = con.execute("SELECT count(*) FROM thermolog_workers WHERE seen_at > now() - %s::interval",
                           [interval]).fetchone()[0]
        share = math.ceil(self.slots / max(live, 1))
        claimed: frozenset[int] = frozenset()
        if len(renewed) < share:
            claimed = frozenset(row[0] for row in con.execute(
                """UPDATE thermolog_slot_leases SET owner = %s, expires_at = now() + %s::interval, claims = claims + 1
                   WHERE slot IN (SELECT slot FROM thermolog_slot_leases
                                  WHERE slot < %s AND (owner IS NULL OR expires_at < now())
                                  ORDER BY slot LIMIT %s FOR UPDATE SKIP LOCKED)
                   RETURNING slot""",
                [self.worker, interval, self.slots, share - len(renewed)]).fetchall())
        self.held = renewed | claimed
        surplus = frozenset(sorted(self.held)[share:]) if len(self.held) > share else frozenset()
        for slot in lost:
            log.error("lease on slot %s was lost (another worker holds it now)", slot)
        return LeaseRound(self.held, claimed, lost, surplus)

    def release(self, slots: frozenset[int] | set[int]) -> None:
        """Hand slots back (after their sessions were closed)."""
        if not slots:
            return
        self._connection().execute(
            "UPDATE thermolog_slot_leases SET owner = NULL, expires_at = now() WHERE owner = %s AND slot = ANY(%s)",
            [self.worker, list(slots)])
        self.held = self.held - frozenset(slots)

    def leave(self) -> None:
        """Release every slot and unregister this worker."""
        self.release(self.held)
        self._connection().execute("DELETE FROM thermolog_workers WHERE worker = %s", [self.worker])

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
