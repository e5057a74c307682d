"""Importing XES logs (eventlab.xes, xes_fast, xes_general): exact events, both readers, errors."""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
import real_logs
import xes_documents as docs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlab as el
from eventlab import xes, xes_fast, xes_general
from eventlab.cli import main
from eventlab.xes_log import Source


def general_only(monkeypatch) -> None:
    """Make read_xes use the general reader (as if the fast one had given up)."""

    def give_up(source):
        raise xes_fast.NotFast("forced by the test")

    monkeypatch.setattr(xes_fast, "read", give_up)


def write(tmp_path: Path, text: str, name: str = "log.xes", *, compress: bool = False) -> Path:
    path = tmp_path / name
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


SMALL = """<?xml version="1.0" encoding="UTF-8" ?>
<log xes.version="1.0" xmlns="http://www.xes-standard.org/">
  <trace>
    <string key="concept:name" value="case-1"/>
    <date key="opened" value="2024-05-01T10:00:00+02:00"/>
    <event>
      <string key="concept:name" value="Submit"/>
      <date key="time:timestamp" value="2024-05-01T10:15:00.250+02:00"/>
      <string key="lifecycle:transition" value="complete"/>
      <int key="amount" value="1200"/>
      <float key="rate" value="0.25"/>
      <boolean key="urgent" value="true"/>
      <id key="ref" value="a1b2"/>
    </event>
    <event>
      <string key="concept:name" value="Approve"/>
      <date key="time:timestamp" value="2024-05-02T09:00:00Z"/>
    </event>
  </trace>
</log>
"""


def test_an_xes_log_becomes_streams_of_typed_events(store, tmp_path):
    assert store.import_xes(write(tmp_path, SMALL)) == 2
    events = store.events()
    assert events["stream_id"].tolist() == ["case-1", "case-1"]
    assert events["type"].tolist() == ["Submit", "Approve"]
    assert events["version"].tolist() == [1, 2]
    assert [t.isoformat() for t in events["occurred_at"]] == [
        "2024-05-01T08:15:00.250000+00:00",
        "2024-05-02T09:00:00+00:00",
    ]
    assert events["data"].tolist() == [
        {
            "lifecycle:transition": "complete",
            "amount": 1200,
            "rate": 0.25,
            "urgent": True,
            "ref": "a1b2",
        },
        {},
    ]
    assert events["metadata"].tolist() == [{"opened": "2024-05-01T08:00:00.000000Z"}] * 2


def test_gzipped_plain_and_misnamed_files_read_the_same(tmp_path):
    plain = xes.read_xes(write(tmp_path, SMALL))
    assert xes.read_xes(write(tmp_path, SMALL, "log.xes.gz", compress=True)).equals(plain)
    assert xes.read_xes(write(tmp_path, SMALL, "log.txt", compress=True)).equals(plain)


def test_the_general_reader_gives_the_same_events(tmp_path, monkeypatch):
    path = write(tmp_path, SMALL)
    fast = xes.read_xes(path)
    general_only(monkeypatch)
    assert xes.read_xes(path).equals(fast)


# ---------------------------------------------------------------------- random logs


def _check_document(tmp_path: Path, traces, style, chunk: int | None, monkeypatch) -> None:
    path = write(tmp_path, docs.write(traces, style), "random.xes")
    expected = docs.expected_rows(traces)
    if chunk is not None:
        monkeypatch.setattr(xes_fast, "CHUNK_SIZE", chunk)
    table = xes.read_xes(path)
    assert docs.decoded(table) == expected
    # The general reader, on its own, agrees.
    assert docs.decoded(xes.assemble(xes_general.read(Source(path)))) == expected


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(traces=docs.logs(), style=docs.styles(), chunk=st.one_of(st.none(), st.integers(8, 300)))
def test_random_logs_in_any_xml_style(tmp_path, monkeypatch, traces, style, chunk):
    """Whatever the quoting, order, spacing, line ends, comments, references, prefixes and
    block boundaries, the events are the ones written."""
    _check_document(tmp_path, traces, style, chunk, monkeypatch)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(traces=docs.logs(nested=True), style=docs.styles())
