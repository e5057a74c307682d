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
import datetime
import hashlib
import re
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter, call, itemgetter, length_hint
from typing import Any, ClassVar

import duckdb
import pyarrow as pa

from .errors import ProjectionError
from .event_views import ViewBatch

# Tables of the store itself and of later layers: a read model may not take these names.
RESERVED_NAMES = frozenset({"events", "snapshots", "checkpoints", "commands", "info"})
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A column type as it goes into CREATE TABLE: a type name with optional arguments,
# fields and array brackets (DECIMAL(10, 2), STRUCT(a INTEGER), VARCHAR[]), but no
# comma, quote or semicolon outside them, which would add columns or statements.
# Whether DuckDB knows the type is checked by the runner, which has a connection.
_TYPE_NAME = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_ ]*(\([A-Za-z0-9_ ,()\[\]]*\))?(\[\d*\])*\s*$")

# Column types whose values DuckDB returns as exactly these Python types, so a key a
# handler gives can be looked up in the set of stored keys (see stored_keys), and a
# value it gives is what DuckDB will give back (see Changes._carried_row).
# A key of any other Python type (a str for a DATE column, a float for an INTEGER
# one) is looked up in DuckDB instead, which casts it as the write will.
_KEY_TYPES: dict[str, type] = {
    **dict.fromkeys("VARCHAR TEXT STRING CHAR BPCHAR".split(), str),
    **dict.fromkeys(
        "TINYINT SMALLINT INTEGER INT BIGINT HUGEINT UTINYINT USMALLINT UINTEGER UBIGINT "
        "UHUGEINT INT1 INT2 INT4 INT8 LONG SHORT SIGNED".split(),
        int,
    ),
    **dict.fromkeys("BOOLEAN BOOL LOGICAL".split(), bool),
    **dict.fromkeys("DOUBLE FLOAT8".split(), float),
    "DATE": datetime.date,
    "UUID": uuid.UUID,
}


def key_python_types(
    schema: Mapping[str, str], key_columns: tuple[str, ...]
) -> tuple[type, ...] | None:
    """The Python type DuckDB gives the values of each key column, or None if one has none."""
    types = tuple(python_type(schema[k]) for k in key_columns)
    return None if None in types else types  # type: ignore[return-value]


