"""Projections: read models built from events, kept as DuckDB tables.

A :class:`Projection` is Python: handlers ``on_<EventType>(self, event)`` that
upsert and delete rows of its table. A :class:`SqlProjection` is one SQL query
over the ``events`` table, rebuilt inside DuckDB in one vectorised statement.
:class:`~eventlab.ProjectionRunner` feeds them and keeps their checkpoints.

Handlers never write to DuckDB themselves: their changes collect in memory and
are written per batch (grouped into a few set-based statements), which is what
makes catching up over millions of events fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import duckdb
import pyarrow as pa

from .errors import ProjectionError

# Tables of the store itself and of later layers: a read model may not take these names.
RESERVED_NAMES = frozenset({"events", "snapshots", "checkpoints", "commands", "info"})
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_table_name(name: object, what: str) -> str:
    """A read-model name usable as an unquoted DuckDB table name, else ProjectionError."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ProjectionError(
            f"{what} name must be a plain identifier (letters, digits, underscores, not "
            f"starting with a digit), got {name!r}; it becomes the read model's table name"
        )
    if name.lower() in RESERVED_NAMES or name.lower().startswith("asof_"):
        raise ProjectionError(
            f"{what} name {name!r} is taken by the store (reserved: {sorted(RESERVED_NAMES)} "
            f"and the asof_ prefix); choose another name"
        )
    return name


class Projection:
    """A read model fed by events: subclass it and write ``on_<EventType>`` handlers.

    Class attributes
    ----------------
    name : str
        The read model's table name in the store's database.
    schema : dict
        Column name to DuckDB type, e.g. ``{"order_id": "VARCHAR", "total": "DOUBLE"}``.
    key : str or tuple of str, optional
        The primary-key column(s); defaults to the first column of ``schema``.

    Handlers change rows through :meth:`upsert`, :meth:`delete` and read them
    with :meth:`get`. They must depend only on the events (a read model can be
    rebuilt at any time). Event types without a handler are not read at all.

    Examples
    --------
    >>> import eventlab as el
    >>> class OrdersView(el.Projection):
    ...     name = "orders"
    ...     schema = {"order_id": "VARCHAR", "customer": "VARCHAR", "items": "INTEGER"}
    ...
    ...     def on_OrderPlaced(self, event):
    ...         self.upsert(event.stream_id, customer=event.data["customer"], items=0)
    ...
    ...     def on_ItemAdded(self, event):
    ...         self.upsert(event.stream_id, items=self.get(event.stream_id)["items"] + 1)
    >>> store = el.EventStore()
    >>> _ = store.append("order-1", [el.Event("OrderPlaced", {"customer": "c1"}),
    ...                              el.Event("ItemAdded", {"sku": "pen"})])
    >>> runner = el.ProjectionRunner(store, [OrdersView()])
    >>> runner.catch_up()
    2
    >>> store.sql("SELECT * FROM orders")
      order_id customer  items
    0  order-1       c1      1
    """

    name: ClassVar[str]
    schema: ClassVar[Mapping[str, str]]
    key: ClassVar[str | tuple[str, ...] | None] = None

    kind = "python"

    def __init__(self) -> None:
        cls = type(self)
        check_table_name(getattr(cls, "name", None), f"{cls.__name__}.name: projection")
        schema = getattr(cls, "schema", None)
        if not isinstance(schema, Mapping) or not schema:
            raise ProjectionError(
                f"{cls.__name__}.schema must be a non-empty dict of column name to DuckDB "
                f"type, e.g. {{'order_id': 'VARCHAR', 'total': 'DOUBLE'}}"
            )
        for column, sql_type in schema.items():
            check_table_name(column, f"{cls.__name__}.schema column")
            if not isinstance(sql_type, str) or not sql_type.strip():
                raise ProjectionError(
                    f"{cls.__name__}.schema[{column!r}] must be a DuckDB type name such as "
                    f"'VARCHAR' or 'DOUBLE', got {sql_type!r}"
                )
        key = cls.key if cls.key is not None else next(iter(schema))
        self.key_columns: tuple[str, ...] = (key,) if isinstance(key, str) else tuple(key)
        missing = [k for k in self.key_columns if k not in schema]
        if missing or not self.key_columns:
            raise ProjectionError(
                f"{cls.__name__}.key names {missing or 'no'} column(s) of its schema "
                f"{list(schema)}; the key must be one or more schema columns"
            )
        if not self.find_handlers():
            raise ProjectionError(
                f"{cls.__name__} has no handlers; add methods named on_<EventType>(self, event)"
            )

    def find_handlers(self) -> dict[str, Any]:
        """Event type to bound handler, looked up now, so a method fixed on the class
        after the runner started (then ``runner.retry()``) takes effect."""
        cls = type(self)
        return {
            attr[3:]: getattr(self, attr)
            for attr in dir(cls)
            if attr.startswith("on_") and callable(getattr(cls, attr))
        }

    @property
    def types(self) -> list[str]:
        """The event types this projection handles (the only ones it reads)."""
        return sorted(self.find_handlers())

    @property
    def fingerprint(self) -> str:
        """Changes when the table's shape changes, so a stale table is noticed."""
        text = repr((sorted(self.schema.items()), self.key_columns))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def create_table_sql(self, table: str) -> str:
        columns = ", ".join(f'"{c}" {t}' for c, t in self.schema.items())
        keys = ", ".join(f'"{k}"' for k in self.key_columns)
        return f"CREATE TABLE {table} ({columns}, PRIMARY KEY ({keys}))"

    # ------------------------------------------------------------------ handler API

    # While a runner feeds the projection, _bind() shadows these three with the
    # batch's change set itself (see Changes): one call per row change instead of
    # three, which counts over millions of events. These bodies only run outside.

    def upsert(self, key: Any, **columns: Any) -> None:
        """Insert the row with this key, or update the given columns of the existing one.

        Columns not given keep their value (NULL for a new row). A composite key
        is a tuple, in the order of ``key``.
        """
        self._not_running()

    def delete(self, key: Any) -> None:
        """Delete the row with this key (nothing happens if there is none)."""
        self._not_running()

    def get(self, key: Any) -> dict[str, Any] | None:
        """The row with this key as the handlers left it so far, or None."""
        self._not_running()

    def _bind(self, changes: Changes) -> None:
        self.upsert, self.delete, self.get = changes.upsert, changes.delete, changes.get

    def _unbind(self) -> None:
        for name in ("upsert", "delete", "get"):
            self.__dict__.pop(name, None)

    def _not_running(self) -> None:
        raise ProjectionError(
            f"projection {self.name!r} changes rows only while a ProjectionRunner feeds "
            f"it events; call runner.catch_up() instead of calling handlers directly"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, types={self.types})"


