"""The query side: named query handlers over the read models, with cached views.

A handler receives a :class:`QueryContext` (SQL over the query store) and the
query's parameters. Results are cached by (query, parameters) and stay valid
until a table they read changes: a projection's read model advancing, or new
events when the query reads the ``events`` table directly.
"""

from __future__ import annotations

import inspect
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from .checkpoints import FAILED, read_models
from .errors import ProjectionError, QueryError
from .runner import ProjectionRunner

if TYPE_CHECKING:
    from .store import EventStore

CONSISTENCY = ("eventual", "strong")
_PLACEHOLDER = re.compile(r"\$\w+|\?")


class QueryContext:
    """What a query handler reads through: SQL over the store's tables and read models.

    It notes the tables each query reads, so cached results know what
    invalidates them.
    """

    def __init__(self, store: EventStore):
        self.store = store
        self.tables: set[str] = set()
        self.tables_known = True  # False once a query's tables could not be worked out

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run a read-only query and return a DataFrame (``$name`` parameters from a dict)."""
        try:
            # The table-name parser refuses placeholders; values never name tables.
            names = duckdb.get_table_names(_PLACEHOLDER.sub("NULL", query))
            self.tables |= {name.lower() for name in names}
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
        if isinstance(reads, str):
            reads = [reads]
        self._handlers[name] = _Handler(
            name,
            func,
            None if reads is None else frozenset(r.lower() for r in reads),
            bool(cache),
            inspect.signature(func),
        )

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
            Seconds a strong ask may spend catching up before it raises
            :class:`~eventlab.ConsistencyTimeout`.
        **params
            The query's parameters.
        """
        handler = self._handler(query, params)
        if consistency not in CONSISTENCY:
            raise QueryError(f"consistency must be 'eventual' or 'strong', got {consistency!r}")
        if consistency == "strong":
            self._catch_up(handler, timeout)
        key = _cache_key(query, params) if handler.cache and self._cache_size else None
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
            self._cache[key] = _Entry(value, versions)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return _copy(value)
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
        context = QueryContext(self.store)
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
        if table in self._models.generations or self._models.runner_for(table) is not None:
            return self._models.generations.get(table, 0)
        return None  # not a table the read side keeps versions of: never cached

    def _still_valid(self, entry: _Entry) -> bool:
        return all(self._version(table) == version for table, version in entry.versions)

    def _catch_up(self, handler: _Handler, timeout: float) -> None:
        """Catch up the projections the query reads (all, when unknown) to the head."""
        reads = handler.reads_now()
        runners = [self._runner] if self._runner is not None else list(self._models.runners)
        deadline = time.monotonic() + timeout
        for runner in runners:
            names = [n for n in runner.projections if reads is None or n in reads]
            if not names:
                continue
            head = self.store.head
            runner.catch_up(names, timeout=max(0.0, deadline - time.monotonic()))
            for name in names:
                row = runner._checkpoints[name]
                if row["state"] == FAILED:
                    raise ProjectionError(
                        f"projection {name!r} failed at position {row['failed_position']} "
                        f"({row['error']}), so it cannot reach the head ({head}); fix it and "
                        f"runner.retry({name!r}), or ask with consistency='eventual'"
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


def _copy(value: Any) -> Any:
    # A cached DataFrame handed out as is could be changed by the caller, and
    # with it every later answer.
    if isinstance(value, (pd.DataFrame, pd.Series)):
        return value.copy(deep=not _SHALLOW_IS_SAFE)
    return value
