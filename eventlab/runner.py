"""ProjectionRunner: feeds projections from the log and keeps their checkpoints.

A batch of read-model changes and the new checkpoint (see
:mod:`eventlab.checkpoints`) commit in one DuckDB transaction, so a crash never
applies an event twice or skips one: after a restart each projection continues
from its checkpoint.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import duckdb
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from .asof import ReadModelsAsOf, build_as_of
from .checkpoints import (
    ACTIVE,
    CHECKPOINTS_DDL,
    FAILED,
    dicts,
    read_models,
    table_exists,
    transaction,
)
from .clock import from_micros, peek_micros
from .errors import ConsistencyTimeout, ProjectionError
from .event_views import view_batches
from .projections import (
    Changes,
    Projection,
    SqlProjection,
    Step,
    apply_events,
    build_sql_table,
    feed,
    projection_of,
    stored_keys,
)
from .reading import filters, prepare_ahead
from .replay import paused_gc
from .schema import SELECT_RECORD
from .write_behind import BackgroundWrite

if TYPE_CHECKING:
    from .bus import Subscription
    from .events import RecordedEvent
    from .store import EventStore

STATUS_COLUMNS = [
    "name", "kind", "checkpoint", "head", "lag", "lag_seconds", "state",
    "failed_position", "failed_type", "last_error", "updated_at",
]  # fmt: skip
BATCH_SIZE = 50_000
_NOT_TRIED = object()  # no attempt at applying a batch was made yet

# Recorded as a projection's error when a handler that ran fine over a batch's
# events raises on a second run over them (the projection then stops at the
# batch's first event).
_UNSTABLE_HANDLERS = (
    "ProjectionError: the handlers of {name!r} gave different results on a second run over "
    "the same events; handlers must depend only on the events (no clocks, random numbers "
    "or outside state)"
)


class ProjectionRunner:
    """Runs projections over a store's events and keeps their read models current.

    Parameters
    ----------
    store : EventStore
        A writable store; read models are tables in its database.
    projections : list
        :class:`~eventlab.Projection` instances (or subclasses) and
        :class:`~eventlab.SqlProjection` objects, with unique names.
    batch_size : int
        Events per transaction while catching up.

    Notes
    -----
    When a projection's schema (or SQL) changes, its old table no longer fits:
    the runner drops it and the next :meth:`catch_up` rebuilds it from position 0.

    Two runners of one store may run the same projection (a notebook cell run
    twice while the first runner still follows the bus): each continues from
    the checkpoint the other left, so no event is applied twice. A runner whose
    projection another runner has redefined refuses to run it.

    A Python projection's batch is written to DuckDB on a thread while the
    handlers already run over the next batch, on the rows the batch before
    leaves (see :mod:`eventlab.write_behind`). Should that write fail, the
    handlers run over both batches again. Handlers should depend only on the
    events, as they must for a rebuild to give the same read model anyway.
    """

    def __init__(
        self,
        store: EventStore,
        projections: Iterable[Projection | SqlProjection | type[Projection]],
        *,
        batch_size: int = BATCH_SIZE,
    ):
        store._check_writable()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ProjectionError(f"batch_size must be a positive int, got {batch_size!r}")
        self.store = store
        self.batch_size = batch_size
        self.projections: dict[str, Projection | SqlProjection] = {}
        for item in projections:
            projection = projection_of(item)
            if projection.name in self.projections:
                raise ProjectionError(
                    f"two projections are named {projection.name!r}; each read model needs "
                    f"its own table name"
                )
            self.projections[projection.name] = projection
        self._models = read_models(store)
        self._lag_samples: list[dict[str, Any]] = []
        self._subscription: Subscription | None = None
        self._checkpoints: dict[str, dict[str, Any]] = {}
        self._register()
        for name in self.projections:
            self._models.generations.setdefault(name, 0)
        # The generation of each read model this runner's checkpoints reflect: another
        # runner of the store (a notebook cell run twice) moving it bumps the generation.
        self._seen = {name: self._models.generations[name] for name in self.projections}
        self._models.runners.add(self)

    # ------------------------------------------------------------------ checkpoints

    def _register(self) -> None:
        """Give every projection a checkpoint row and a table that fits its definition.

        All or nothing: when one projection's table cannot be made, no other
        projection of this runner is registered or reset either.
        """
        cursor = self.store._cursor()
        cursor.execute(CHECKPOINTS_DDL)
        self._load_checkpoints(cursor)
        stale = []
        for name, projection in self.projections.items():
            row = self._checkpoints.get(name)
            if row is not None and row["fingerprint"] == projection.fingerprint:
                continue
            if row is None and table_exists(cursor, name):
                raise ProjectionError(
                    f"the store already has a table named {name!r} that no projection owns; "
                    f"give the projection another name"
                )
            stale.append(name)
        if stale:
            with transaction(cursor):
                for name in stale:
                    self._reset(cursor, self.projections[name])
            for name in stale:  # a table made anew: answers cached from the old one are stale
                self._models.bump(name)
        self._load_checkpoints(cursor)

    def _reset(self, cursor: duckdb.DuckDBPyConnection, projection: Any) -> None:
        """Empty a projection's read model and set its checkpoint to 0 (inside a transaction)."""
        cursor.execute(f"DROP TABLE IF EXISTS main.{projection.name}")
        if isinstance(projection, Projection):
            try:
                cursor.execute(projection.create_table_sql(f"main.{projection.name}"))
            except duckdb.Error as exc:
                # DuckDB's message, without the statement and the caret it draws under it.
                reason = " ".join(str(exc).split("\n\n")[0].split())
                raise ProjectionError(
                    f"{type(projection).__name__}.schema {dict(projection.schema)} does not make "
                    f"a table: {reason} Use DuckDB type names such as 'VARCHAR', 'INTEGER', "
                    f"'DOUBLE' or 'TIMESTAMPTZ'"
                ) from None
        else:  # the empty read model: also checks the query before any data meets it
            try:
                build_sql_table(cursor, projection, f"main.{projection.name}", " AND false")
            except duckdb.Error as exc:
                raise ProjectionError(
                    f"the query of SqlProjection {projection.name!r} does not run: {exc}"
                ) from None
        cursor.execute("DELETE FROM checkpoints WHERE name = $1", [projection.name])
        cursor.execute(
            "INSERT INTO checkpoints VALUES ($1, $2, 0, $3, $4, NULL, NULL, NULL, "
            "make_timestamptz($5))",
            [projection.name, projection.kind, projection.fingerprint, ACTIVE, self._now()],
        )

    def _load_checkpoints(self, cursor: duckdb.DuckDBPyConnection) -> None:
        rows = {row["name"]: row for row in dicts(cursor.execute("SELECT * FROM checkpoints"))}
        # In the runner's order, not the table's: a rebuild deletes and re-inserts a
        # row, so the table's order depends on the store's history (and status() and
        # lag() would list the projections differently after a reopen).
        self._checkpoints = {name: rows[name] for name in self.projections if name in rows}

    def _save(
        self,
        cursor: duckdb.DuckDBPyConnection,
        name: str,
        position: int,
        failure: tuple[int | None, str | None, str] | None = None,
    ) -> None:
        """Write a checkpoint inside a transaction; failure = (position, type, error)."""
        cursor.execute(*self._checkpoint_step(name, position, failure)[:2])

    def _checkpoint_step(
        self,
        name: str,
        position: int,
        failure: tuple[int | None, str | None, str] | None = None,
    ) -> Step:
        """The statement that moves a checkpoint; failure = (position, type, error).

        Without a failure its values are integers and the projection's name (a
        checked identifier), written into the SQL: a write on a thread then runs
        as one script (see :mod:`eventlab.write_behind`).
        """
        if failure is None:
            return (
                f"UPDATE checkpoints SET position = {position:d}, state = '{ACTIVE}', "
                f"failed_position = NULL, failed_type = NULL, error = NULL, "
                f"updated_at = make_timestamptz({self._now():d}) WHERE name = '{name}'",
                None,
                None,
                None,
            )
        failed_position, failed_type, error = failure
        return (
            "UPDATE checkpoints SET position = $2, state = $3, failed_position = $4, "
            "failed_type = $5, error = $6, updated_at = make_timestamptz($7) WHERE name = $1",
            [
                name,
                position,
                FAILED,
                failed_position,
                failed_type,
                error,
                self._now(),
            ],
            None,
            None,
        )

    def _committed(self, cursor: duckdb.DuckDBPyConnection, name: str) -> None:
        """After a commit: refresh the in-memory checkpoint and invalidate cached queries."""
        self._checkpoints[name] = dicts(
            cursor.execute("SELECT * FROM checkpoints WHERE name = $1", [name])
        )[0]
        self._models.bump(name)
        self._seen[name] = self._models.generations[name]

    def _refresh(self, names: Iterable[str]) -> None:
        """Reload the checkpoints another runner of this store has moved since this one
        last read or wrote them, so no event is applied twice (or skipped).

        Costs a dict lookup per projection unless one did move (see ``_seen``).
        """
        generations = self._models.generations
        stale = [name for name in names if generations.get(name, 0) != self._seen[name]]
        if not stale:
            return
        rows = dicts(
            self.store._cursor().execute(
                "SELECT * FROM checkpoints WHERE name IN (SELECT unnest($1))", [stale]
            )
        )
        for row in rows:
            name = row["name"]
            if row["fingerprint"] != self.projections[name].fingerprint:
                raise ProjectionError(
                    f"projection {name!r} was redefined by another ProjectionRunner of this "
                    f"store, which made its table anew for the new definition; this runner's "
                    f"definition is out of date. Use the newer runner, or create a new "
                    f"el.ProjectionRunner with this definition (it rebuilds the table)"
                )
            self._checkpoints[name] = row
        for name in stale:
            self._seen[name] = generations.get(name, 0)

    def checkpoint(self, name: str) -> int:
        """The last position projection ``name`` has applied."""
        self._refresh([self._known(name)])
        return self._checkpoints[name]["position"]

    def _known(self, name: str) -> str:
        if name not in self.projections:
            raise ProjectionError(
                f"no projection named {name!r} in this runner; it runs {list(self.projections)}"
            )
        return name

    def _now(self) -> int:
        return peek_micros(self.store.clock)

    # ------------------------------------------------------------------ catching up

    def catch_up(
        self,
        names: str | Sequence[str] | None = None,
        *,
        progress: bool = False,
        timeout: float | None = None,
    ) -> int:
        """Apply the events after each projection's checkpoint, in batches.

        Parameters
        ----------
        names : str or list of str, optional
            Only these projections (default: all). Failed ones are skipped until
            :meth:`retry`.
        progress : bool
            Show a progress bar (tqdm) over the events to apply.
        timeout : float, optional
            Stop after this many seconds (between batches) and raise
            :class:`~eventlab.ConsistencyTimeout`.

        Returns
        -------
        int
            How many events the projections applied (an event fed to two
            projections counts twice).
        """
        selected = self._select(names)
        self._refresh(selected)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0
        ):
            raise ProjectionError(
                f"timeout must be a number of seconds (0 or more) or None for no limit, "
                f"got {timeout!r}"
            )
        head = self.store.head
        deadline = None if timeout is None else time.monotonic() + timeout
        active = [n for n in selected if self._checkpoints[n]["state"] == ACTIVE]
        total = sum(head - self._checkpoints[n]["position"] for n in active)
        applied = 0
        # Catching up makes millions of short-lived payloads the collector need not walk.
        with paused_gc(), tqdm(total=total, unit="event", disable=not progress) as bar:
            for name in active:
                if self._checkpoints[name]["position"] >= head:
                    continue
                projection = self.projections[name]
                if isinstance(projection, SqlProjection):
                    behind = head - self._checkpoints[name]["position"]
                    if self._rebuild_sql(projection, head):
                        applied += behind
                    bar.update(behind)
                else:
                    applied += self._catch_up_python(projection, head, bar, deadline)
                self._warn_if_failed(name)
        self._sample_lag()
        return applied

    def _select(self, names: str | Sequence[str] | None) -> list[str]:
        if names is None:
            return list(self.projections)
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list | tuple | set | frozenset) or not all(
            isinstance(name, str) for name in names
        ):
            raise ProjectionError(
                f"name(s) must be a projection name or a list of them, got {names!r}; "
                f"this runner runs {list(self.projections)}"
            )
        return [self._known(name) for name in names]

    def _catch_up_python(
        self, projection: Projection, head: int, bar: tqdm, deadline: float | None
    ) -> int:
        name = projection.name
        start = self._checkpoints[name]["position"]
        where, params = filters(after=start, types=projection.types, until=head)
        reader = (
            self.store._cursor()
            .sql(SELECT_RECORD.format(src="events") + where, params=params)
            .to_arrow_reader(self.batch_size)
        )
        cursor = self.store._cursor()
        existing = stored_keys(cursor, projection)
        applied = 0
        position = start

        def account(records: list, done: int) -> bool:
            """Count a batch's ``done`` applied events; False if it stopped at a failure."""
            nonlocal applied, position
            applied += done
            if done < len(records):  # failed at records[done]
                bar.update(records[done].position - 1 - position)
                return False
            bar.update(records[-1].position - position)
            position = records[-1].position
            return True

        # The next Arrow batch is fetched on the other core while this one is applied;
        # closing the generator stops that thread however the loop ends.
        batches = view_batches(
            self.store._read_aheads.batches(reader, self.batch_size, prepare_ahead)
        )
        writing: _Writing | None = None  # the batch whose write runs on a thread

        def finish_writing() -> tuple[bool, bool]:
            """Wait for the batch being written and count it: whether the projection
            stopped in it, and whether its background write stood."""
            nonlocal writing
            finished, writing = writing, None
            done, wrote = self._finish_write(projection, cursor, finished, existing)
            return not account(finished.records, done), wrote

        several = head - start > self.batch_size  # more than one batch to read, maybe
        with contextlib.closing(batches):
            try:
                for records in batches:
                    if deadline is not None and time.monotonic() > deadline:
                        raise self._timeout(name, head)
                    # The handlers run while the batch before is written, on the rows
                    # it leaves; its write must succeed for this to stand. (A catch-up
                    # of one batch, as when following the bus, has nothing to overlap.)
                    ahead = (
                        self._feed_ahead(projection, cursor, records, existing, writing)
                        if several
                        else _NOT_TRIED
                    )
                    if writing is not None:
                        stopped, wrote = finish_writing()
                        if stopped:
                            return applied
                        if not wrote:
                            # Fed on rows the failed write did not store: feed it again
                            # (its handlers run once more than they would have).
                            ahead = _NOT_TRIED
                    if isinstance(ahead, _Ahead):
                        write = BackgroundWrite(cursor, ahead.steps)
                        writing = _Writing(records, ahead.changes, write)
                        continue
                    # A handler raised, or the changes cannot be written: this batch
                    # goes the careful way, which finds the failing event.
                    done = self._apply_batch(projection, cursor, records, existing, ahead)
                    self._committed(cursor, name)
                    if not account(records, done):
                        return applied
                if writing is not None and finish_writing()[0]:
                    return applied
            finally:
                if writing is not None:  # leaving early (a timeout, an interrupt)
                    if writing.write.wait() is None:
                        writing.changes.settle()
                    self._committed(cursor, name)
        if position < head:  # the rest were events of types this projection ignores
            with transaction(cursor):
                self._save(cursor, name, head)
            self._committed(cursor, name)
            bar.update(head - position)
        return applied

    def _feed_ahead(
        self,
        projection: Projection,
        cursor: duckdb.DuckDBPyConnection,
        records: list,
        existing: set[tuple] | None,
        writing: _Writing | None,
    ) -> _Ahead | tuple[int | None, str]:
        """Run the handlers over ``records`` and plan their write, checkpoint included,
        while ``writing`` (the batch before) may still be running; or how that failed,
        as :func:`~eventlab.projections.apply_events` reports it."""
        changes = Changes(
            cursor,
            f"main.{projection.name}",
            projection,
            existing,
            previous=None if writing is None else writing.changes,
            before_query=None if writing is None else writing.write.wait,
        )
        failed = feed(projection, changes, records)
        if failed is not None:
            return failed
        try:
            steps = changes.plan()
        except (duckdb.Error, ProjectionError, pa.ArrowException) as exc:
            return None, f"{type(exc).__name__}: {exc}"
        steps.append(self._checkpoint_step(projection.name, records[-1].position))
        return _Ahead(changes, steps)

    def _finish_write(
        self,
        projection: Projection,
        cursor: duckdb.DuckDBPyConnection,
        writing: _Writing,
        existing: set[tuple] | None,
    ) -> tuple[int, bool]:
        """Wait for a batch's background write; if it failed (and rolled back), apply the
        batch again the careful way. Returns how many of its events were applied, and
        whether the background write stood."""
        error = writing.write.wait()
        if error is None:
            writing.changes.settle()
            self._committed(cursor, projection.name)
            return len(writing.records), True
        if not isinstance(error, duckdb.Error):
            raise error  # not the write's rows: an interrupt, say
        failed = (None, f"{type(error).__name__}: {error}")
        done = self._apply_batch(projection, cursor, writing.records, existing, failed)
        self._committed(cursor, projection.name)
        return done, False

    def _apply_batch(
        self,
        projection: Projection,
        cursor: duckdb.DuckDBPyConnection,
        records: list,
        existing: set[tuple] | None,
        failed: tuple[int | None, str] | None | object = _NOT_TRIED,
    ) -> int:
        """Apply records and checkpoint in one transaction; returns how many were applied.

        On a failure only the events before the failing one are committed, and
        the failure is recorded in the same transaction. ``failed`` is how a first
        attempt over these records failed, when one was made already (as
        :func:`~eventlab.projections.apply_events` reports it).
        """
        if failed is _NOT_TRIED:
            failed = self._commit_batch(projection, cursor, records, existing)
        if failed is not None and failed[0] is None:
            # Writing failed. A row taken for new may be stored under a key the handler
            # gave in another Python type ('5' stored, 5 given): its plain INSERT fails
            # where an upsert succeeds. Upserting everything settles it either way.
            failed = self._commit_batch(projection, cursor, records, existing, upserts_only=True)
        if failed is None:
            return len(records)
        index, error = failed
        if index is None:
            # The batch's rows failed to write together: applied event by event, the
            # first event whose rows do not fit stops the projection, or none does (a
            # key given as 5 and as "5" in one batch is one row only event by event).
            return self._commit_before(projection, cursor, records, len(records), None, existing)
        return self._commit_before(projection, cursor, records, index, error, existing)

    def _commit_before(
        self,
        projection: Projection,
        cursor: duckdb.DuckDBPyConnection,
        records: list,
        index: int,
        error: str | None,
        existing: set[tuple] | None,
    ) -> int:
        """Commit the events before ``records[index]`` with the failure ``error`` of that
        event recorded (none when ``index`` is ``len(records)``); returns how many.

        The events are applied as one batch, else event by event; then the first
        one whose rows do not fit becomes the failure instead. This rare path
        costs a statement per event.
        """
        name = projection.name
        one_by_one = index == len(records)  # the batch as a whole failed already
        while True:
            cursor.execute("BEGIN TRANSACTION")
            try:
                again = _apply_prefix(projection, cursor, records[:index], existing, one_by_one)
                if again is None:
                    if index < len(records):
                        event = records[index]
                        failure = (event.position, event.type, error)
                        self._save(cursor, name, event.position - 1, failure)
                    else:
                        self._save(cursor, name, records[-1].position)
                    cursor.execute("COMMIT")
                    return index
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("ROLLBACK")
            at, why, handler_failed = again
            if handler_failed:  # a handler that ran before now raised
                return self._fail_at(projection, cursor, records[0], _UNSTABLE_HANDLERS)
            if one_by_one:  # records[at]'s rows do not fit: the projection stops there
                index, error = at, why
            one_by_one = True

    def _fail_at(
        self, projection: Projection, cursor: duckdb.DuckDBPyConnection, event: Any, error: str
    ) -> int:
        """Record that ``projection`` failed at ``event`` without applying it; returns 0."""
        with transaction(cursor):
            self._save(
                cursor,
                projection.name,
                event.position - 1,
                (event.position, event.type, error.format(name=projection.name)),
            )
        return 0

    def _commit_batch(
        self,
        projection: Projection,
        cursor: duckdb.DuckDBPyConnection,
        records: list,
        existing: set[tuple] | None,
        *,
        upserts_only: bool = False,
    ) -> tuple[int | None, str] | None:
        """Apply records and checkpoint, committed together; on a failure roll back and
        return it as :func:`~eventlab.projections.apply_events` does."""
        cursor.execute("BEGIN TRANSACTION")
        try:
            failed = apply_events(
                projection, cursor, records, existing=existing, upserts_only=upserts_only
            )
            if failed is None:
                self._save(cursor, projection.name, records[-1].position)
                cursor.execute("COMMIT")
                return None
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("ROLLBACK")  # the batch failed: none of it stays
        return failed

    def _rebuild_sql(self, projection: SqlProjection, head: int) -> bool:
        """Rebuild a SQL read model up to ``head`` in one statement and checkpoint it.

        Returns False when the query failed (the projection is then marked failed).
        """
        name = projection.name
        cursor = self.store._cursor()
        try:
            with transaction(cursor):
                build_sql_table(cursor, projection, f"main.{name}", f" AND position <= {head}")
                self._save(cursor, name, head)
        except duckdb.Error as exc:
            with transaction(cursor):
                self._save(
                    cursor, name, self._checkpoints[name]["position"], (None, None, str(exc))
                )
            self._committed(cursor, name)
            return False
        self._committed(cursor, name)
        return True

    def _timeout(self, name: str, head: int) -> ConsistencyTimeout:
        return ConsistencyTimeout(
            f"projection {name!r} reached position {self.checkpoint(name)} of {head} before "
            f"the timeout; wait longer (a larger timeout=), or ask with "
            f"consistency='eventual' to read the read model as it is"
        )

    def _warn_if_failed(self, name: str) -> None:
        row = self._checkpoints[name]
        if row["state"] == FAILED:
            where = (
                f" at position {row['failed_position']} ({row['failed_type']})"
                if row["failed_position"] is not None
                else ""
            )
            warnings.warn(
                f"projection {name!r} failed{where}: {row['error']}. It stopped there; the "
                f"others went on. Fix it, then runner.retry({name!r}).",
                ProjectionFailedWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------ control

    def rebuild(self, name: str | None = None, *, progress: bool = False) -> int:
        """Drop read models (all, or the one named) and rebuild them from position 0.

        Returns the number of events applied.
        """
        names = self._select(name)
        self._refresh(names)  # a definition another runner replaced is not rebuilt
        cursor = self.store._cursor()
        for each in names:
            with transaction(cursor):
                self._reset(cursor, self.projections[each])
            self._committed(cursor, each)
        return self.catch_up(names, progress=progress)

    def retry(self, name: str, *, progress: bool = False) -> int:
        """Resume a failed projection from the event it failed on; returns events applied."""
        self._refresh([self._known(name)])
        cursor = self.store._cursor()
        with transaction(cursor):
            self._save(cursor, name, self._checkpoints[name]["position"])
        self._committed(cursor, name)
        return self.catch_up(name, progress=progress)

    def follow(self, every: int = 1) -> Subscription:
        """Keep the read models current from the store's bus: catch up every ``every`` events.

        With ``every=1`` the read side trails by nothing once each commit is
        published; a larger value shows eventual consistency: the read side lags
        by up to ``every - 1`` events. Undo with :meth:`unfollow`.
        """
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ProjectionError(f"every must be a positive int, got {every!r}")
        self.unfollow()
        unseen = 0

        def on_event(event: RecordedEvent) -> None:
            nonlocal unseen
            if self.store.closed:
                # The bus outlived this runner's store (reopened with the same bus):
                # a runner of the new store follows it; this one lets go.
                self.unfollow()
                return
            unseen += 1
            if unseen >= every:
                unseen = 0
                self.catch_up()

        self._subscription = self.store.bus.subscribe(
            on_event, name=f"projection runner {id(self):x}"
        )
        return self._subscription

    def unfollow(self) -> None:
        """Stop following the bus (read models then change only on :meth:`catch_up`)."""
        if self._subscription is not None:
            self.store.bus.unsubscribe(self._subscription)
            self._subscription = None

    # ------------------------------------------------------------------ observing

    def status(self) -> pd.DataFrame:
        """One row per projection: name, kind, checkpoint, head, lag, lag_seconds, state,
        failed_position, failed_type, last_error, updated_at.

        ``state`` is ``caught up``, ``behind`` or ``failed``; ``lag`` counts events
        not yet applied and ``lag_seconds`` is how long the oldest of them has waited.
        """
        self._refresh(self.projections)
        lags = {row["name"]: row for row in self._sample_lag()}
        rows = []
        for name, row in self._checkpoints.items():
            lag = lags[name]
            state = (
                row["state"]
                if row["state"] == FAILED
                else ("caught up" if lag["lag"] == 0 else "behind")
            )
            rows.append(
                {
                    "name": name,
                    "kind": row["kind"],
                    "checkpoint": row["position"],
                    "head": lag["head"],
                    "lag": lag["lag"],
                    "lag_seconds": lag["lag_seconds"],
                    "state": state,
                    "failed_position": row["failed_position"],
                    "failed_type": row["failed_type"],
                    "last_error": row["error"],
                    "updated_at": row["updated_at"],
                }
            )
        frame = pd.DataFrame(rows, columns=STATUS_COLUMNS)
        frame["failed_position"] = frame["failed_position"].astype("Int64")
        return frame

    def lag(self) -> pd.DataFrame:
        """How far each read model trails the log now (also recorded for :meth:`lag_history`).

        Columns: sampled_at, name, checkpoint, head, lag (events), lag_seconds
        (how long the oldest unapplied event has waited, by the store's clock).
        """
        self._refresh(self.projections)
        return pd.DataFrame(self._sample_lag())

    def lag_history(self) -> pd.DataFrame:
        """Every lag sample taken so far (by :meth:`lag`, :meth:`status` and each
        catch-up), oldest first: ready to plot lag over time."""
        columns = ["sampled_at", "name", "checkpoint", "head", "lag", "lag_seconds"]
        return pd.DataFrame(self._lag_samples, columns=columns)

    def _sample_lag(self) -> list[dict[str, Any]]:
        head = self.store.head
        now = self._now()
        waiting = self._oldest_unapplied(head)
        samples = []
        for name, row in self._checkpoints.items():
            checkpoint = row["position"]
            since = waiting.get(checkpoint + 1)
            samples.append(
                {
                    "sampled_at": from_micros(now),
                    "name": name,
                    "checkpoint": checkpoint,
                    "head": head,
                    "lag": head - checkpoint,
                    "lag_seconds": 0.0 if since is None else max(0, now - since) / 1e6,
                }
            )
        self._lag_samples.extend(samples)
        return samples

    def _oldest_unapplied(self, head: int) -> dict[int, int]:
        """recorded_at (µs) of the first event each projection has not applied yet."""
        positions = sorted(
            {row["position"] + 1 for row in self._checkpoints.values() if row["position"] < head}
        )
        if not positions:
            return {}
        rows = self.store._cursor().execute(
            "SELECT position, epoch_us(recorded_at) FROM events "
            "WHERE position IN (SELECT unnest($1))",
            [positions],
        )
        return dict(rows.fetchall())

    def as_of(
        self,
        *,
        at: datetime | str | None = None,
        known_at: datetime | str | None = None,
        label: str | None = None,
    ) -> ReadModelsAsOf:
        """Build every read model as it was at a time, into a schema of its own.

        Parameters
        ----------
        at : datetime or str, optional
            Business time: only events that occurred at or before it.
        known_at : datetime or str, optional
            Knowledge time: only events recorded at or before it.
        label : str, optional
            Names the schema ``asof_<label>``; defaults to one made from the times.

        Returns
        -------
        ReadModelsAsOf
            A handle to query the tables (``.sql()``, ``.table()``) and ``drop()`` them.
        """
        return build_as_of(
            self.store,
            self.projections,
            at=at,
            known_at=known_at,
            label=label,
            batch_size=self.batch_size,
        )

    def __repr__(self) -> str:
        return f"ProjectionRunner({list(self.projections)})"


class ProjectionFailedWarning(UserWarning):
    """A projection stopped at an event its handler could not apply."""


def _apply_prefix(
    projection: Projection,
    cursor: duckdb.DuckDBPyConnection,
    records: list,
    existing: set[tuple] | None,
    one_by_one: bool,
) -> tuple[int | None, str, bool] | None:
    """Apply ``records`` (as one batch, or a write per event) inside the caller's
    transaction; None on success, else (index or None, error, whether a handler raised)."""
    if not one_by_one:
        failed = apply_events(projection, cursor, records, existing=existing, upserts_only=True)
        return None if failed is None else (failed[0], failed[1], failed[0] is not None)
    for index, record in enumerate(records):
        failed = apply_events(projection, cursor, [record], existing=existing, upserts_only=True)
        if failed is not None:
            return index, failed[1], failed[0] is not None
    return None


class _Writing(NamedTuple):
    """A batch of events whose changes are being written by a background thread."""

    records: list
    changes: Changes
    write: BackgroundWrite


class _Ahead(NamedTuple):
    """A batch's changes, collected while the batch before was written, and their write."""

    changes: Changes
    steps: list[Step]