class SqlProjection:
    """A read model defined by one SQL query over the ``events`` table.

    The runner rebuilds it inside DuckDB whenever new events have arrived (one
    vectorised statement, no Python per event), and as of any time by running
    the same query over the events known then.

    Parameters
    ----------
    name : str
        The read model's table name.
    sql : str
        A SELECT over ``events`` (columns as in the store; ``data`` is JSON text,
        so use DuckDB's ``data->>'field'``).

    Examples
    --------
    >>> import eventlab as el
    >>> revenue = el.SqlProjection(
    ...     "revenue_per_day",
    ...     "SELECT CAST(occurred_at AS DATE) AS day, sum(CAST(data->>'total' AS DOUBLE)) "
    ...     "AS revenue FROM events WHERE type = 'OrderPaid' GROUP BY day",
    ... )
    """

    kind = "sql"

    def __init__(self, name: str, sql: str):
        self.name = check_table_name(name, "SqlProjection")
        if not isinstance(sql, str) or not sql.strip():
            raise ProjectionError(f"SqlProjection {name!r} needs a SELECT query as sql")
        self.sql = sql.strip().rstrip(";")

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"SqlProjection({self.name!r})"


_UNKNOWN = object()  # a stored row not looked up yet


class Changes:
    """One batch's row changes of one projection, written in a few set-based statements.

    Each key keeps one entry ``[replaced, columns, stored, upserted]``: whether
    the row was deleted first, the columns set since, the stored row once
    :meth:`get` needed it, and whether an upsert (re)creates the row. Writing
    groups the entries by which columns they set, so a batch of any size costs
    one DELETE and one upsert per group. A single-column key is kept as it is,
    a composite one as a tuple.

    ``existing`` (the keys the table holds, when the runner knows them) lets
    :meth:`get` answer "no such row" without a query: a new key costs nothing.
    """

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        table: str,
        projection: Projection,
        existing: set | None = None,
    ):
        self.cursor = cursor
        self.table = table
        self.name = projection.name
        self.key_columns = projection.key_columns
        self.composite = len(self.key_columns) > 1
        self.columns = list(projection.schema)
        self.settable = frozenset(self.columns) - set(self.key_columns)
        self.null_row = dict.fromkeys(self.columns)
        self.entries: dict[Any, list] = {}
        self.existing = existing

    def upsert(self, key: Any, /, **columns: Any) -> None:
        if self.composite:
            key = self._check_key(key)
        if not self.settable.issuperset(columns):
            self._reject(columns)
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = [False, columns, _UNKNOWN, True]
        else:
            entry[1].update(columns)
            entry[3] = True

    def delete(self, key: Any) -> None:
        if self.composite:
            key = self._check_key(key)
        self.entries[key] = [True, {}, None, False]

    def get(self, key: Any) -> dict[str, Any] | None:
        if self.composite:
            key = self._check_key(key)
        entry = self.entries.get(key)
        if entry is None:
            stored = self._stored_row(key)
            if stored is None:
                return None
            self.entries[key] = [False, {}, stored, False]
            return dict(stored)
        replaced, columns, stored, upserted = entry
        if stored is _UNKNOWN:
            stored = entry[2] = self._stored_row(key)
        if not upserted:
            return None if replaced or stored is None else dict(stored)
        row = {**(self.null_row if stored is None else stored), **columns}
        if self.composite:
            row.update(zip(self.key_columns, key, strict=True))
        else:
            row[self.key_columns[0]] = key
        return row

    def _check_key(self, key: Any) -> tuple:
        if not isinstance(key, tuple) or len(key) != len(self.key_columns):
            raise ProjectionError(
                f"projection {self.name!r} has the composite key {self.key_columns}; pass a "
                f"tuple of {len(self.key_columns)} values, got {key!r}"
            )
        return key

    def _stored_row(self, key: Any) -> dict[str, Any] | None:
        if self.existing is not None and key not in self.existing:
            return None
        values = list(key) if self.composite else [key]
        where = " AND ".join(f'"{k}" = ${i}' for i, k in enumerate(self.key_columns, start=1))
        rows = self.cursor.execute(f"SELECT * FROM {self.table} WHERE {where}", values)
        found = rows.fetchall()
        return dict(zip(self.columns, found[0], strict=True)) if found else None

    def _reject(self, columns: dict[str, Any]) -> None:
        unknown = sorted(columns.keys() - self.columns)
        keys = sorted(columns.keys() & set(self.key_columns))
        problem = f"unknown column(s) {unknown}" if unknown else f"key column(s) {keys}"
        raise ProjectionError(
            f"upsert into {self.table!r} got {problem}; pass the key as the first argument "
            f"and only these columns by name: {[c for c in self.columns if c in self.settable]}"
        )

    def write(self) -> int:
        """Apply every collected change to the table; returns the number of keys touched."""
        if not self.entries:
            return 0
        removed = [key for key, entry in self.entries.items() if entry[0]]
        if removed:
            self._delete_keys(removed)
        groups: dict[tuple[str, ...], list[tuple[tuple, dict]]] = {}
        for key, (_, columns, _, upserted) in self.entries.items():
            if upserted:
                groups.setdefault(tuple(sorted(columns)), []).append((key, columns))
        for columns, rows in groups.items():
            self._upsert_rows(columns, rows)
        if self.existing is not None:
            for key, (replaced, _, _, upserted) in self.entries.items():
                if upserted:
                    self.existing.add(key)
                elif replaced:
                    self.existing.discard(key)
        touched = len(self.entries)
        self.entries = {}
        return touched

    def _key_tuples(self, keys: list) -> list[tuple]:
        return keys if self.composite else [(key,) for key in keys]

    def _delete_keys(self, keys: list) -> None:
        staged = _table(self.key_columns, self._key_tuples(keys), ())
        self.cursor.register("_removed_keys", staged)
        try:
            match = " AND ".join(f't."{k}" = r."{k}"' for k in self.key_columns)
            self.cursor.execute(
                f"DELETE FROM {self.table} t WHERE EXISTS "
                f"(SELECT 1 FROM _removed_keys r WHERE {match})"
            )
        finally:
            _unregister(self.cursor, "_removed_keys")

    def _upsert_rows(self, columns: tuple[str, ...], rows: list[tuple[tuple, dict]]) -> None:
        staged = _table(self.key_columns, self._key_tuples([k for k, _ in rows]), columns, rows)
        names = ", ".join(f'"{c}"' for c in (*self.key_columns, *columns))
        keys = ", ".join(f'"{k}"' for k in self.key_columns)
        if columns:
            sets = ", ".join(f'"{c}" = excluded."{c}"' for c in columns)
            conflict = f"ON CONFLICT ({keys}) DO UPDATE SET {sets}"
        else:
            conflict = f"ON CONFLICT ({keys}) DO NOTHING"
        self.cursor.register("_upserted_rows", staged)
        try:
            self.cursor.execute(
                f"INSERT INTO {self.table} ({names}) SELECT {names} FROM _upserted_rows {conflict}"
            )
        finally:
            _unregister(self.cursor, "_upserted_rows")