def test_random_logs_with_list_attributes(tmp_path, monkeypatch, traces, style):
    _check_document(tmp_path, traces, style, None, monkeypatch)


def test_the_fast_reader_reads_the_usual_layout_itself(tmp_path):
    """The usual layout (what ProM, OpenXES and pm4py write) never falls back to expat."""
    style = {
        "quote": '"',
        "value_first": False,
        "space_before_slash": False,
        "newline": "\n",
        "indent": "\t",
        "comments": True,
        "prefix": "",
        "references": True,
        "declaration": True,
        "header": True,
        "seed": 1,
    }
    traces = [
        docs.Trace(
            "c1",
            [docs.Attribute("int", "size", 3)],
            [
                docs.Event(
                    "A", datetime(2024, 1, 1, tzinfo=UTC), [docs.Attribute("string", "x", "&")]
                )
            ],
        )
    ]
    for space in (False, True):
        style["space_before_slash"] = space
        path = write(tmp_path, docs.write(traces, style))
        parsed = xes_fast.read(Source(path))  # raises NotFast if it gave up
        assert docs.decoded(xes.assemble(parsed)) == docs.expected_rows(traces)


@pytest.mark.parametrize(
    "text",
    [
        # a list attribute: nested
        '<log><trace><string key="concept:name" value="c"/><event>'
        '<string key="concept:name" value="A"/><list key="l"><values>'
        '<int key="i" value="1"/></values></list></event></trace></log>',
        # an attribute with attributes of its own
        '<log><trace><string key="concept:name" value="c"/><event>'
        '<string key="concept:name" value="A"><int key="i" value="1"/></string>'
        "</event></trace></log>",
        # a DTD that defines an entity
        '<!DOCTYPE log [<!ENTITY who "Alice">]><log><trace><string key="concept:name" value="c"/>'
        '<event><string key="concept:name" value="&who;"/></event></trace></log>',
    ],
)
def test_what_the_fast_reader_leaves_to_the_general_one(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(xes_fast.NotFast):
        xes_fast.read(Source(path))
    [event] = docs.decoded(xes.read_xes(path))
    assert event["type"] in ("A", "Alice")


def test_text_and_cdata_are_ignored_by_both_readers(tmp_path):
    text = (
        '<log><trace>hello "there"<string key="concept:name" value="c"/><event><![CDATA[<x y="">]]>'
        '<string key="concept:name" value="A"/> text </event></trace></log>'
    )
    path = write(tmp_path, text)
    fast = xes.assemble(xes_fast.read(Source(path)))
    assert fast.equals(xes.assemble(xes_general.read(Source(path))))
    assert docs.decoded(fast)[0]["type"] == "A"


def test_nested_attributes_become_json(tmp_path):
    text = (
        '<log><trace><string key="concept:name" value="c"/>'
        '<container key="address"><string key="city" value="Lyon"/><int key="zip" value="69001"/>'
        "</container><event>"
        '<string key="concept:name" value="A"/>'
        '<list key="items"><values><int key="n" value="1"/><boolean key="b" value="0"/>'
        "</values></list>"
        '<float key="price" value="9.5"><string key="currency" value="EUR"/></float>'
        "</event></trace></log>"
    )
    [event] = docs.decoded(xes.read_xes(write(tmp_path, text)))
    assert event["data"] == {
        "items": [1, False],
        "price": {"value": 9.5, "children": {"currency": "EUR"}},
    }
    assert event["metadata"] == {"address": {"city": "Lyon", "zip": 69001}}


def test_another_encoding_is_read_by_the_general_reader(tmp_path):
    text = SMALL.replace("UTF-8", "ISO-8859-1").replace("Submit", "Réviser")
    path = tmp_path / "latin1.xes"
    path.write_bytes(text.encode("latin-1"))
    assert xes.read_xes(path)["type"].to_pylist() == ["Réviser", "Approve"]


def test_values_of_every_type_and_edge(tmp_path):
    text = (
        '<log><trace><string key="concept:name" value="c"/><event>'
        '<string key="concept:name" value="A"/>'
        '<int key="big" value=" -9223372036854775808"/><int key="plus" value="+7"/>'
        '<float key="nan" value="NaN"/><float key="inf" value="-INF"/><float key="e" value="1e-3"/>'
        '<boolean key="t" value="TRUE"/><boolean key="f" value="0"/>'
        '<date key="naive" value="2024-05-01T10:00:00"/>'
        '<string key="spaces" value="a&#10;b\tc  d"/>'
        '<string key="dup" value="first"/><string key="dup" value="last"/>'
        "</event></trace></log>"
    )
    for reader in ("fast", "general"):
        path = write(tmp_path, text)
        parsed = xes_fast.read(Source(path)) if reader == "fast" else xes_general.read(Source(path))
        [event] = docs.decoded(xes.assemble(parsed))
        assert event["data"] == {
            "big": -9223372036854775808,
            "plus": 7,
            "nan": None,
            "inf": None,
            "e": 0.001,
            "t": True,
            "f": False,
            "naive": "2024-05-01T10:00:00.000000Z",
            "spaces": "a\nb c  d",
            "dup": "last",
        }, reader
        assert list(event["data"]) == [
            "big",
            "plus",
            "nan",
            "inf",
            "e",
            "t",
            "f",
            "naive",
            "spaces",
            "dup",
        ]


def test_an_event_without_time_occurs_when_recorded(tmp_path, store):
    text = (
        '<log><trace><string key="concept:name" value="c"/><event>'
        '<string key="concept:name" value="A"/></event></trace></log>'
    )
    store.import_xes(write(tmp_path, text))
    [event] = store.read_all()
    assert event.occurred_at == event.recorded_at == datetime(2024, 1, 1, tzinfo=UTC)


def test_traces_without_events_and_names_are_no_streams(tmp_path, store):
    text = (
        "<log><trace/><trace><int key='n' value='1'/></trace>"
        '<trace><string key="concept:name" value="c"/><event>'
        '<string key="concept:name" value="A"/></event></trace></log>'
    )
    assert store.import_xes(write(tmp_path, text)) == 1
    assert store.streams() == ["c"]


def test_importing_twice_continues_the_streams(tmp_path, store):
    path = write(tmp_path, SMALL)
    store.import_xes(path)
    store.import_xes(path)
    assert store.version("case-1") == 4
    assert store.head == 4


def test_progress_bar(tmp_path, store, capsys):
    store.import_xes(write(tmp_path, SMALL), progress=True)
    assert "reading log.xes" in capsys.readouterr().err


# ---------------------------------------------------------------------- errors


def _lines(*body: str) -> str:
    return "\n".join(body) + "\n"


GOOD_TRACE = (
    '<trace><string key="concept:name" value="c"/><event>'
    '<string key="concept:name" value="A"/></event></trace>'
)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            _lines("<log>", GOOD_TRACE, "<trace>", "<event>", "</trace>", "</log>"),
            "line 5, column 3: the file is not well-formed XML (mismatched tag)",
        ),
        (
            _lines("<log>", GOOD_TRACE, "<trace>", '<string key="concept:name" value="c"/>'),
            "line 5, column 1: the file is not well-formed XML (no element found)",
        ),
        (
            _lines("<log>", GOOD_TRACE, '<trace><string key="x" value="a & b"/></trace>', "</log>"),
            "line 3, column 34: the file is not well-formed XML (not well-formed (invalid token))",
        ),
        (
            _lines("<log>", GOOD_TRACE, "</log>", "<log>"),
            "line 4, column 1: the file is not well-formed XML (junk after document element)",
        ),
        (
            _lines(
                "<log>",
                '<trace><string key="concept:name" value="c"/>',
                "<event>",
                '<string key="concept:name" value="A"/>',
                '<date key="time:timestamp" value="yesterday"/>',
                "</event></trace></log>",
            ),
            "line 5: cannot read 'yesterday' as a time (time:timestamp)",
        ),
        (
            _lines(
                "<log>",
                '<trace><string key="concept:name" value="c"/>',
                '<event><string key="concept:name" value="A"/>',
                '<int key="n" value="1.5"/></event></trace></log>',
            ),
            "line 4: cannot read '1.5' as an int (attribute 'n')",
        ),
        (
            _lines(
                "<log>",
                GOOD_TRACE,
                '<trace><string key="concept:name" value="d"/>',
                '<event><string key="lifecycle:transition" value="start"/></event>',
                "</trace></log>",
            ),
            "line 4: an event without a concept:name",
        ),
        (
            _lines(
                "<log>",
                GOOD_TRACE,
                "<trace>",
                '<event><string key="concept:name" value="A"/>',
                "</event></trace></log>",
            ),
            "line 3: a trace without a concept:name",
        ),
        (
            _lines("<events>", "</events>"),
            "line 1: this is not an XES log: its root element is <events>",
        ),
        (
            _lines("<log>", '<event><string key="concept:name" value="A"/></event>', "</log>"),
            "line 2: an <event> outside any <trace>",
        ),
        ("", "line 1, column 1: the file is not well-formed XML (no element found)"),
    ],
)
def test_bad_files_name_the_line_and_write_nothing(tmp_path, store, snapshot, text, message):
    store.import_xes(write(tmp_path, SMALL, "good.xes"))
    before = snapshot(store)
    with pytest.raises(el.XesError) as caught:
        store.import_xes(write(tmp_path, text, "bad.xes"))
    assert message in str(caught.value)
    before.assert_same(store)


