"""Where each stream's events lie in the log, so one stream is read without a full scan.

There is no index on ``events.stream_id``: maintaining one would cost bulk
appends about a third of their speed. DuckDB's min/max statistics on
``position`` (always in insertion order) skip row groups very well, though,
when a query bounds the position. This map gives those bounds: the first and
last position of every stream up to the head it was built at. The log is
append-only, so the map never goes stale; events after its head are found with
``position > head``.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import duckdb

# Below this many events a scan is fast anyway, and the map would not pay for itself.
MIN_EVENTS = 500_000


class StreamPositions:
    """The first and last position of each stream, for the events up to ``head``.

    Built with one grouped scan (about 0.1 s per million events). Stream ids
    are kept as one sorted Arrow string array and looked up by bisection, and
    the positions as Arrow int64 arrays: about 30 bytes per stream.
    """

    def __init__(self, cursor: duckdb.DuckDBPyConnection, head: int):
        table = cursor.sql(
            "SELECT stream_id, min(position) AS first, max(position) AS last FROM events "
            f"WHERE position <= {int(head)} GROUP BY stream_id ORDER BY stream_id"
        ).to_arrow_table()
        self.head = head
        self._ids: pa.Array = table["stream_id"].combine_chunks()
        self._first = table["first"].combine_chunks()
        self._last = table["last"].combine_chunks()
        self._keys = _SortedStrings(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def bounds(self, stream_id: str) -> tuple[int, int] | None:
        """The stream's first and last position up to ``head``, or None if it had none."""
        index = bisect.bisect_left(self._keys, stream_id)
        if index < len(self._ids) and self._ids[index].as_py() == stream_id:
            return self._first[index].as_py(), self._last[index].as_py()
        return None

    def sql(self, stream_id: str, params: list[Any]) -> str:
        """An ``AND (...)`` clause bounding the position of the stream's events."""
        bounds = self.bounds(stream_id)
        params.append(self.head)
        later = f"position > ${len(params)}"
        if bounds is None:
            return f" AND {later}"
        params.extend(bounds)
        return f" AND (position BETWEEN ${len(params) - 1} AND ${len(params)} OR {later})"


class _SortedStrings:
    """A sorted Arrow string array seen as a Python sequence, for :mod:`bisect`.

    DuckDB orders VARCHAR by bytes, which for UTF-8 is code-point order: the
    order Python compares str in.
    """

    def __init__(self, values: pa.Array):
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, index: int) -> str:
        return self._values[index].as_py()


def should_map(head: int) -> bool:
    """Whether a store of ``head`` events is worth a position map."""
    return head >= MIN_EVENTS
