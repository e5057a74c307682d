"""Read models as of a past time, each set in a schema of its own (``asof_<label>``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from .checkpoints import transaction
from .clock import to_utc
from .errors import ProjectionError
from .event_views import view_batches
from .projections import (
    Projection,
    SqlProjection,
    apply_events,
    build_sql_table,
    events_cte,
)
from .reading import read_query, upper_bounds
from .schema import SELECT_RECORD

if TYPE_CHECKING:
    import duckdb

    from .store import EventStore


def as_of_label(at: datetime | str | None, known_at: datetime | str | None) -> str:
    """A schema-safe label from the times, e.g. ``at_20261126_120000``."""
    parts = []
    for prefix, value in (("at", at), ("known", known_at)):
        if value is not None:
            parts.append(f"{prefix}_{to_utc(value):%Y%m%d_%H%M%S}")
    return "_".join(parts) or "now"


_LABEL = re.compile(r"^asof_[A-Za-z0-9_]+$")


class ReadModelsAsOf:
    """Every read model of a runner as it was at a time, in schema ``asof_<label>``.

    Unqualified table names in :meth:`sql` resolve to this schema first, so the
    queries written for today's read models run unchanged against the past.
    """

    def __init__(
        self,
        store: EventStore,
        schema: str,
        *,
        at: datetime | str | None,
        known_at: datetime | str | None,
    ):
        if not _LABEL.match(schema):
            raise ProjectionError(
                f"label must use only letters, digits and underscores, got {schema[5:]!r}"
            )
        self.store = store
        self.schema = schema
        self.at = None if at is None else to_utc(at)
        self.known_at = None if known_at is None else to_utc(known_at)
        self.tables: list[str] = []

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run a read-only query with this schema's tables first on the search path."""
        cursor = self.store._cursor()
        cursor.execute(f"SET search_path = '{self.schema},main'")
        return read_query(cursor, query, params)

    def table(self, name: str) -> pd.DataFrame:
        """One read model, whole, as it was."""
        if name not in self.tables:
            raise ProjectionError(
                f"no read model named {name!r} as of this time; there are {self.tables}"
            )
        return self.store._cursor().execute(f"SELECT * FROM {self.schema}.{name}").df()

    def drop(self) -> None:
        """Remove this schema and its tables from the database."""
        self.store._cursor().execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.tables = []

    def __repr__(self) -> str:
        times = ", ".join(
            f"{name}={value.isoformat()}"
            for name, value in (("at", self.at), ("known_at", self.known_at))
            if value is not None
        )
        return f"ReadModelsAsOf({self.schema!r}, {times or 'now'}, tables={self.tables})"


def build_as_of(
    store: EventStore,
    projections: Mapping[str, Projection | SqlProjection],
    *,
    at: datetime | str | None,
    known_at: datetime | str | None,
    label: str | None,
    batch_size: int,
) -> ReadModelsAsOf:
    """Build every projection's read model from the events within the time bounds,
    into schema ``asof_<label>``, in one transaction (see ProjectionRunner.as_of)."""
    params: list[Any] = []
    bounds = upper_bounds(params, occurred_at=at, recorded_at=known_at)
    schema = "asof_" + (label if label is not None else as_of_label(at, known_at))
    view = ReadModelsAsOf(store, schema, at=at, known_at=known_at)
    cursor = store._cursor()
    with transaction(cursor):
        cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        cursor.execute(f"CREATE SCHEMA {schema}")
        for name, projection in projections.items():
            table = f"{schema}.{name}"
            if isinstance(projection, SqlProjection):
                build_sql_table(cursor, projection, table, bounds, params)
            else:
                _build_python(store, projection, cursor, table, bounds, params, batch_size)
    view.tables = list(projections)
    return view


def _build_python(
    store: EventStore,
    projection: Projection,
    cursor: duckdb.DuckDBPyConnection,
    table: str,
    bounds: str,
    params: list[Any],
    batch_size: int,
) -> None:
    cursor.execute(projection.create_table_sql(table))
    types = ", ".join(f"'{t}'" for t in projection.types)
    sql = (
        events_cte(bounds)
        + SELECT_RECORD.format(src="events")
        + f" WHERE type IN ({types}) ORDER BY position"
    )
    reader = store._cursor().sql(sql, params=params).to_arrow_reader(batch_size)
    existing: set = set()  # a new table
    for records in view_batches(reader):
        # Upserts only: one transaction holds the whole build, so a failed plain
        # INSERT (see Changes) could not be retried.
        failed = apply_events(projection, cursor, records, table, existing, upserts_only=True)
        if failed is not None:
            index, error = failed
            where = "" if index is None else f" at position {records[index].position}"
            raise ProjectionError(
                f"projection {projection.name!r} failed{where} while building it as of "
                f"that time: {error}; fix the handler and call as_of() again"
            )