def python_type(sql_type: str) -> type | None:
    """The one Python type DuckDB gives the values of a column of ``sql_type``, if any."""
    return _KEY_TYPES.get(sql_type.strip().upper())


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
            if not isinstance(sql_type, str) or not _TYPE_NAME.match(sql_type):
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
        if len(set(self.key_columns)) != len(self.key_columns):
            raise ProjectionError(
                f"{cls.__name__}.key names a column twice ({self.key_columns}); "
                f"list each key column once"
            )
        #: The Python type of each key column's stored values, or None when some
        #: key column's values do not come back from DuckDB as a plain Python type.
        self.key_types: tuple[type, ...] | None = key_python_types(schema, self.key_columns)
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

    Each key the batch touches has an entry ``[base, written]``:

    - ``base`` is the key's row before the batch, as far as the handlers needed
      to know: the stored row once :meth:`get` asked for it, ``_UNKNOWN``
      before that, the all-NULL row when the batch creates the row, or None
      when there is no row;
    - ``written`` is the dict of columns to write (key columns included), or
      None when the batch writes nothing for the key.

    :meth:`get` answers ``{**base, **written}``; :meth:`upsert` updates
    ``written`` in place. Keys deleted in the batch are in ``removed``: their
    stored rows are deleted first, then what was upserted after the delete is
    inserted afresh. Only the columns a handler set are written: the others keep
    their stored value (or the column's default in a new row).

    Writing groups the rows by which columns they set, so a batch of any size
    costs one DELETE and one statement per group: a plain INSERT (cheaper) for
    rows the table cannot hold yet, an upsert for the others. A single-column key
    is kept as it is, a composite one as a tuple.

    ``existing`` (the keys the table holds, when the runner knows them) lets
    :meth:`get` and :meth:`upsert` know a new key without a query. It answers
    only for keys of the Python type DuckDB returns for the key column (see
    ``Projection.key_types``): a ``'2024-05-01'`` given for a DATE key, or a
    ``'5'`` for an INTEGER one, is looked up in DuckDB, which casts it as the
    write does. ``upserts_only=True`` writes every row as an upsert, which the
    runner uses to retry a batch whose write failed.

    ``previous`` is the batch before, while its statements (:meth:`plan`) still
    run on another thread: a key it touched is answered from its entries, where
    they tell what DuckDB will hold (see :meth:`_carried_row`), and otherwise
    from DuckDB once ``before_query`` has waited for that write. :meth:`write`
    is :meth:`plan`, its statements run here, then :meth:`settle`.

    The handler API (``upsert``, ``delete``, ``get``) is made of closures over
    the batch's state rather than methods: a handler calls them once or twice
    per event, and reading locals instead of attributes makes each call about
    twice as fast.
    """

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        table: str,
        projection: Projection,
        existing: set | None = None,
        *,
        upserts_only: bool = False,
        previous: Changes | None = None,
        before_query: Callable[[], None] | None = None,
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
        self.removed: set = set()
        # Without a Python type per key column the stored keys cannot answer for a key.
        self.key_types = projection.key_types
        self.existing = existing if self.key_types is not None else None
        self.upserts_only = upserts_only
        # The batch before, while its write is still running (see the runner): the rows
        # it leaves are known from its entries, so the handlers need not wait for it.
        self.carried = previous.entries if previous is not None else None
        # Called before any query: waits for that write, whose transaction holds the cursor.
        self.before_query = before_query
        self.column_types = {c: python_type(t) for c, t in projection.schema.items()}
        self.upsert, self.delete, self.get = self._handler_api()

    def _handler_api(self) -> tuple[Callable, Callable, Callable]:
        entries, removed, existing = self.entries, self.removed, self.existing
        settable, null_row, stored_row = self.settable, self.null_row, self._stored_row
        check_key, key_columns = self._check_key, self.key_columns
        composite, key_column = self.composite, self.key_columns[0]
        reject, is_new = self._reject, self._is_new
        key_type = None if self.key_types is None else self.key_types[0]
        carried, carried_row = self.carried, self._carried_row
        width = len(null_row)

        def upsert(key: Any, /, **columns: Any) -> None:
            if composite:
                key = check_key(key)
            if not settable.issuperset(columns):
                reject(columns)
            entry = entries.get(key)
            if entry is not None:
                written = entry[1]
                if written is not None:  # the usual case: a row this batch writes already
                    written.update(columns)
                    return
            # ``columns`` is this call's own kwargs dict: it becomes the written row.
            if composite:
                columns.update(zip(key_columns, key, strict=True))
            else:
                columns[key_column] = key
            if entry is None:
                if carried is not None and (before := carried.get(key)) is not None:
                    base = carried_row(before)  # the row the batch before leaves
                    entries[key] = [null_row if base is None else base, columns]
                    return
                if composite:
                    new = is_new(key)
                else:  # inline: the usual single-column key, once per key and batch
                    new = existing is not None and key.__class__ is key_type and key not in existing
                entries[key] = [null_row if new else _UNKNOWN, columns]
            else:  # read or deleted earlier in the batch
                entry[1] = columns
                if entry[0] is None:
                    entry[0] = null_row

        def delete(key: Any) -> None:
            if composite:
                key = check_key(key)
            entries[key] = [None, None]
            removed.add(key)

        def get(key: Any) -> dict[str, Any] | None:
            if composite:
                key = check_key(key)
            entry = entries.get(key)
            if entry is None:
                if carried is not None and (before := carried.get(key)) is not None:
                    stored = carried_row(before)
                    if stored is _UNKNOWN:
                        stored = stored_row(key)
                else:
                    stored = stored_row(key)
                if stored is None:
                    return None
                entries[key] = [stored, None]
                return dict(stored)
            base, written = entry
            if base is _UNKNOWN:
                base = entry[0] = stored_row(key)
                if base is None:  # the batch's upserts create the row
                    base = entry[0] = null_row
            if written is None:
                return None if base is None else dict(base)
            if base is null_row:
                # A new row is what its upserts wrote: make that every column once,
                # then each get copies one dict instead of merging two.
                if len(written) != width:
                    written = entry[1] = {**null_row, **written}
                return written.copy()
            return {**base, **written}

        return upsert, delete, get

    def _check_key(self, key: Any) -> tuple:
        if not isinstance(key, tuple) or len(key) != len(self.key_columns):
            raise ProjectionError(
                f"projection {self.name!r} has the composite key {self.key_columns}; pass a "
                f"tuple of {len(self.key_columns)} values, got {key!r}"
            )
        return key

    def _is_new(self, key: Any) -> bool:
        """True when the stored keys show that the table has no row for ``key``."""
        existing = self.existing
        if existing is None or key in existing:
            return False
        if self.composite:
            return tuple(map(type, key)) == self.key_types
        return key.__class__ is self.key_types[0]  # type: ignore[index]

    def _carried_row(self, entry: list) -> dict[str, Any] | None | object:
        """The row that the batch before leaves for a key it touched (its ``entry``):
        a dict, None for no row, or ``_UNKNOWN`` when only DuckDB can tell.

        A value a handler gave is taken as what DuckDB will give back only when it
        has the Python type DuckDB returns for its column (a str for VARCHAR, a float
        for DOUBLE...): an int given for a DOUBLE column comes back as a float.
        """
        base, written = entry
        if base is _UNKNOWN or written is None:
            return base
        types = self.column_types
        for name, value in written.items():
            if value is not None and value.__class__ is not types[name]:
                return _UNKNOWN
        return {**base, **written}

    def _stored_row(self, key: Any) -> dict[str, Any] | None:
        carried = self.carried
        if (carried is None or key not in carried) and self._is_new(key):
            return None
        if self.before_query is not None:
            self.before_query()
        values = list(key) if self.composite else [key]
        where = " AND ".join(f'"{k}" = ${i}' for i, k in enumerate(self.key_columns, start=1))
        # Columns by name: a table made for an earlier order of the schema still fits.
        columns = ", ".join(f'"{c}"' for c in self.columns)
        rows = self.cursor.execute(f"SELECT {columns} FROM {self.table} WHERE {where}", values)
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

    # ------------------------------------------------------------------ writing

    def write(self) -> int:
        """Apply every collected change to the table; returns the number of keys touched."""
        run_steps(self.cursor, self.plan())
        return self.settle()

    def plan(self) -> list[Step]:
        """The statements that apply every collected change, in order; none runs yet.

        Raises ProjectionError, or an Arrow error, for changes that cannot be written.
        """
        entries = self.entries
        steps: list[Step] = []
        if not entries:
            return steps
        # Keys of one column in two Python types (5 and "5") are two entries here but
        # may be one row in the table: only event by event (the runner's fallback when
        # a batch fails to write) gives the right rows.
        composite = self.composite
        kinds = {tuple(map(type, k)) for k in entries} if composite else set(map(type, entries))
        if len(kinds) > 1:
            raise ProjectionError(
                f"the keys of {self.table!r} in one batch mix Python types "
                f"({sorted(map(str, kinds))}); give each key in one type"
            )
        if self.removed:
            self._plan_delete(list(self.removed), steps)
        # Rows whose handlers took the same path set the same columns in the same
        # order: grouping by that order needs no sorting and stays a few groups.
        # A row built on the all-NULL row is not in the table (any stored one was
        # deleted first): a plain INSERT, cheaper than an upsert, writes it.
        groups: dict[tuple[bool, tuple[str, ...]], list[dict[str, Any]]] = {}
        null_row = self.null_row
        for base, written in entries.values():
            if written is not None:
                group = groups.get(names := (base is null_row, tuple(written)))
                if group is None:
                    groups[names] = [written]
                else:
                    group.append(written)
        for (new, names), rows in groups.items():
            self._plan_rows(names, rows, self.upserts_only or not new, steps)
        return steps

    def settle(self) -> int:
        """Once the statements of :meth:`plan` have committed: note the keys stored now,
        and empty the changes. Returns the number of keys touched."""
        entries = self.entries
        if self.existing is not None:
            # Every key touched now has a row, but those deleted and not upserted again.
            self.existing.update(entries)
            self.existing.difference_update([k for k in self.removed if entries[k][1] is None])
        touched = len(entries)
        # Emptied in place: the handler API's closures hold these very objects.
        entries.clear()
        self.removed.clear()
        return touched

    def _plan_delete(self, keys: list, steps: list[Step]) -> None:
        tuples = keys if self.composite else [(key,) for key in keys]
        try:
            staged = pa.table(
                {name: pa.array([k[i] for k in tuples]) for i, name in enumerate(self.key_columns)}
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Keys of different Python types (5 and "6"): delete each kind apart, as
            # _plan_rows writes them.
            by_types: dict[tuple[type, ...], list] = {}
            for key, values in zip(keys, tuples, strict=True):
                by_types.setdefault(tuple(map(type, values)), []).append(key)
            if len(by_types) == 1:
                for i, name in enumerate(self.key_columns):
                    _array([k[i] for k in tuples], name)
                raise
            for part in by_types.values():
                self._plan_delete(part, steps)
            return
        match = " AND ".join(f't."{k}" = r."{k}"' for k in self.key_columns)
        name = f"_removed_keys_{len(steps)}"  # one name per statement: see write_behind
        sql = f"DELETE FROM {self.table} t WHERE EXISTS (SELECT 1 FROM {name} r WHERE {match})"
        steps.append((sql, None, name, staged))

    def _plan_rows(
        self, names: tuple[str, ...], rows: list[dict], upsert: bool, steps: list[Step]
    ) -> None:
        try:
            staged = pa.table({name: pa.array(list(map(itemgetter(name), rows))) for name in names})
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Values of different Python types in one column (123 and "A-1"), which
            # DuckDB casts to the column's type one by one: write each kind apart.
            by_types: dict[tuple[type, ...], list[dict]] = {}
            for row in rows:
                by_types.setdefault(tuple(type(row[name]) for name in names), []).append(row)
            if len(by_types) == 1:  # one kind of values that Arrow still refuses
                for name in names:
                    _array([row[name] for row in rows], name)
                raise
            for part in by_types.values():
                self._plan_rows(names, part, upsert, steps)
            return
        quoted = ", ".join(f'"{c}"' for c in names)
        conflict = ""
        if upsert:
            keys = ", ".join(f'"{k}"' for k in self.key_columns)
            sets = ", ".join(f'"{c}" = excluded."{c}"' for c in names if c not in self.key_columns)
            action = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
            conflict = f" ON CONFLICT ({keys}) {action}"
        name = f"_written_rows_{len(steps)}"
        sql = f"INSERT INTO {self.table} ({quoted}) SELECT {quoted} FROM {name}{conflict}"
        steps.append((sql, None, name, staged))


# One statement of a batch's write: (SQL, its parameters, and the name under which it
# reads an Arrow table, with that table; or None, None).
Step = tuple[str, list | None, str | None, pa.Table | None]


def run_steps(cursor: duckdb.DuckDBPyConnection, steps: list[Step]) -> None:
    """Run a write's statements in order on ``cursor``."""
    for sql, params, name, table in steps:
        if table is None:
            cursor.execute(sql, params)
            continue
        cursor.register(name, table)
        try:
            cursor.execute(sql, params)
        finally:
            unregister(cursor, name)


def unregister(cursor: duckdb.DuckDBPyConnection, name: str) -> None:
    """Unregister an Arrow table, quietly if the connection refuses."""
    # After a failed statement the transaction is aborted and unregistering fails
    # too; that must not hide the real error. A later register() replaces the name.
    with contextlib.suppress(duckdb.Error):
        cursor.unregister(name)


def _array(values: list, column: str) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        # E.g. an int beyond 64 bits, or a list whose items mix types: no Arrow type holds it.
        raise ProjectionError(
            f"a value written to column {column!r} cannot be stored ({exc}); "
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
    *,
    upserts_only: bool = False,
) -> tuple[int | None, str] | None:
    """Feed records to the handlers, then write their changes.

    ``existing`` (the table's keys) is kept up to date on success. Returns
    None on success, ``(index, error)`` when the handler of
    ``records[index]`` raised, or ``(None, error)`` when writing failed.
    ``upserts_only`` is passed on to :class:`Changes`.
    """
    table = table or f"main.{projection.name}"
    changes = Changes(cursor, table, projection, existing, upserts_only=upserts_only)
    failed = feed(projection, changes, records)
    if failed is not None:
        return failed
    try:
        changes.write()
    except (duckdb.Error, ProjectionError, pa.ArrowException) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return None


def feed(projection: Projection, changes: Changes, records: Sequence) -> tuple[int, str] | None:
    """Run the handlers of ``projection`` over ``records``, collecting their row changes
    in ``changes``; returns ``(index, error)`` when the handler of ``records[index]``
    raised, else None."""
    handlers = projection.find_handlers()  # looked up per batch: a fixed method counts
    batch = isinstance(records, ViewBatch)
    types = records.types if batch else list(map(_type, records))
    for unhandled in set(types) - handlers.keys():  # the method was removed meanwhile
        handlers[unhandled] = _no_handler(unhandled)
    calls = list(map(handlers.__getitem__, types))
    projection._bind(changes)
    try:
        # ``counted`` knows how many events were not pulled yet (see ViewBatch).
        pending, counted = records.counted_views() if batch else (iter(records),) * 2
        try:
            # The loop runs in C (map pulls a handler, then its event, and calls one
            # with the other); a failing event's index is what is not pulled yet.
            deque(map(call, calls, pending), maxlen=0)
        except Exception as exc:  # noqa: BLE001 - a failing handler stops only its projection
            return len(records) - length_hint(counted) - 1, f"{type(exc).__name__}: {exc}"
        return None
    finally:
        projection._unbind()


_type = attrgetter("type")


def _no_handler(event_type: str) -> Callable[[Any], None]:
    def fail(event: Any) -> None:
        raise KeyError(event_type)

    return fail


# Above this many rows a read model's keys are not held in memory; get() then asks
# DuckDB for every key it has not seen in the batch.
MAX_KEYS_IN_MEMORY = 2_000_000


def stored_keys(cursor: duckdb.DuckDBPyConnection, projection: Projection) -> set[tuple] | None:
    """The keys a projection's table holds, so get() knows a new key without a query.

    None when the table is too big to hold them in memory, or when a key column's
    values have no plain Python type to compare a handler's key with.
    """
    if projection.key_types is None:
        return None
    table = f"main.{projection.name}"
    if cursor.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] > MAX_KEYS_IN_MEMORY:
        return None
    keys = ", ".join(f'"{k}"' for k in projection.key_columns)
    rows = cursor.execute(f"SELECT {keys} FROM {table}").fetchall()
    # Kept as Changes keeps keys: a single-column key as it is, a composite one as a tuple.
    return set(rows) if len(projection.key_columns) > 1 else {row[0] for row in rows}
