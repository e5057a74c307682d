"""A Python projection's batches written on a thread while the next batch is fed.

The runner feeds batch k+1 to the handlers while batch k's statements run on a
thread (see eventlab.write_behind). These tests pin down that nothing shows:
the handlers of batch k+1 see the rows exactly as DuckDB would give them back,
a write that fails is found and handled as before, and leaving early (a
timeout) keeps the checkpoint and the rows together.
"""

from __future__ import annotations

import threading
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlab as el
from eventlab import runner as runner_module
from tests.conftest import make_clock

WRITER = "eventlab-projection-write"  # the name of the background write threads


def ev(type_: str, **data) -> el.Event:
    return el.Event(type_, data)


def rows(store: el.EventStore, name: str) -> list[tuple]:
    frame = store.sql(f"SELECT * FROM {name} ORDER BY 1")
    frame = frame.astype(object).where(frame.notna(), None)  # NULL as None, not NaN
    return [tuple(r) for r in frame.itertuples(index=False)]


def writers_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == WRITER]


class Seen(el.Projection):
    """Records what get() answers, so a test can compare it across batch sizes."""

    name = "seen"
    schema = {"key": "VARCHAR", "level": "DOUBLE", "count": "INTEGER", "note": "VARCHAR"}
    answers: list = []

    def on_Set(self, event):
        self.upsert(event.stream_id, **event.data)

    def on_Bump(self, event):
        row = self.get(event.stream_id)
        type(self).answers.append(
            None if row is None else {k: (v, type(v).__name__) for k, v in row.items()}
        )
        count = 0 if row is None or row["count"] is None else row["count"]
        self.upsert(event.stream_id, count=count + 1)

    def on_Drop(self, event):
        self.delete(event.stream_id)


def catch_up(
    store: el.EventStore, batch_size: int, *, ahead: bool = True
) -> tuple[list, list[tuple], dict]:
    """Rebuild ``seen`` with this batch size: (what get() answered, the rows, the status).

    ``ahead=False`` applies every batch the careful way, one after the other, as the
    runner did before it fed batches ahead of their writes: the reference.
    """
    Seen.answers = []
    runner = el.ProjectionRunner(store, [Seen], batch_size=batch_size)
    if ahead:
        runner.rebuild()
    else:
        with mock.patch.object(runner, "_feed_ahead", return_value=runner_module._NOT_TRIED):
            runner.rebuild()
    status = runner.status().iloc[0]
    fields = ["state", "checkpoint", "failed_position", "failed_type", "last_error"]
    assert writers_alive() == []
    return list(Seen.answers), rows(store, "seen"), {f: status[f] for f in fields}


def test_the_next_batch_reads_rows_as_duckdb_gives_them_back(store):
    # An int given for the DOUBLE column comes back from DuckDB as a float, and a str
    # given for the INTEGER column as an int: the next batch must see those, not what
    # the handler gave.
    store.append("a", [ev("Set", level=3, count="7", note="x")])
    store.append("a", [ev("Bump")])
    store.append("b", [ev("Set", level=2.5, count=1, note="y")])
    store.append("b", [ev("Bump")])
    answers, table, status = catch_up(store, batch_size=1)
    assert answers == [
        {
            "key": ("a", "str"),
            "level": (3.0, "float"),
            "count": (7, "int"),
            "note": ("x", "str"),
        },
        {
            "key": ("b", "str"),
            "level": (2.5, "float"),
            "count": (1, "int"),
            "note": ("y", "str"),
        },
    ]
    assert table == [("a", 3.0, 8, "x"), ("b", 2.5, 2, "y")]
    assert status["state"] == "caught up"
    assert catch_up(store, batch_size=1, ahead=False) == (answers, table, status)


def test_a_row_the_batch_before_only_upserted_is_read_from_duckdb(store):
    # Batch 1 stores the row; batch 2 upserts one column without reading it (its
    # other columns unknown to the runner); batch 3 reads the whole row.
    store.append("a", [ev("Set", level=1.5, count=4, note="kept")])
    store.append("a", [ev("Set", note="changed")])
    store.append("a", [ev("Bump")])
    answers, table, _ = catch_up(store, batch_size=1)
    assert answers == [
        {
            "key": ("a", "str"),
            "level": (1.5, "float"),
            "count": (4, "int"),
            "note": ("changed", "str"),
        }
    ]
    assert table == [("a", 1.5, 5, "changed")]


def test_a_row_deleted_by_the_batch_before_is_gone_for_the_next(store):
    store.append("a", [ev("Set", level=1.0, count=1, note="x")])
    store.append("a", [ev("Drop")])
    store.append("a", [ev("Bump")])  # no row: get() answers None, the upsert makes one
    store.append("a", [ev("Bump")])
    answers, table, _ = catch_up(store, batch_size=1)
    assert answers[0] is None
    assert answers[1] == {
        "key": ("a", "str"),
        "level": (None, "NoneType"),
        "count": (1, "int"),
        "note": (None, "NoneType"),
    }
    assert table == [("a", None, 2, None)]