def _unregister(cursor: duckdb.DuckDBPyConnection, name: str) -> None:
    # After a failed statement the transaction is aborted and unregistering fails
    # too; that must not hide the real error. A later register() replaces the name.
    with contextlib.suppress(duckdb.Error):
        cursor.unregister(name)


def _table(
    key_columns: tuple[str, ...],
    keys: list[tuple],
    columns: Iterable[str],
    rows: list[tuple[tuple, dict]] = (),
) -> pa.Table:
    """Keys and column values as an Arrow table (DuckDB casts to the table's types)."""
    arrays = {name: [key[i] for key in keys] for i, name in enumerate(key_columns)}
    for column in columns:
        arrays[column] = [values[column] for _, values in rows]
    return pa.table({name: _array(values, name) for name, values in arrays.items()})


def _array(values: list, column: str) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        # Mixed Python types in one column (e.g. 1 and "a"): no single Arrow type.
        raise ProjectionError(
            f"the values written to column {column!r} do not share one type ({exc}); "
            f"write values of the column's declared type"
        ) from None


def projection_of(item: Any) -> Projection | SqlProjection:
    """Accept a projection instance, or a Projection subclass to instantiate."""
    if isinstance(item, type) and issubclass(item, Projection):
        return item()
    if isinstance(item, (Projection, SqlProjection)):
        return item
    raise ProjectionError(
        f"expected an el.Projection (instance or subclass) or an el.SqlProjection, got {item!r}"
    )


