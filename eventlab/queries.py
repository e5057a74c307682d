"""The query side: named query handlers over the read models, with cached views.

A handler receives a :class:`QueryContext` (SQL over the query store) and the
query's parameters. Results are cached by (query, parameters) and stay valid
until a table they read changes: a projection's read model advancing, or new
events when the query reads the ``events`` table directly.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd

from .checkpoints import FAILED, read_models
from .errors import ConsistencyTimeout, ProjectionError, QueryError
from .runner import ProjectionRunner

if TYPE_CHECKING:
    from .store import EventStore

CONSISTENCY = ("eventual", "strong")
_PLACEHOLDER = re.compile(r"\$\w+|\?")


def _split_name(name: str) -> list[str]:
    """``a."b.c"`` -> ``['a', 'b.c']``: the parts of a (possibly quoted) qualified name."""
    parts: list[str] = []
    part: list[str] = []
    quoted = False
    i = 0
    while i < len(name):
        char = name[i]
        if char == '"':
            if quoted and name[i + 1 : i + 2] == '"':  # "" inside quotes is one "
                part.append('"')
                i += 1
            else:
                quoted = not quoted
        elif char == "." and not quoted:
            parts.append("".join(part))
            part = []
        else:
            part.append(char)
        i += 1
    parts.append("".join(part))
    return parts


def _table_key(name: str, catalog: str | None = None) -> str:
    """The key a table is tracked under: lower case (DuckDB identifiers are
    case-insensitive), ``main.x`` and ``<catalog>.main.x`` as plain ``x``, any other
    schema kept (``asof_snap.orders``), so a read model and its as-of copy differ."""
    parts = [part.lower() for part in _split_name(name)]
    mains = ("main",) if catalog is None else ("main", catalog.lower())
    if len(parts) == 3 and parts[0] in mains[1:] and parts[1] == "main":
        return parts[2]
    if len(parts) == 2 and parts[0] in mains:
        return parts[1]
    return ".".join(parts)


class QueryContext:
    """What a query handler reads through: SQL over the store's tables and read models.

    It notes the tables each query reads, so cached results know what
    invalidates them.
    """

    def __init__(self, store: EventStore, *, catalog: str):
        self.store = store
        self.tables: set[str] = set()
        self.tables_known = True  # False once a query's tables could not be worked out
        self._catalog = catalog  # the store's database name: main.x and <catalog>.main.x are x

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run a read-only query and return a DataFrame (``$name`` parameters from a dict)."""
        try:
            # The table-name parser refuses placeholders; values never name tables.
            # Qualified names: asof_x.orders is not the live orders read model.
            names = duckdb.get_table_names(_PLACEHOLDER.sub("NULL", query), qualified=True)
            self.tables |= {_table_key(name, self._catalog) for name in names}
        except duckdb.Error:
            self.tables_known = False  # store.sql() below reports a real parse error
        return self.store.sql(query, params)

    def value(self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Any:
        """Run a read-only query that returns one value (first row, first column)."""
        frame = self.sql(query, params)
        return None if frame.empty else frame.iat[0, 0]


@dataclass
class _Handler:
    name: str
    func: Callable[..., Any]
    reads: frozenset[str] | None
    cache: bool
    signature: inspect.Signature
    learned_reads: frozenset[str] | None = None  # from the last run, when not declared
    hits: int = 0
    misses: int = 0
    invalidations: int = 0
    run_seconds: list[float] = field(default_factory=list)

    def reads_now(self) -> frozenset[str] | None:
        return self.reads if self.reads is not None else self.learned_reads


@dataclass
class _Entry:
    value: Any
    versions: tuple[tuple[str, int], ...]


class QueryBus:
    """Named queries answered from the query store, with a cache of their results.

    Parameters
    ----------
    store : EventStore
        Its read models (tables made by projections) and events are what the
        handlers query.
    runner : ProjectionRunner, optional
        Catches projections up for ``consistency="strong"``; defaults to the
        runner(s) created for this store.
    cache_size : int
        The most results kept (least recently used ones go first).

    Examples
    --------
    >>> import eventlab as el
    >>> store = el.EventStore()
    >>> _ = store.append("order-1", [el.Event("OrderPlaced", {"customer": "c1"})])
    >>> queries = el.QueryBus(store)
    >>> @queries.handler("OrderCount")
    ... def order_count(q, customer):
    ...     return q.value("SELECT count(*) FROM events WHERE data->>'customer' = $c",
    ...                    {"c": customer})
    >>> int(queries.ask("OrderCount", customer="c1"))
    1
    """

    def __init__(
        self,
        store: EventStore,
        *,
        runner: ProjectionRunner | None = None,
        cache_size: int = 1024,
    ):
        if runner is not None and not isinstance(runner, ProjectionRunner):
            raise QueryError(f"runner must be an el.ProjectionRunner, got {runner!r}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise QueryError(f"cache_size must be an int of 0 or more, got {cache_size!r}")
        self.store = store
        self._runner = runner
        self._models = read_models(store)
        self._catalog = _catalog_of(store)
        # Lower-case table key -> the read model's own name (which may use capitals);
        # rebuilt when the registry learns a new read model (it only ever grows).
        self._model_names: dict[str, str] = {}
        self._model_names_seen = -1
        self._handlers: dict[str, _Handler] = {}
        self._cache: OrderedDict[tuple, _Entry] = OrderedDict()
        self._cache_size = cache_size

    # ------------------------------------------------------------------ registering

    def handler(
        self, name: str, *, reads: Iterable[str] | None = None, cache: bool = True
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register the decorated function as the handler of query ``name``.

        The function takes a :class:`QueryContext` and the query's parameters by
        name. ``reads`` names the tables it reads (inferred from its SQL when
        omitted); ``cache=False`` answers every ask afresh.
        """

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self.register(name, func, reads=reads, cache=cache)
            return func

        return register

    def register(
        self,
        name: str,
        func: Callable[..., Any],
        *,
        reads: Iterable[str] | None = None,
        cache: bool = True,
    ) -> None:
        """Register ``func`` as the handler of query ``name`` (see :meth:`handler`)."""
        if not isinstance(name, str) or not name:
            raise QueryError(f"a query name must be a non-empty string, got {name!r}")
        if not callable(func):
            raise QueryError(f"the handler of {name!r} must be callable, got {func!r}")
        if name in self._handlers:
            raise QueryError(
                f"query {name!r} already has a handler ({self._handlers[name].func.__name__}); "
                f"one query, one handler"
            )
        self._handlers[name] = _Handler(
            name,
            func,
            None if reads is None else self._declared_reads(name, reads),
            bool(cache),
            inspect.signature(func),
        )

    def _declared_reads(self, name: str, reads: object) -> frozenset[str]:
        if isinstance(reads, str):
            reads = [reads]
        fix = (
            f"reads of query {name!r} must be a table name or a list of table names, "
            f"e.g. reads=['orders'] (or leave reads out and the query bus learns them "
            f"from the handler's SQL)"
        )
        try:
            tables = list(reads)  # type: ignore[call-overload]
        except TypeError:
            raise QueryError(f"{fix}; got {reads!r}") from None
        for table in tables:
            if not isinstance(table, str) or not table:
                raise QueryError(f"{fix}; got {table!r} in {reads!r}")
        return frozenset(_table_key(table, self._catalog) for table in tables)

    @property
    def queries(self) -> list[str]:
        """The names of the registered queries."""
        return sorted(self._handlers)

    # ------------------------------------------------------------------ asking

    def ask(
        self,
        query: str,
        /,
        *,
        consistency: str = "eventual",
        timeout: float = 5.0,
        **params: Any,
    ) -> Any:
        """Answer a query: a DataFrame or a value, from the cache when still valid.

        Parameters
        ----------
        query : str
            A registered query name.
        consistency : {"eventual", "strong"}
            ``"eventual"`` reads the read models as they are; ``"strong"`` first
            catches up the projections the query reads to the store's head, so
            it sees every event written before the ask (read-your-writes).
        timeout : float
            Seconds (0 or more; ``float("inf")`` for no limit) a strong ask may
            spend catching up before it raises :class:`~eventlab.ConsistencyTimeout`.
        **params
            The query's parameters.

        Raises
        ------
        QueryError
            An unknown query, parameters its handler does not take, or a bad
            ``consistency`` or ``timeout``.
        ProjectionError
            ``consistency="strong"`` and a projection the query reads has failed,
            or no :class:`~eventlab.ProjectionRunner` of this process feeds it.
        ConsistencyTimeout
            ``consistency="strong"`` and the catch-up took longer than ``timeout``.

        Notes
        -----
        Until a query's tables are known (declared with ``reads=`` or learned from
        its first answer), a strong ask catches every projection up, answers, and
        then holds only the tables the answer read to the head: a failed projection
        the query does not read does not stop it.
        """
        handler = self._handler(query, params)
        if consistency not in CONSISTENCY:
            raise QueryError(
                f"consistency must be 'eventual' or 'strong', got {consistency!r}; use "
                f"'strong' to see every event written before the ask, else 'eventual'"
            )
        if type(timeout) is not float or not timeout >= 0.0:  # the default passes at once
            _check_timeout(timeout)
        key = _cache_key(query, params) if handler.cache and self._cache_size else None
        if consistency == "strong":
            deadline = time.monotonic() + timeout
            if handler.reads_now() is None:
                # Which projections the query reads is learned by answering it. So bring
                # every projection forward first, without failing on ones it may not
                # read, answer, and then hold only the tables it read to the head.
                self._catch_up_all(deadline)
                value = self._answer(handler, key, params)
                if not self._catch_up(handler.reads_now(), deadline):
                    return value
                # It read a model the first pass left behind (its time ran out): again.
            else:
                self._catch_up(handler.reads_now(), deadline)
        return self._answer(handler, key, params)

    def _answer(self, handler: _Handler, key: tuple | None, params: dict[str, Any]) -> Any:
        """The answer from the cache while valid, else from running the handler."""
        if key is not None:
            entry = self._cache.get(key)
            if entry is not None:
                if self._still_valid(entry):
                    self._cache.move_to_end(key)
                    handler.hits += 1
                    return _copy(entry.value)
                handler.invalidations += 1
                del self._cache[key]
        handler.misses += 1
        value, versions = self._run(handler, params)
        if key is not None and versions is not None:
            try:
                answer = _copy(value)
            except Exception:  # a value deepcopy refuses (a generator...): answered, not cached
                return value
            self._cache[key] = _Entry(value, versions)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return answer
        return value

    def _handler(self, query: str, params: dict[str, Any]) -> _Handler:
        handler = self._handlers.get(query)
        if handler is None:
            raise QueryError(
                f"no handler for query {query!r}; registered queries are {self.queries}. "
                f"Register one with @queries.handler({query!r})"
            )
        try:
            handler.signature.bind(None, **params)
        except TypeError as exc:
            takes = [p for p in handler.signature.parameters][1:]
            raise QueryError(
                f"query {query!r} takes the parameters {takes}, got {sorted(params)}: {exc}"
            ) from None
        return handler

    def _run(
        self, handler: _Handler, params: dict[str, Any]
    ) -> tuple[Any, tuple[tuple[str, int], ...] | None]:
        """Run the handler; also return the table versions its result depends on
        (None when a table it read has no version the cache can follow)."""
        context = QueryContext(self.store, catalog=self._catalog)
        versions_before = None
        if handler.reads is not None:
            versions_before = self._versions(handler.reads)
        started = time.perf_counter()
        value = handler.func(context, **params)
        handler.run_seconds.append(time.perf_counter() - started)
        if handler.reads is None:
            if not context.tables_known:
                return value, None
            handler.learned_reads = frozenset(context.tables)
            versions_before = self._versions(context.tables)
        return value, versions_before

    def _versions(self, tables: Iterable[str]) -> tuple[tuple[str, int], ...] | None:
        versions = []
        for table in sorted(tables):
            version = self._version(table)
            if version is None:
                return None
            versions.append((table, version))
        return tuple(versions)

    def _version(self, table: str) -> int | None:
        if table == "events":
            return self.store.head
        name = self._model_name(table)
        if name is None:
            return None  # not a table the read side keeps versions of: never cached
        return self._models.generations.get(name, 0)

    def _model_name(self, table: str) -> str | None:
        """The name of the projection whose read model ``table`` (a lower-case key) is."""
        generations = self._models.generations
        if len(generations) != self._model_names_seen:
            self._model_names = {name.lower(): name for name in generations}
            self._model_names_seen = len(generations)
        name = self._model_names.get(table)
        if name is None:
            for runner in self._runners():
                for candidate in runner.projections:
                    if candidate.lower() == table:
                        return candidate
        return name

    def _runners(self) -> list[ProjectionRunner]:
        return [self._runner] if self._runner is not None else list(self._models.runners)

    def _still_valid(self, entry: _Entry) -> bool:
        return all(self._version(table) == version for table, version in entry.versions)

    def _catch_up_all(self, deadline: float) -> None:
        """Best effort: catch every projection up; failed ones stay behind (the runner
        warns), and running out of time is left to :meth:`_catch_up` to report."""
        for runner in self._runners():
            try:
                runner.catch_up(timeout=max(0.0, deadline - time.monotonic()))
            except ConsistencyTimeout:
                return

    def _catch_up(self, reads: frozenset[str] | None, deadline: float) -> int:
        """Catch up the projections whose read models ``reads`` names (every one, when
        unknown) to the head; raise when one cannot get there. Returns how many
        events they applied."""
        runners = self._runners()
        head = self.store.head
        plan: dict[ProjectionRunner, list[str]] = {}
        if reads is None:
            plan = {runner: list(runner.projections) for runner in runners}
        else:
            for table in sorted(reads):
                name = self._model_name(table)
                if name is None:
                    continue  # events, or a table no projection writes: nothing to catch up
                runner = next((r for r in runners if name in r.projections), None)
                if runner is None:
                    raise ProjectionError(self._no_runner(name, head))
                plan.setdefault(runner, []).append(name)
        applied = 0
        for runner, names in plan.items():
            applied += runner.catch_up(names, timeout=max(0.0, deadline - time.monotonic()))
            for name in names:
                row = runner._checkpoints[name]
                if row["state"] == FAILED:
                    raise ProjectionError(
                        f"projection {name!r} failed at position {row['failed_position']} "
                        f"({row['error']}), so it cannot reach the head ({head}); fix it and "
                        f"runner.retry({name!r}), or ask with consistency='eventual'"
                    )
        return applied

    def _no_runner(self, name: str, head: int) -> str:
        stale = (
            f"so a strong ask cannot bring its read model to the head ({head}): it is only "
            f"as fresh as its last catch-up"
        )
        if self._runner is not None:
            return (
                f"the runner given to this QueryBus does not feed {name!r} (it runs "
                f"{list(self._runner.projections)}), {stale}; give el.QueryBus a runner "
                f"that runs the projection {name!r}, or ask with consistency='eventual'"
            )
        return (
            f"no ProjectionRunner feeds {name!r} in this process, {stale}. Create one "
            f"for it, runner = el.ProjectionRunner(store, [...]) with the projection "
            f"{name!r}, and keep a reference to it (a runner that is garbage-collected "
            f"feeds nothing), or ask with consistency='eventual'"
        )

    # ------------------------------------------------------------------ observing

    def stats(self) -> pd.DataFrame:
        """Per query: hits, misses, invalidations, hit_rate, cached entries, and the
        median time of an uncached answer in milliseconds."""
        cached: dict[str, int] = {}
        for key in self._cache:
            cached[key[0]] = cached.get(key[0], 0) + 1
        rows = []
        for name in self.queries:
            handler = self._handlers[name]
            asked = handler.hits + handler.misses
            rows.append(
                {
                    "query": name,
                    "hits": handler.hits,
                    "misses": handler.misses,
                    "invalidations": handler.invalidations,
                    "hit_rate": handler.hits / asked if asked else float("nan"),
                    "cached": cached.get(name, 0),
                    "uncached_ms_p50": (
                        float(pd.Series(handler.run_seconds).median() * 1000)
                        if handler.run_seconds
                        else float("nan")
                    ),
                }
            )
        columns = [
            "query", "hits", "misses", "invalidations", "hit_rate", "cached", "uncached_ms_p50",
        ]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

    def clear_cache(self) -> None:
        """Forget every cached result."""
        self._cache.clear()

    def __repr__(self) -> str:
        return f"QueryBus({self.queries}, {len(self._cache)} cached)"


def _catalog_of(store: EventStore) -> str:
    """The name DuckDB gives the store's database (``memory``, or the file's stem)."""
    return store._cursor().execute("SELECT current_database()").fetchall()[0][0]


def _check_timeout(timeout: object) -> None:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or math.isnan(timeout)
        or timeout < 0
    ):
        raise QueryError(
            f"timeout must be a number of seconds of 0 or more, got {timeout!r}; e.g. "
            f"timeout=5.0, or timeout=float('inf') to wait for the catch-up however long "
            f"it takes"
        )


def _cache_key(query: str, params: dict[str, Any]) -> tuple | None:
    key = (query, tuple(sorted(params.items())))
    try:
        hash(key)
    except TypeError:
        return None  # e.g. a list parameter: answered, not cached
    return key


# Under pandas' copy-on-write (always on from pandas 3) a shallow copy protects the
# cached frame from a caller's changes, at half the cost of a deep one.
_SHALLOW_IS_SAFE = int(pd.__version__.split(".")[0]) >= 3


# Answers of these types cannot be changed in place: handed out as they are.
# (pd.Timestamp and pd.Timedelta are a datetime and a timedelta.)
_IMMUTABLE = (str, int, float, complex, bytes, type(None), np.generic, Decimal, date, timedelta)


def _copy(value: Any) -> Any:
    # A cached answer handed out as is could be changed by the caller (a frame, a
    # list of records, a dict), and with it every later answer.
    if isinstance(value, (pd.DataFrame, pd.Series)):
        return value.copy(deep=not _SHALLOW_IS_SAFE)
    if isinstance(value, _IMMUTABLE):
        return value
    return copy.deepcopy(value)  # also returns a tuple of immutables itself, uncopied
