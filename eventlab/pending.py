"""Committed events waiting to be absorbed into DuckDB, and the absorbing itself.

See :mod:`eventlab.journal` for why a file store acknowledges appends before
DuckDB holds them. Small commits (one command's events) stay as rows and are
journalled as JSON; big ones (a batch of commands) become one Arrow batch that
is journalled as is and later inserted without another conversion.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from .events import RecordedEvent
from .journal import Journal, SideRows
from .schema import ARROW_SCHEMA, rows_to_batch

# From this many rows on, building an Arrow batch costs less than JSON.
ARROW_COMMIT_ROWS = 64


class PendingEvents:
    """Acknowledged events not yet in the DuckDB ``events`` table, in position order."""

    def __init__(self, journal: Journal | None):
        self.journal = journal
        # Small commits stay as plain row tuples (see store._Transaction for why).
        self._chunks: list[list[tuple] | pa.RecordBatch] = []
        self._supplied: dict[str, RecordedEvent] = {}  # caller-supplied event_id -> record
        self.count = 0
        # Side rows journalled since the last absorb (their owners keep the rows).
        self.side_count = 0

    def commit(
        self,
        records: list[tuple],
        supplied: dict[str, RecordedEvent],
        side: SideRows | None = None,
    ) -> None:
        """Make ``records`` (rows in the RecordedEvent layout) and ``side`` rows durable
        together, and keep the records until the next absorb."""
        if len(records) >= ARROW_COMMIT_ROWS:
            chunk = rows_to_batch(records)
            if self.journal is not None:
                self.journal.write_batch(chunk, side)
        else:
            chunk = records
            if self.journal is not None:
                self.journal.write_rows(records, side)
        if records:
            self._chunks.append(chunk)
            self._supplied.update(supplied)
            self.count += len(records)
        if side:
            self.side_count += len(side)

    def restore(self, table: pa.Table) -> None:
        """Take back rows recovered from the journal after a crash (already durable)."""
        if table.num_rows:
            self._chunks.extend(table.to_batches())
            self.count += table.num_rows

    def find(self, event_id: str) -> RecordedEvent | None:
        """A pending record by the event id its caller supplied."""
        return self._supplied.get(event_id)

    def find_rows(self, event_ids: set[str]) -> dict[str, tuple]:
        """Pending rows (RecordedEvent layout) by event id, whoever chose the id: a scan,
        for the rare lookup of an id the store generated (see EventStore._lookup_ids)."""
        found: dict[str, tuple] = {}
        wanted = pa.array(list(event_ids), pa.string())
        for chunk in self._chunks:
            if isinstance(chunk, pa.RecordBatch):
                ids = chunk.column(1)
                hits = pc.is_in(ids, value_set=wanted)
                for index in pc.indices_nonzero(hits).to_pylist():
                    found[ids[index].as_py()] = _batch_row(chunk, index)
            else:
                found.update((row[1], row) for row in chunk if row[1] in event_ids)
        return found

    def table(self) -> pa.Table:
        """Everything pending as one Arrow table."""
        batches: list[pa.RecordBatch] = []
        rows: list[tuple] = []
        for chunk in self._chunks:
            if isinstance(chunk, pa.RecordBatch):
                if rows:
                    batches.append(rows_to_batch(rows))
                    rows = []
                batches.append(chunk)
            else:
                rows.extend(chunk)  # consecutive small commits convert in one go
        if rows:
            batches.append(rows_to_batch(rows))
        return pa.Table.from_batches(batches, schema=ARROW_SCHEMA)

    def insert_into(self, con: duckdb.DuckDBPyConnection) -> None:
        """Insert everything pending into ``events`` in one statement (see :meth:`forget`)."""
        if not self.count:
            return
        con.register("_pending_events", self.table())
        try:
            con.execute("INSERT INTO events SELECT * FROM _pending_events")
        finally:
            con.unregister("_pending_events")

    def forget(self) -> None:
        """Empty the journal and the buffer, once DuckDB has committed their rows."""
        if self.journal is not None:
            self.journal.clear()
        self._chunks = []
        self._supplied = {}
        self.count = 0
        self.side_count = 0


def _batch_row(batch: pa.RecordBatch, index: int) -> tuple:
    """Row ``index`` of a pending batch as a tuple in the RecordedEvent layout (the
    timestamps as epoch microseconds)."""
    return tuple(
        value.value if pa.types.is_timestamp(value.type) else value.as_py()
        for value in (column[index] for column in batch.columns)
    )