def events_cte(bounds: str) -> str:
    """A CTE named ``events`` over the log with extra WHERE bounds; it shadows the table."""
    return f"WITH events AS (SELECT * FROM main.events WHERE true{bounds}) "


def build_sql_table(
    cursor: duckdb.DuckDBPyConnection,
    projection: SqlProjection,
    table: str,
    bounds: str,
    params: list[Any] | None = None,
) -> None:
    """(Re)create ``table`` from the projection's query over the events within ``bounds``."""
    cursor.execute(
        f"CREATE OR REPLACE TABLE {table} AS {events_cte(bounds)}SELECT * FROM ({projection.sql})",
        params,
    )


def apply_events(
    projection: Projection,
    cursor: duckdb.DuckDBPyConnection,
    records: list,
    table: str | None = None,
    existing: set[tuple] | None = None,
) -> tuple[int | None, str] | None:
    """Feed records to the handlers, then write their changes.

    ``existing`` (the table's keys) is kept up to date on success. Returns
    None on success, ``(index, error)`` when the handler of
    ``records[index]`` raised, or ``(None, error)`` when writing failed.
    """
    changes = Changes(cursor, table or f"main.{projection.name}", projection, existing)
    projection._bind(changes)
    handlers = projection.find_handlers()  # looked up per batch: a fixed method counts
    try:
        for index, record in enumerate(records):
            try:
                handlers[record.type](record)
            except Exception as exc:  # noqa: BLE001 - a failing handler stops only its projection
                return index, f"{type(exc).__name__}: {exc}"
        try:
            changes.write()
        except (duckdb.Error, ProjectionError, pa.ArrowException) as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return None
    finally:
        projection._unbind()


# Above this many rows a read model's keys are not held in memory; get() then asks
# DuckDB for every key it has not seen in the batch.
MAX_KEYS_IN_MEMORY = 2_000_000


def stored_keys(cursor: duckdb.DuckDBPyConnection, projection: Projection) -> set[tuple] | None:
    """The keys a projection's table holds, so get() knows a new key without a query."""
    table = f"main.{projection.name}"
    if cursor.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] > MAX_KEYS_IN_MEMORY:
        return None
    keys = ", ".join(f'"{k}"' for k in projection.key_columns)
    rows = cursor.execute(f"SELECT {keys} FROM {table}").fetchall()
    # Kept as Changes keeps keys: a single-column key as it is, a composite one as a tuple.
    return set(rows) if len(projection.key_columns) > 1 else {row[0] for row in rows}