@pytest.mark.parametrize(
    "value",
    [
        "epoch",  # DuckDB's cast alone reads 1970-01-01
        "infinity",  # ... and the end of time, which once named "event 0", not a line
        "-infinity",
        "2024-01-01T00:00:00+25:00",  # an offset of a day and more
        "2024-01-01T00:00:00+05:99",
        "0001-01-01T00:00:00+01:00",  # year 0 in UTC
        "2024-01-01 12:00:00 Europe/Amsterdam",
    ],
)
@pytest.mark.parametrize("key", ["time:timestamp", "due"])
@pytest.mark.parametrize("reader", ["fast", "general"])
def test_words_and_offsets_beyond_a_day_are_not_times(
    tmp_path, store, monkeypatch, value, key, reader
):
    if reader == "general":
        general_only(monkeypatch)
    text = _lines(
        "<log>",
        '<trace><string key="concept:name" value="c"/>',
        '<event><string key="concept:name" value="A"/>',
        f'<date key="{key}" value="{value}"/>',
        "</event></trace></log>",
    )
    what = "a time (time:timestamp)" if key == "time:timestamp" else "a date (attribute 'due')"
    with pytest.raises(el.XesError) as caught:
        store.import_xes(write(tmp_path, text))
    assert f"line 4: cannot read {value!r} as {what}" in str(caught.value)
    assert store.head == 0