def test_a_failed_background_write_stops_the_projection_at_its_event(store):
    # 2**40 passes Arrow (int64) and fails only in DuckDB (INTEGER): the write on the
    # thread fails, after the next batch was fed already.
    store.append("a", [ev("Set", count=1)])
    store.append("b", [ev("Set", count=2**40)])
    store.append("c", [ev("Set", count=3)])
    store.append("d", [ev("Set", count=4)])
    _, table, status = catch_up(store, batch_size=1)
    assert table == [("a", None, 1, None)]
    assert status["state"] == "failed"
    assert status["checkpoint"] == 1
    assert status["failed_position"] == 2
    assert status["failed_type"] == "Set"
    assert "ConversionException" in status["last_error"]
    for batch_size in (1, 2, 1000):
        expected = catch_up(store, batch_size, ahead=False)
        assert expected == ([], table, status)
        assert catch_up(store, batch_size) == expected


def test_a_handler_failing_in_a_batch_fed_ahead_stops_there(store):
    store.append("a", [ev("Set", count=1)])
    store.append("b", [ev("Set", count=2)])
    store.append("c", [ev("Set", nothing=3)])  # no such column
    store.append("d", [ev("Set", count=4)])
    _, table, status = catch_up(store, batch_size=1)
    assert table == [("a", None, 1, None), ("b", None, 2, None)]
    assert (status["state"], status["checkpoint"], status["failed_position"]) == ("failed", 2, 3)
    assert "unknown column(s) ['nothing']" in status["last_error"]
    for batch_size in (1, 3, 1000):
        expected = catch_up(store, batch_size, ahead=False)
        assert expected == ([], table, status)
        assert catch_up(store, batch_size) == expected


def test_leaving_early_waits_for_the_write_and_keeps_its_checkpoint(store, monkeypatch):
    for n in range(6):
        store.append(f"k{n}", [ev("Set", count=n)])
    ticks = iter(range(1000))
    # catch_up() reads the clock once for the deadline, then once per batch: the third
    # batch finds the deadline passed while the second one's write may still run.
    monkeypatch.setattr(runner_module.time, "monotonic", lambda: float(next(ticks)))
    runner = el.ProjectionRunner(store, [Seen], batch_size=1)
    with pytest.raises(el.ConsistencyTimeout):
        runner.catch_up(timeout=2.5)
    monkeypatch.undo()
    assert writers_alive() == []
    checkpoint = runner.status().iloc[0]["checkpoint"]
    stored = store.sql("SELECT position FROM checkpoints WHERE name = 'seen'")["position"][0]
    assert checkpoint == stored == 2
    assert rows(store, "seen") == [("k0", None, 0, None), ("k1", None, 1, None)]
    runner.catch_up()
    assert rows(store, "seen") == [(f"k{n}", None, n, None) for n in range(6)]


VALUES = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False).map(lambda x: round(x, 2)),
    st.sampled_from(["1", "2.5", "x"]),
)


@st.composite
def histories(draw) -> list[tuple[str, el.Event]]:
    keys = st.sampled_from(["a", "b", "c"])
    steps = []
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["Set", "Set", "Bump", "Bump", "Drop"]))
        data = {}
        if kind == "Set":
            columns = draw(st.lists(st.sampled_from(["level", "count", "note"]), unique=True))
            data = {c: draw(VALUES) for c in columns}
        steps.append((draw(keys), el.Event(kind, data)))
    return steps


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories(), batch_size=st.integers(1, 4))
def test_batches_fed_ahead_give_what_batches_applied_one_by_one_give(history, batch_size):
    """Whatever the values' types (some DuckDB refuses, some it casts), feeding batches
    ahead of their writes stores and fails exactly as applying them one after the
    other does, and its handlers see the same rows.

    (When a write fails, the batch fed ahead of it is fed again later or never
    applied: its handlers' calls are then extra, as on the runner's other careful
    paths, so only a run that caught up is compared call by call.)
    """
    with el.EventStore(clock=make_clock()) as store:
        for stream_id, event in history:
            store.append(stream_id, [event])
        expected_answers, *expected = catch_up(store, batch_size, ahead=False)
        answers, *result = catch_up(store, batch_size)
        assert result == expected
        if expected[1]["state"] == "caught up":
            assert answers == expected_answers


def test_a_catch_up_of_one_batch_writes_in_the_runners_thread(store, monkeypatch):
    # Following the bus catches up a few events at a time: nothing to overlap, so no
    # thread is started for them.
    started = []
    real = runner_module.BackgroundWrite

    def counted(cursor, steps):
        started.append(len(steps))
        return real(cursor, steps)

    monkeypatch.setattr(runner_module, "BackgroundWrite", counted)
    store.append("a", [ev("Set", count=1), ev("Set", count=2)])
    runner = el.ProjectionRunner(store, [Seen], batch_size=2)
    runner.catch_up()
    assert started == []
    store.append("b", [ev("Set", count=3), ev("Set", count=4), ev("Set", count=5)])
    runner.catch_up()  # three events in batches of two: both written on threads
    assert started == [2, 2]  # each: its row and its checkpoint
    assert rows(store, "seen") == [("a", None, 2, None), ("b", None, 5, None)]


def test_a_background_write_that_cannot_start_leaves_nothing_registered(store):
    import pyarrow as pa

    from eventlab.write_behind import BackgroundWrite

    cursor = store._cursor()
    table = pa.table({"x": [1]})
    steps = [
        ("SELECT 1", None, "_written_rows_0", table),
        ("SELECT $1", [1], None, None),  # parameters: refused
    ]
    with pytest.raises(ValueError, match="takes no parameters"):
        BackgroundWrite(cursor, steps)
    with pytest.raises(Exception, match="_written_rows_0"):
        cursor.execute("SELECT * FROM _written_rows_0")
    assert writers_alive() == []
