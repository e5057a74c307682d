"""Importing event CSV files (eventlab.csv_import): mapping, typed payloads, errors by row."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest
import real_logs

import eventlab as el
from eventlab.cli import main

CSV = """\
case:concept:name,case:channel,concept:name,time:timestamp,org:resource,cost,urgent,note
c1,web,Submit,2024-05-01T10:00:00+02:00,Ann,12.5,true,"a, ""quoted"" note"
c1,web,Approve,2024-05-01 12:30:00,Bob,,false,
c2,phone,Submit,2024-05-02T08:00:00Z,Ann,3,true,x
"""


def write(tmp_path: Path, text: str, name: str = "log.csv") -> Path:
    path = tmp_path / name
    data = text.encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


XES_NAMES = {"stream": "case:concept:name", "type": "concept:name", "occurred_at": "time:timestamp"}


def test_rows_become_events_with_typed_payloads(store, tmp_path):
    assert store.import_csv(write(tmp_path, CSV), **XES_NAMES) == 3
    events = store.events()
    assert events["stream_id"].tolist() == ["c1", "c1", "c2"]
    assert events["type"].tolist() == ["Submit", "Approve", "Submit"]
    assert events["version"].tolist() == [1, 2, 1]
    assert [t.isoformat() for t in events["occurred_at"]] == [
        "2024-05-01T08:00:00+00:00",
        "2024-05-01T12:30:00+00:00",  # no offset: UTC
        "2024-05-02T08:00:00+00:00",
    ]
    assert events["data"].tolist() == [
        {"org:resource": "Ann", "cost": 12.5, "urgent": True, "note": 'a, "quoted" note'},
        {"org:resource": "Bob", "urgent": False},  # empty cells are left out
        {"org:resource": "Ann", "cost": 3.0, "urgent": True, "note": "x"},
    ]
    # case: columns describe the case: metadata, without the prefix (as in an XES import)
    assert events["metadata"].tolist() == [
        {"channel": "web"},
        {"channel": "web"},
        {"channel": "phone"},
    ]


def test_chosen_data_and_metadata_columns(store, tmp_path):
    store.import_csv(
        write(tmp_path, CSV, "log.csv.gz"),
        stream="case:concept:name",
        type="concept:name",
        data=["cost"],
        metadata=["org:resource"],
    )
    first = next(store.read_all())
    assert first.data == {"cost": 12.5}
    assert first.metadata == {"org:resource": "Ann"}
    assert first.occurred_at == first.recorded_at  # no occurred_at column given


def test_times_in_data_are_utc_text(store, tmp_path):
    text = "id,kind,at,due\nx,Made,2024-01-01T00:00:00Z,2024-02-01T10:00:00+01:00\n"
    store.import_csv(write(tmp_path, text), stream="id", type="kind", occurred_at="at")
    assert next(store.read_all()).data == {"due": "2024-02-01T09:00:00.000000Z"}


OWN_NAMES = {"stream": "id", "type": "kind", "occurred_at": "at"}


@pytest.mark.parametrize(
    "text, names, error, message",
    [
        (
            CSV.replace("2024-05-01 12:30:00", "soon"),
            XES_NAMES,
            el.CsvError,
            "row 2: cannot read 'soon' in column 'time:timestamp' as a time",
        ),
        (
            CSV.replace("c2,phone", ",phone"),
            XES_NAMES,
            el.CsvError,
            "row 3: the stream column 'case:concept:name' is empty",
        ),
        (
            CSV.replace("Approve", ""),
            XES_NAMES,
            el.CsvError,
            "row 2: the type column 'concept:name' is empty",
        ),
        (
            CSV.replace("time:timestamp", "when"),
            XES_NAMES,
            el.MissingColumnsError,
            "log.csv has no column(s) ['time:timestamp']; its columns are ['case:concept:name',",
        ),
        (
            "id,kind,at\nx,Made,2024-01-01\ny,Made,2024-01-02,extra\n",
            OWN_NAMES,
            el.CsvError,
            "cannot read log.csv as CSV: row 2: Expected 3 columns, got 4: y,Made,2024-01-02,extra",
        ),
        (
            "id,kind,at\nx,Made,12\n",
            OWN_NAMES,
            el.CsvError,
            "row 1: cannot read '12' in column 'at' as a time; use ISO 8601",
        ),
        (
            "case,activity,time,amount,amount\nc1,A,2024-01-01T00:00:00Z,1,2\n",
            {"stream": "case", "type": "activity", "occurred_at": "time"},
            el.CsvError,
            "log.csv has more than one column named 'amount' (header: ['case', 'activity', "
            "'time', 'amount', 'amount']); rename one of them",
        ),
    ],
)
def test_bad_files_name_the_row_and_write_nothing(
    store, tmp_path, snapshot, text, names, error, message
):
    store.import_csv(write(tmp_path, CSV, "good.csv"), **XES_NAMES)
    before = snapshot(store)
    with pytest.raises(error) as caught:
        store.import_csv(write(tmp_path, text, "log.csv"), **names)
    assert message in str(caught.value)
    before.assert_same(store)


NAMES = {"stream": "case", "type": "activity", "occurred_at": "time"}


def test_ids_and_types_are_text_exactly_as_written(store, tmp_path):
    text = (
        "case,activity,time\n"
        "01,10,2024-01-01T00:00:00Z\n"
        "1,010,2024-01-01T01:00:00Z\n"
        "001,1e1,2024-01-01T02:00:00Z\n"
        "true,1.0,2024-01-01T03:00:00Z\n"
    )
    store.import_csv(write(tmp_path, text), **NAMES)
    events = store.events()
    assert events["stream_id"].tolist() == ["01", "1", "001", "true"]
    assert events["type"].tolist() == ["10", "010", "1e1", "1.0"]
    assert store.streams() == ["001", "01", "1", "true"]


def test_a_data_column_is_typed_only_if_every_value_reads_back_as_written(store, tmp_path):
    text = (
        "case,activity,time,zip,n,x,price,big,flag,due,when,label\n"
        "c1,A,2024-01-01T00:00:00Z,01234,7,3,12.5,12345678901234567,true,"
        "2024-02-01T10:00:00+01:00,2024-02-01,1e1\n"
        "c1,B,2024-01-01T01:00:00Z,12345,-8,0.25,1.50,0.5,FALSE,2024-02-02 08:00,2024-02-02,-0\n"
    )
    store.import_csv(write(tmp_path, text), **NAMES)
    assert store.events()["data"].tolist() == [
        {
            "zip": "01234",  # a leading zero: the column stays text
            "n": 7,
            "x": 3.0,  # with 0.25 in the column: numbers as floats
            "price": "12.5",  # 1.50 would read back as 1.5: text
            "big": "12345678901234567",  # more digits than a float keeps: text
            "flag": True,
            "due": "2024-02-01T09:00:00.000000Z",  # times as UTC text, as in an XES import
            "when": "2024-02-01",
            "label": "1e1",
        },
        {
            "zip": "12345",
            "n": -8,
            "x": 0.25,
            "price": "1.50",
            "big": "0.5",
            "flag": False,
            "due": "2024-02-02T08:00:00.000000Z",
            "when": "2024-02-02",
            "label": "-0",
        },
    ]


def test_only_empty_cells_are_missing(store, tmp_path):
    text = (
        "case,activity,time,resource,country,note,other\n"
        'NA,NULL,2024-01-01T00:00:00Z,N/A,NA,null,""\n'
        "nan,A,,,NaN,n/a,x\n"
    )
    store.import_csv(write(tmp_path, text), **NAMES)
    events = store.events()
    assert events["stream_id"].tolist() == ["NA", "nan"]
    assert events["type"].tolist() == ["NULL", "A"]
    assert events["data"].tolist() == [
        {"resource": "N/A", "country": "NA", "note": "null"},
        {"country": "NaN", "note": "n/a", "other": "x"},
    ]


@pytest.mark.parametrize(
    "times",
    [
        ["2024-01-01T00:00:00Z", ""],  # partly empty
        ["", ""],  # an empty column: the same rule, not an error
    ],
)
def test_an_empty_time_means_the_event_occurs_when_recorded(store, tmp_path, times):
    text = "case,activity,time\n" + "".join(f"c1,A,{t}\n" for t in times)
    assert store.import_csv(write(tmp_path, text), **NAMES) == 2
    for event, given in zip(store.read_all(), times, strict=True):
        expected = datetime(2024, 1, 1, tzinfo=UTC) if given else event.recorded_at
        assert event.occurred_at == expected


def test_a_file_of_only_a_header_imports_nothing(store, tmp_path):
    assert store.import_csv(write(tmp_path, "case,activity,time\n"), **NAMES) == 0
    assert store.head == 0


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "epoch",  # DuckDB's cast alone reads 1970-01-01
        "infinity",  # ... and the end of time, which the store refused counting rows from 0
        "-infinity",
        "2024-01-01T00:00:00+25:00",  # an offset of more than a day
        "0001-01-01T00:00:00+01:00",  # year 0 in UTC
        "2024-01-01 12:00:00 Europe/Amsterdam",
        "1700000000",
    ],
)
def test_a_time_is_iso_8601_and_errors_count_rows_from_1(store, tmp_path, value):
    text = f"case,activity,time\nc1,A,2024-01-01T00:00:00Z\nc1,B,{value}\n"
    with pytest.raises(el.CsvError) as caught:
        store.import_csv(write(tmp_path, text), **NAMES)
    assert f"row 2: cannot read {value!r} in column 'time' as a time; use ISO 8601" in str(
        caught.value
    )
    assert store.head == 0


@pytest.mark.parametrize("name", ["log.csv", "log.csv.gz"])
def test_a_file_that_is_not_utf8_is_refused_with_its_line(store, tmp_path, name):
    text = "case,activity,time,who\nc1,A,2024-01-01T00:00:00Z,Ann\nc1,Prüfung,,Müller\n"
    data = text.encode("latin-1")
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(el.CsvError) as caught:
        store.import_csv(path, **NAMES)
    assert f"{name} is not UTF-8 text: line 3 holds the byte 0xFC" in str(caught.value)
    assert "Save it as UTF-8" in str(caught.value)
    assert store.head == 0


def test_other_delimiters(store, tmp_path):
    for delimiter in (";", "\t", "|"):
        text = CSV.replace(",", delimiter).replace('"a' + delimiter, '"a,')
        path = write(tmp_path, text, f"log{len(delimiter)}.csv")
        assert store.import_csv(path, **XES_NAMES) == 3
    semicolons = write(tmp_path, "a;b\nx;Y\n", "s.csv")
    assert store.import_csv(semicolons, stream="a", type="b", delimiter=";") == 1


def test_missing_file(store, tmp_path):
    with pytest.raises(el.CsvError, match="no file at"):
        store.import_csv(tmp_path / "nope.csv", stream="a", type="b")


def test_the_receipt_log(store):
    count = store.import_csv(real_logs.path(real_logs.RECEIPT), **real_logs.RECEIPT_COLUMNS)
    events, streams = real_logs.SIZES[real_logs.RECEIPT]
    assert count == events
    assert len(store.streams()) == streams
    first = store.read_stream("case-10011")[0]
    assert first.type == "Confirmation of receipt"
    assert first.occurred_at == datetime(2011, 10, 11, 11, 45, 40, 276000, tzinfo=UTC)
    assert first.data == {
        "concept:instance": "task-42933",
        "lifecycle:transition": "complete",
        "org:group": "Group 1",
        "org:resource": "Resource21",
    }
    assert first.metadata == {
        "channel": "Internet",
        "deadline": "2011-12-06T12:41:31.788000Z",
        "department": "General",
        "enddate_planned": "2011-12-06T12:41:31.788000Z",
        "group": "Group 2",
        "responsible": "Resource21",
        "startdate": "2011-10-11T11:42:22.688000Z",
    }


def test_progress_bar(store, tmp_path, capsys):
    store.import_csv(write(tmp_path, CSV), progress=True, **XES_NAMES)
    assert "importing log.csv" in capsys.readouterr().err


def test_cli_imports_csv_with_xes_names_by_default(tmp_path, capsys):
    target = tmp_path / "log.duckdb"
    assert main(["import", str(write(tmp_path, CSV)), str(target)]) == 0
    assert "Imported 3 events from" in capsys.readouterr().out
    text = "order,what,when\no-1,Placed,2024-01-01T00:00:00Z\n"
    source = write(tmp_path, text, "orders.csv")
    args = ["--stream", "order", "--type", "what", "--occurred-at", "when"]
    assert main(["import", str(source), str(target), *args]) == 0
    with el.EventStore(target, read_only=True) as store:
        assert store.streams() == ["c1", "c2", "o-1"]


def test_cli_names_a_missing_column(tmp_path, capsys):
    source = write(tmp_path, "order,what\no-1,Placed\n", "orders.csv")
    assert main(["import", str(source), str(tmp_path / "x.duckdb")]) == 1
    assert "has no column(s) ['case:concept:name', 'concept:name', 'time:timestamp']" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "x.duckdb").exists()