@pytest.mark.parametrize("value", ["epoch", "2024-01-01T00:00:00+05:99", "2024-13-01"])
def test_nested_dates_are_read_by_the_same_rule(tmp_path, store, value):
    # Nested values are read in Python, flat ones in DuckDB: the same values are times.
    text = _lines(
        "<log>",
        '<trace><string key="concept:name" value="c"/>',
        '<event><string key="concept:name" value="A"/>',
        f'<container key="box"><date key="d" value="{value}"/></container>',
        "</event></trace></log>",
    )
    with pytest.raises(el.XesError, match=re.escape(f"line 4: cannot read '{value}' as date")):
        store.import_xes(write(tmp_path, text))
    ok = text.replace(value, "2024-01-01T00:00:00+23:59")
    store.import_xes(write(tmp_path, ok))
    assert next(store.read_all()).data == {"box": {"d": "2023-12-31T00:01:00.000000Z"}}


def test_missing_and_unreadable_files(tmp_path, store):
    with pytest.raises(el.XesError, match="no file at"):
        store.import_xes(tmp_path / "nope.xes")
    with pytest.raises(el.XesError, match="a directory at"):
        store.import_xes(tmp_path)
    broken = tmp_path / "broken.xes.gz"
    broken.write_bytes(gzip.compress(SMALL.encode())[:-30])
    with pytest.raises(el.XesError, match="cannot read .*broken.xes.gz"):
        store.import_xes(broken)
    assert store.head == 0


