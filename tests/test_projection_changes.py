"""A batch's row changes (projections.Changes): the same read model as one event at a time.

The runner collects a batch's upserts, deletes and reads in memory and writes
them in a few statements. These tests hold that to a plain dict model of the
handler API applied event by event: the final table and every answer of get().
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlab as el
from eventlab import projections
from eventlab.projections import apply_events


class Rows(el.Projection):
    """Each event is one call of the handler API, named by its type."""

    name = "rows"
    schema = {"k": "VARCHAR", "a": "INTEGER", "b": "VARCHAR"}
    answers: list = []  # what get() returned, in order (class-level, reset per example)

    def row_key(self, data):
        return data["k"]

    def on_Set(self, event):
        self.upsert(self.row_key(event.data), **event.data["columns"])

    def on_Delete(self, event):
        self.delete(self.row_key(event.data))

    def on_Read(self, event):
        Rows.answers.append(self.get(self.row_key(event.data)))

    def on_Bump(self, event):
        row = self.get(self.row_key(event.data))
        Rows.answers.append(row)
        self.upsert(self.row_key(event.data), a=1 if row is None else (row["a"] or 0) + 1)


class PairRows(Rows):
    """The same calls with a composite key."""

    name = "pair_rows"
    schema = {"k": "VARCHAR", "n": "INTEGER", "a": "INTEGER", "b": "VARCHAR"}
    key = ("k", "n")

    def row_key(self, data):
        return (data["k"], data["n"])


def model(ops: list[tuple[str, dict]], projection: el.Projection):
    """The handler API on a dict of rows, one event at a time: (rows, get answers)."""
    keys, columns = projection.key_columns, list(projection.schema)
    rows: dict = {}
    answers = []
    for kind, data in ops:
        key = tuple(data[k] for k in keys)
        if kind == "Delete":
            rows.pop(key, None)
            continue
        row = rows.get(key)
        if kind in ("Read", "Bump"):
            answers.append(None if row is None else dict(row))
        if kind in ("Set", "Bump"):
            if kind == "Set":
                update = data["columns"]
            else:
                update = {"a": 1 if row is None else (row["a"] or 0) + 1}
            new = dict.fromkeys(columns) | dict(zip(keys, key, strict=True))
            rows.setdefault(key, new).update(update)
    return sorted(tuple(row.values()) for row in rows.values()), answers


def table(store, name):
    """Every row, sorted, with NULL as None."""
    return store._cursor().execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()


calls = st.lists(
    st.tuples(
        st.sampled_from(["Set", "Set", "Delete", "Read", "Bump"]),
        st.sampled_from(["x", "y", "z"]),
        st.integers(0, 1),
        st.fixed_dictionaries(
            {},
            optional={
                "a": st.one_of(st.none(), st.integers(-5, 5)),
                "b": st.one_of(st.none(), st.sampled_from(["p", "q"])),
            },
        ),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=calls,
    cuts=st.lists(st.integers(0, 30), max_size=3),
    batch_size=st.integers(1, 6),
    fresh_runners=st.booleans(),
    keys_in_memory=st.booleans(),
    composite=st.booleans(),
)
def test_batched_changes_equal_the_handler_api_applied_event_by_event(
    ops, cuts, batch_size, fresh_runners, keys_in_memory, composite
):
    cls = PairRows if composite else Rows
    history = []
    for kind, k, n, columns in ops:
        data = {"k": k, "n": n}
        if kind == "Set":
            data["columns"] = columns
        history.append((kind, data))
    Rows.answers = []
    limit = projections.MAX_KEYS_IN_MEMORY if keys_in_memory else -1
    with pytest.MonkeyPatch.context() as patch, el.EventStore() as store:
        # With no keys in memory, every key not seen in the batch is asked of DuckDB.
        patch.setattr(projections, "MAX_KEYS_IN_MEMORY", limit)
        runner = el.ProjectionRunner(store, [cls], batch_size=batch_size)
        for index, (kind, data) in enumerate(history):
            store.append("calls", [el.Event(kind, data)])
            if index in cuts:
                if fresh_runners:  # the keys come back from the table, in DuckDB's types
                    runner = el.ProjectionRunner(store, [cls], batch_size=batch_size)
                runner.catch_up()
        runner.catch_up()
        assert runner.status().iloc[0]["state"] == "caught up"
        got = table(store, cls.name)
    expected_rows, expected_answers = model(history, cls())
    assert got == expected_rows
    assert Rows.answers == expected_answers


def rows_of(store, name="rows"):
    return table(store, name)


def set_(k, **columns):
    return el.Event("Set", {"k": k, "columns": columns})


def test_a_row_deleted_and_upserted_in_one_batch_is_written_afresh(store):
    store.append("calls", [set_("x", a=1, b="p"), set_("y", a=2)])
    el.ProjectionRunner(store, [Rows]).catch_up()
    store.append("calls", [el.Event("Delete", {"k": "x"}), set_("x", a=3), set_("y", b="q")])
    el.ProjectionRunner(store, [Rows]).catch_up()
    # x lost its old b; y kept its a though the batch never read it.
    assert rows_of(store) == [("x", 3, None), ("y", 2, "q")]


@pytest.mark.parametrize("keys_in_memory", [True, False])
def test_an_upsert_of_a_stored_row_changes_only_the_columns_given(store, keys_in_memory):
    limit = projections.MAX_KEYS_IN_MEMORY if keys_in_memory else -1
    store.append("calls", [set_("x", a=1, b="p")])
    el.ProjectionRunner(store, [Rows]).catch_up()
    store.append("calls", [set_("x", a=5), set_("z", b="r")])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(projections, "MAX_KEYS_IN_MEMORY", limit)
        el.ProjectionRunner(store, [Rows]).catch_up()
    assert rows_of(store) == [("x", 5, "p"), ("z", None, "r")]


def test_a_key_stored_as_text_and_given_as_a_number_is_updated_not_duplicated(store):
    class ByNumber(el.Projection):
        name = "by_number"
        schema = {"id": "VARCHAR", "count": "INTEGER"}

        def on_Counted(self, event):
            self.upsert(event.data["id"], count=event.data["count"])

    store.append("c", [el.Event("Counted", {"id": "5", "count": 1})])
    el.ProjectionRunner(store, [ByNumber]).catch_up()
    # A new runner knows the stored key as '5'; the handler now gives 5, which looks
    # new: the plain INSERT fails on the key and the batch is written again as upserts.
    store.append("c", [el.Event("Counted", {"id": 5, "count": 2})])
    runner = el.ProjectionRunner(store, [ByNumber])
    assert runner.catch_up() == 1
    assert rows_of(store, "by_number") == [("5", 2)]
    assert runner.status().iloc[0]["state"] == "caught up"


def test_an_event_whose_handler_is_gone_fails_at_its_index(store):
    broken = el.Event("Set", {"k": "z"})  # no columns: the handler raises KeyError
    store.append("calls", [set_("x", a=1), set_("y", a=2), el.Event("Gone", {}), broken])
    records = list(store.read_all())
    cursor = store._cursor()
    el.ProjectionRunner(store, [Rows])  # creates the table
    assert apply_events(Rows(), cursor, records, existing=set()) == (2, "KeyError: 'Gone'")
    # A failing handler is located the same way: by how many events were pulled.
    without_gone = records[:2] + records[3:]
    assert apply_events(Rows(), cursor, without_gone, existing=set()) == (2, "KeyError: 'columns'")
    assert rows_of(store) == []  # nothing was written
