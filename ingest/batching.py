"""How many journal records the next flush transaction takes.

A record DuckDB refuses to store must not block the records behind it. After a failed write the batch is halved,
until the breaking record stands alone; a lone record that fails twice (once could be a passing disk error) is
given up, to be kept in ``rejected``. Each successful write doubles the batch again, up to the maximum.
"""

from __future__ import annotations

from collections.abc import Sequence

from ingest.journal import Position, Record


class BatchSizer:
    """The record limit of the next transaction, from the outcomes of the previous ones."""

    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        self.limit = max_records
        self._failed_alone: Position | None = None

    def succeeded(self) -> None:
        """A write went through: grow back towards the maximum."""
        self.limit = min(self.limit * 2, self.max_records)

    def give_up(self, records: Sequence[Record]) -> bool:
        """A write of ``records`` failed: True when their only record failed alone before (store it as rejected);
        False to retry, with a smaller batch when there were several."""
        if len(records) > 1:
            self.limit = max(1, len(records) // 2)
            return False
        if not records or self._failed_alone != records[0].end:
            self._failed_alone = records[0].end if records else None
            return False
        return True
