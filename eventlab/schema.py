"""The DuckDB schema of a store, and the row layouts that move in and out of it."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from .events import RECORD_FIELDS
from .replay import paused_gc

FORMAT_VERSION = "1"

# event_id is compressed with ZSTD rather than the dictionary-and-FSST DuckDB picks
# for text by default: ids are all distinct, so the dictionary never pays, while
# trying it made writing the ids 2 to 3 times slower (a third of a bulk append's
# CPU). ZSTD writes them faster, reads them as fast and stores them smaller.
EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS events (
    position       BIGINT      NOT NULL,  -- global, strictly increasing, gapless
    event_id       VARCHAR     NOT NULL   -- unique; a caller may supply it for idempotency
                   USING COMPRESSION zstd,
    stream_id      VARCHAR     NOT NULL,
    version        INTEGER     NOT NULL,  -- 1-based within the stream
    type           VARCHAR     NOT NULL,
    data           JSON        NOT NULL,
    metadata       JSON        NOT NULL,
    correlation_id VARCHAR,
    causation_id   VARCHAR,
    recorded_at    TIMESTAMPTZ NOT NULL,  -- knowledge time: when the store wrote it
    occurred_at    TIMESTAMPTZ NOT NULL,  -- business time: when it happened
    schema_version INTEGER     NOT NULL   -- for upcasting old payload shapes
)
"""

INFO_DDL = """
CREATE TABLE IF NOT EXISTS eventlab_info (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)
"""

# The layout of a pending row and of a RecordedEvent's tuple: JSON as text and
# timestamps as epoch microseconds, which Arrow turns into TIMESTAMPTZ for free.
_UTC_MICROS = pa.timestamp("us", tz="UTC")
ARROW_SCHEMA = pa.schema(
    zip(
        RECORD_FIELDS,
        [pa.int64(), pa.string(), pa.string(), pa.int32(), pa.string(), pa.string()]
        + [pa.string(), pa.string(), pa.string(), _UTC_MICROS, _UTC_MICROS, pa.int32()],
        strict=True,
    )
)

# Reads rows of ``events`` (or anything shaped like it) in the RecordedEvent layout.
SELECT_RECORD = (
    "SELECT position, event_id, stream_id, version, type, data::VARCHAR, "
    "metadata::VARCHAR, correlation_id, causation_id, epoch_us(recorded_at), "
    "epoch_us(occurred_at), schema_version FROM {src}"
)

EVENT_COLUMNS = RECORD_FIELDS


SNAPSHOTS_DDL = """
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id        VARCHAR     NOT NULL,
    reducer          VARCHAR     NOT NULL,  -- module.qualname, or the name given
    version          INTEGER     NOT NULL,  -- the stream version the state is at
    state            JSON        NOT NULL,
    schema_version   INTEGER     NOT NULL,  -- of the reducer's state shape
    taken_at         TIMESTAMPTZ NOT NULL,
    last_occurred_at TIMESTAMPTZ NOT NULL,  -- latest business time folded in
    last_recorded_at TIMESTAMPTZ NOT NULL,  -- latest knowledge time folded in
    PRIMARY KEY (stream_id, reducer, version)
)
"""


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the store's tables if they do not exist yet."""
    con.execute(EVENTS_DDL)
    con.execute(INFO_DDL)
    con.execute(SNAPSHOTS_DDL)
    con.execute(
        "INSERT INTO eventlab_info VALUES ('format_version', $1) ON CONFLICT DO NOTHING",
        [FORMAT_VERSION],
    )


def rows_to_batch(rows) -> pa.RecordBatch:
    """Rows in the RecordedEvent layout (JSON text, epoch microseconds) as one Arrow batch."""
    if not rows:
        return pa.RecordBatch.from_pylist([], schema=ARROW_SCHEMA)
    arrays = []
    # The transpose makes an iterator per row, all alive until the last column is
    # built. A collection meanwhile would move thousands of them to the oldest
    # generation and so bring on a full collection of the whole heap soon after
    # (measured: one per 20 commits of 6,000 events, a fifth of their time).
    with paused_gc():
        for column, field in zip(zip(*rows, strict=True), ARROW_SCHEMA, strict=True):
            size = len(column)
            # One value throughout (no metadata, no correlation id, one clock reading,
            # schema version 1): a C-speed count confirms it (when the ends agree), and
            # Arrow repeats it for a fraction of reading every value.
            first = column[0]
            uniform = column[-1] == first and column.count(first) == size
            if field.name in _NUMERIC:
                dtype = _NUMERIC[field.name]
                # NumPy reads Python ints several times faster than pa.array does.
                values = (
                    np.full(size, first, dtype=dtype)
                    if uniform
                    else np.fromiter(column, dtype=dtype, count=size)
                )
                arrays.append(pa.array(values).view(field.type))
            elif uniform and first is None:
                arrays.append(pa.nulls(size, field.type))
            elif uniform:
                arrays.append(pa.repeat(pa.scalar(first, field.type), size))
            else:
                arrays.append(pa.array(column, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=ARROW_SCHEMA)


_NUMERIC = {
    "position": np.int64,
    "version": np.int32,
    "recorded_at": np.int64,
    "occurred_at": np.int64,
    "schema_version": np.int32,
}
