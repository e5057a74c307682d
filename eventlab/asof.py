"""Read models as of a past time, each set in a schema of its own (``asof_<label>``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from .clock import to_utc
from .errors import ProjectionError
from .reading import read_query

if TYPE_CHECKING:
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
