"""Importing XES event logs: each trace a stream, each event an event.

An event's ``concept:name`` becomes its type and its ``time:timestamp`` (UTC)
its business time ``occurred_at``; every other attribute of the event goes
into ``data`` with its type kept (string, int, float, boolean; dates as UTC ISO
text), ``lifecycle:transition`` included. The trace's ``concept:name`` is the
stream id and its other attributes go into every event's ``metadata``.

Reading happens in two layers. :mod:`eventlab.xes_fast` reads the XES that
process-mining tools write with NumPy over the bytes, many times faster than
an XML parser calling Python for every element; when it meets anything else
(nested attributes, a DTD, another encoding, or a file that is not well-formed)
it gives up and :mod:`eventlab.xes_general` reads the file with expat, which
handles any XES and names the line of every problem. Both give a
:class:`~eventlab.xes_log.ParsedLog`; DuckDB turns it into one Arrow table of
events, appended in one transaction, so a bad file writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
from tqdm.auto import tqdm

from . import xes_fast, xes_general
from .ingest import ingest
from .xes_events import NeedLines, assemble
from .xes_log import Source

if TYPE_CHECKING:
    from .store import EventStore


def import_xes(store: EventStore, path: str | Path, *, progress: bool = False) -> int:
    """Append the events of an XES file; see :meth:`EventStore.import_xes`."""
    store._check_writable()
    table = read_xes(path, progress=progress)
    return ingest(store, table, what="event")


def read_xes(path: str | Path, *, progress: bool = False) -> pa.Table:
    """The events of an XES file as an Arrow table ready for ``append_frame``.

    Columns: ``stream_id``, ``type``, ``occurred_at`` (UTC), ``data`` and
    ``metadata`` (JSON text), one row per event in file order.
    """
    name = Path(path).name
    with tqdm(
        total=None, unit="B", unit_scale=True, desc=f"reading {name}", disable=not progress
    ) as bar:
        source = Source(path, bar if progress else None)
        bar.total = source.size
        try:
            parsed = xes_fast.read(source)
        except xes_fast.NotFast:
            bar.reset(total=source.size)
            parsed = xes_general.read(source)
        try:
            return assemble(parsed)
        except NeedLines:
            # The fast reader does not count lines; the general one names the bad value's.
            bar.reset(total=source.size)
            return assemble(xes_general.read(source))