def test_read_only_store_refuses_before_reading(tmp_path, store_path):
    el.EventStore(store_path).close()
    with el.EventStore(store_path, read_only=True) as store, pytest.raises(el.ReadOnlyError):
        store.import_xes(tmp_path / "does-not-matter.xes")


# ---------------------------------------------------------------------- real logs


@pytest.mark.parametrize("name", [real_logs.HELPDESK, real_logs.BPIC2012])
def test_real_logs_match_what_pm4py_reads(name, pm4py_logs):
    """Every event's case, activity, time and attributes, as an independent reader sees them."""
    table = xes.read_xes(real_logs.path(name))
    events, streams = real_logs.SIZES[name]
    assert table.num_rows == events
    assert len(set(table["stream_id"].to_pylist())) == streams
    theirs = pm4py_logs(name)
    assert table["stream_id"].to_pylist() == theirs["case:concept:name"].tolist()
    assert table["type"].to_pylist() == theirs["concept:name"].tolist()
    ours_times = pa.array(table["occurred_at"]).to_pandas()
    assert (ours_times.to_numpy() == theirs["time:timestamp"].dt.tz_convert("UTC").to_numpy()).all()
    data = [json.loads(d) for d in table["data"].to_pylist()]
    for column in theirs.columns:
        if column.startswith("case:") or column in ("concept:name", "time:timestamp"):
            continue
        values = theirs[column].tolist()
        mine = [d.get(column) for d in data]
        assert mine == [None if v != v else v for v in values], column  # NaN: absent


def test_real_logs_are_read_alike_by_both_readers(monkeypatch):
    path = real_logs.path(real_logs.HELPDESK)
    fast = xes.read_xes(path)
    general_only(monkeypatch)
    assert xes.read_xes(path).equals(fast)


def test_bpic2012_first_events_exactly(tmp_path):
    with el.EventStore() as store:
        assert store.import_xes(real_logs.path(real_logs.BPIC2012)) == 262_200
        first = store.read_stream("173688")
        assert len(first) == 26
        assert [e.type for e in first[:5]] == [
            "A_SUBMITTED",
            "A_PARTLYSUBMITTED",
            "A_PREACCEPTED",
            "W_Completeren aanvraag",
            "W_Completeren aanvraag",
        ]
        assert first[0].occurred_at == datetime(2011, 9, 30, 22, 38, 44, 546000, tzinfo=UTC)
        assert first[0].data == {"org:resource": "112", "lifecycle:transition": "COMPLETE"}
        assert first[4].data == {"lifecycle:transition": "START"}  # no org:resource
        assert first[0].metadata == {
            "REG_DATE": "2011-09-30T22:38:44.546000Z",
            "AMOUNT_REQ": "20000",
        }


# ---------------------------------------------------------------------- the command line


def test_cli_imports_xes(tmp_path, capsys):
    target = tmp_path / "log.duckdb"
    assert (
        main(["import", str(write(tmp_path, SMALL, "log.xes.gz", compress=True)), str(target)]) == 0
    )
    assert capsys.readouterr().out.startswith("Imported 2 events from")
    with el.EventStore(target, read_only=True) as store:
        assert store.streams() == ["case-1"]


def test_cli_reports_a_bad_xes_file_and_creates_no_store(tmp_path, capsys):
    target = tmp_path / "log.duckdb"
    assert main(["import", str(write(tmp_path, "<log><trace>", "bad.xes")), str(target)]) == 1
    assert "eventlab: error: line 1, column 13: the file is not well-formed XML" in (
        capsys.readouterr().err
    )
    assert not target.exists()
