"""Python values <-> boundary JSON (`flyte_connector.values`), against the
contract fixtures in `wit/fixtures/literals.json` and protobuf's own
Timestamp and Duration JSON where protobuf is installed."""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, List

import pytest

from flyte_connector.values import DataFrame, Dir, File, Typed, from_json, to_json

FIXTURES = Path(__file__).resolve().parents[3] / "wit" / "fixtures"
LITERALS = json.loads((FIXTURES / "literals.json").read_text(encoding="utf-8"))

INTEGER = {"simple": "INTEGER"}
FLOAT = {"simple": "FLOAT"}
STRING = {"simple": "STRING"}
BOOLEAN = {"simple": "BOOLEAN"}
DATETIME = {"simple": "DATETIME"}
DURATION = {"simple": "DURATION"}
NONE = {"simple": "NONE"}
OPTIONAL_FILE = {"unionType": {"variants": [{"blob": {}, "structure": {"tag": "File"}}, NONE]}}
UTC = timezone.utc

# RFC 3339 with more fractional digits than a datetime's microseconds.
FINER_THAN_MICROSECONDS = re.compile(r"\.[0-9]{7,}")


def case_id(case: Any) -> str:
    return case["name"]


# --------------------------------------------------------------------------------------
# The contract fixtures
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", LITERALS["typed"], ids=case_id)
def test_every_typed_fixture_reads_and_writes_back_unchanged(case):
    value = from_json(case["json"], case["type"])
    json_value, literal_type = to_json(value, case["type"])
    assert literal_type == case["type"]
    if isinstance(case["json"], str) and case["type"] == DATETIME and FINER_THAN_MICROSECONDS.search(case["json"]):
        # Lossy by design: a datetime holds microseconds, the rest is truncated.
        assert from_json(json_value, DATETIME) == value
    else:
        assert json_value == case["json"]
        assert json.loads(json.dumps(json_value)) == case["json"]


def test_the_typed_fixtures_cover_every_kind_the_connector_converts():
    names = {case["name"] for case in LITERALS["typed"]}
    assert {"datetime", "duration", "file", "directory", "dataframe", "dict of floats", "dataclass"} <= names


@pytest.mark.parametrize("case", LITERALS["untyped"], ids=case_id)
def test_untyped_fixture_json_goes_out_untyped_and_reads_as_is(case):
    assert to_json(case["json"]) == (case["json"], None)
    assert from_json(case["json"], None) == case["json"]


def test_fixture_values_are_the_python_values_flyte_gives():
    by_name = {case["name"]: case for case in LITERALS["typed"]}

    def read(name: str) -> Any:
        return from_json(by_name[name]["json"], by_name[name]["type"])

    assert read("datetime") == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert read("duration") == timedelta(seconds=1.5)
    assert read("file") == File("s3://bucket/data.csv")
    assert read("directory") == Dir("s3://bucket/dir")
    assert read("dataframe") == DataFrame("s3://bucket/df.parquet", "parquet")
    assert read("dict of floats") == {"a": 0.5, "b": 2.0}
    assert read("optional integer, none") is None


# --------------------------------------------------------------------------------------
# from_json
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "json_value, literal_type, expected",
    [
        (3, INTEGER, 3),
        (3, FLOAT, 3.0),
        (-0.25, FLOAT, -0.25),
        ("Infinity", FLOAT, math.inf),
        ("-Infinity", FLOAT, -math.inf),
        ("", STRING, ""),
        (False, BOOLEAN, False),
        (None, NONE, None),
        ("2024-01-02T03:04:05Z", DATETIME, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02t03:04:05.5z", DATETIME, datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
        ("2024-02-29T01:30:00.25+02:00", DATETIME, datetime(2024, 2, 28, 23, 30, 0, 250000, tzinfo=UTC)),
        ("2024-01-02T03:04:05.123456789-00:30", DATETIME, datetime(2024, 1, 2, 3, 34, 5, 123456, tzinfo=UTC)),
        ("1969-12-31T23:59:59.999999+00:00", DATETIME, datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("1.5s", DURATION, timedelta(seconds=1.5)),
        ("1.500s", DURATION, timedelta(seconds=1.5)),
        ("90s", DURATION, timedelta(seconds=90)),
        ("-3s", DURATION, timedelta(seconds=-3)),
        ("-0.000001s", DURATION, timedelta(microseconds=-1)),
        ("0.000000001s", DURATION, timedelta(0)),
        ("315576000000s", DURATION, timedelta(seconds=315576000000)),
        ([[1], []], {"collectionType": {"collectionType": INTEGER}}, [[1], []]),
        ({"a": "2024-01-02T00:00:00Z"}, {"mapValueType": DATETIME}, {"a": datetime(2024, 1, 2, tzinfo=UTC)}),
        (
            {"uri": "s3://b/f.csv", "format": "csv", "dimensionality": "SINGLE", "hash": "h1"},
            {"blob": {"format": "csv"}},
            File("s3://b/f.csv", "csv", "h1"),
        ),
        (
            {"uri": "s3://b/d", "format": "", "dimensionality": "MULTIPART"},
            {"blob": {"dimensionality": "MULTIPART"}},
            Dir("s3://b/d"),
        ),
        (
            {"uri": "s3://b/df", "format": "parquet", "hash": "h2"},
            {"structuredDatasetType": {"format": "parquet"}},
            DataFrame("s3://b/df", "parquet", "h2"),
        ),
        ({"a": [1, {"b": None}]}, {"simple": "STRUCT"}, {"a": [1, {"b": None}]}),
        ({"tag": "x", "value": "AAE="}, {"simple": "BINARY"}, {"tag": "x", "value": "AAE="}),
        ("RED", {"enumType": {"values": ["RED", "GREEN"]}}, "RED"),
        ({"uri": "s3://b/s"}, {"schema": {}}, {"uri": "s3://b/s"}),
        ({"error": {"message": "m"}}, {"simple": "ERROR"}, {"error": {"message": "m"}}),
        ({"uri": "s3://o", "size_bytes": 3}, {}, {"uri": "s3://o", "size_bytes": 3}),
        ({"uri": "s3://b/f", "format": "", "dimensionality": "SINGLE"}, OPTIONAL_FILE, File("s3://b/f")),
        (None, OPTIONAL_FILE, None),
        (None, {"unionType": {"variants": [{"simple": "STRUCT"}, NONE]}}, None),
        ([1, 2], {"collection_type": INTEGER}, [1, 2]),
    ],
)
def test_inputs_read_as_python_values(json_value, literal_type, expected):
    value = from_json(json_value, literal_type)
    assert value == expected
    assert type(value) is type(expected)


def test_datetimes_read_aware_in_utc_and_nan_reads_as_nan():
    assert from_json("2024-01-02T03:04:05+05:00", DATETIME).tzinfo is UTC
    assert math.isnan(from_json("NaN", FLOAT))


def test_untyped_json_is_taken_as_is_but_blob_shaped_objects_are_files():
    file_json = {"uri": "s3://b/f", "format": "csv", "dimensionality": "SINGLE"}
    dir_json = {"uri": "s3://b/d", "format": "", "dimensionality": "MULTIPART", "hash": "h"}
    assert from_json(file_json, None) == File("s3://b/f", "csv")
    assert from_json(dir_json, None) == Dir("s3://b/d", "", "h")
    assert from_json({"files": [file_json]}, None) == {"files": [File("s3://b/f", "csv")]}
    # Not exactly a blob's shape: left alone.
    for almost in (
        {**file_json, "extra": 1},
        {"uri": "s3://b/f", "format": "csv"},
        {**file_json, "dimensionality": "SOMETIMES"},
        {**file_json, "uri": 7},
    ):
        assert from_json(almost, None) == almost
    assert from_json("2024-01-02T03:04:05Z", None) == "2024-01-02T03:04:05Z"


@pytest.mark.parametrize(
    "json_value, literal_type, message",
    [
        ("abc", INTEGER, "expected an integer (INTEGER), got the string 'abc'"),
        (True, INTEGER, "expected an integer (INTEGER), got true"),
        (1.5, INTEGER, "expected an integer (INTEGER), got the number 1.5"),
        ("nan", FLOAT, 'expected a float (FLOAT): a number, "NaN", "Infinity" or "-Infinity", got the string \'nan\''),
        (1, STRING, "expected a string (STRING), got the number 1"),
        ("true", BOOLEAN, "expected true or false (BOOLEAN), got the string 'true'"),
        (0, NONE, "expected null (NONE), got the number 0"),
        ("2024-01-02 03:04", DATETIME, "expected an RFC 3339 datetime string (DATETIME)"),
        ("2024-01-02T03:04:05", DATETIME, "got the string '2024-01-02T03:04:05'"),
        ("2024-13-02T03:04:05Z", DATETIME, "month must be in 1..12"),
        (1700000000, DATETIME, "got the number 1700000000"),
        ("1.5", DURATION, 'expected a duration string (DURATION) such as "1.5s", got the string \'1.5\''),
        ("1m", DURATION, "got the string '1m'"),
        ("99999999999999999999s", DURATION, "which is too long"),
        ({"a": 1}, {"collectionType": INTEGER}, "expected an array (a collection), got an object"),
        ([1, "2"], {"collectionType": INTEGER}, "at [1]: expected an integer (INTEGER), got the string '2'"),
        ({"a": [None]}, {"mapValueType": {"collectionType": FLOAT}}, "at ['a'][0]: expected a float"),
        ([], {"mapValueType": INTEGER}, "expected an object (a map), got an array"),
        ("s3://b/f", {"blob": {}}, 'expected a file or directory (blob), an object with a string "uri", got the'),
        ({"uri": "s3://b/f", "dimensionality": "TRIPLE"}, {"blob": {}}, "SINGLE or MULTIPART, got the string 'TRIPLE'"),
        ({"uri": "s3://b/f", "format": 1}, {"blob": {}}, 'expected a string "format"'),
        ({"uri": "s3://b/f", "hash": 1}, {"structuredDatasetType": {}}, 'expected a string "hash" for a dataframe'),
        ("x", {"unionType": {"variants": [INTEGER, NONE]}}, "the string 'x' fits no variant of the union"),
    ],
)
def test_inputs_that_do_not_fit_their_type_are_value_errors(json_value, literal_type, message):
    with pytest.raises(ValueError) as raised:
        from_json(json_value, literal_type)
    assert message in str(raised.value)


def test_a_literal_type_must_be_a_dict():
    with pytest.raises(TypeError, match="a literal type is a dict"):
        from_json(1, "INTEGER")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# to_json
# --------------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


@dataclass
class Report:
    name: str
    at: datetime
    files: List[File] = field(default_factory=list)


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, (True, None)),
        (0, (0, None)),
        (-(2**63), (-(2**63), None)),
        (2.5, (2.5, None)),
        (math.nan, ("NaN", FLOAT)),
        (math.inf, ("Infinity", FLOAT)),
        (-math.inf, ("-Infinity", FLOAT)),
        ("s", ("s", None)),
        (None, (None, None)),
        (datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC), ("2024-01-02T03:04:05.500+00:00", DATETIME)),
        (datetime(2024, 1, 2, 3, 4, 5, 123456), ("2024-01-02T03:04:05.123456+00:00", DATETIME)),
        (
            datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-2))),
            ("2024-01-02T05:04:05+00:00", DATETIME),
        ),
        (datetime(1, 1, 1), ("0001-01-01T00:00:00+00:00", DATETIME)),
        (timedelta(seconds=1.5), ("1.500s", DURATION)),
        (timedelta(seconds=90), ("90s", DURATION)),
        (timedelta(0), ("0s", DURATION)),
        (timedelta(microseconds=-1), ("-0.000001s", DURATION)),
        (timedelta(days=-1, microseconds=10), ("-86399.999990s", DURATION)),
        (
            File("s3://b/f.csv", "csv"),
            ({"uri": "s3://b/f.csv", "format": "csv", "dimensionality": "SINGLE"}, {"blob": {"format": "csv"}}),
        ),
        (
            Dir("s3://b/d", hash="h"),
            (
                {"uri": "s3://b/d", "format": "", "dimensionality": "MULTIPART", "hash": "h"},
                {"blob": {"format": "", "dimensionality": "MULTIPART"}},
            ),
        ),
        (
            DataFrame("s3://b/df", "parquet"),
            ({"uri": "s3://b/df", "format": "parquet"}, {"structuredDatasetType": {"format": "parquet"}}),
        ),
        ((1, "a", None), ([1, "a", None], None)),
        ([], ([], None)),
        (Color.RED, ("red", None)),
        ({"n": 1, "when": datetime(2024, 1, 2)}, ({"n": 1, "when": "2024-01-02T00:00:00+00:00"}, None)),
        (
            Report("r", datetime(2024, 1, 2), [File("s3://b/f")]),
            (
                {
                    "name": "r",
                    "at": "2024-01-02T00:00:00+00:00",
                    "files": [{"uri": "s3://b/f", "format": "", "dimensionality": "SINGLE"}],
                },
                None,
            ),
        ),
        # Elements that carry a type make the list a typed collection.
        (
            [datetime(2024, 1, 2), datetime(2024, 1, 3)],
            (["2024-01-02T00:00:00+00:00", "2024-01-03T00:00:00+00:00"], {"collectionType": DATETIME}),
        ),
        ([1.5, math.nan], ([1.5, "NaN"], {"collectionType": FLOAT})),
        (
            [File("s3://b/a", "csv"), File("s3://b/b", "json")],
            (
                [
                    {"uri": "s3://b/a", "format": "csv", "dimensionality": "SINGLE"},
                    {"uri": "s3://b/b", "format": "json", "dimensionality": "SINGLE"},
                ],
                {"collectionType": {"blob": {}}},
            ),
        ),
        ([[timedelta(seconds=1)]], ([["1s"]], {"collectionType": {"collectionType": DURATION}})),
        (Typed({"a": 1}, {"mapValueType": FLOAT}), ({"a": 1.0}, {"mapValueType": FLOAT})),
        ([Typed(1, FLOAT), 2.0], ([1.0, 2.0], {"collectionType": FLOAT})),
    ],
)
def test_untyped_outputs(value, expected):
    assert to_json(value) == expected
    json.dumps(expected[0], allow_nan=False)


@pytest.mark.parametrize(
    "value, literal_type, json_value",
    [
        (3, FLOAT, 3.0),
        (math.nan, FLOAT, "NaN"),
        (Color.RED, STRING, "red"),
        (datetime(2024, 1, 2, 3, 4, 5, 6), DATETIME, "2024-01-02T03:04:05.000006+00:00"),
        (timedelta(minutes=-1, microseconds=-500000), DURATION, "-60.500s"),
        (None, NONE, None),
        ((1, 2), {"collectionType": FLOAT}, [1.0, 2.0]),
        ({"a": [1]}, {"mapValueType": {"collectionType": FLOAT}}, {"a": [1.0]}),
        (File("s3://b/f"), {"blob": {"format": "csv"}}, {"uri": "s3://b/f", "format": "", "dimensionality": "SINGLE"}),
        (
            Dir("s3://b/d"),
            {"blob": {"dimensionality": "MULTIPART"}},
            {"uri": "s3://b/d", "format": "", "dimensionality": "MULTIPART"},
        ),
        (
            DataFrame("s3://b/df", "csv", "h"),
            {"structuredDatasetType": {}},
            {"uri": "s3://b/df", "format": "csv", "hash": "h"},
        ),
        (
            Report("r", datetime(2024, 1, 2)),
            {"simple": "STRUCT"},
            {"name": "r", "at": "2024-01-02T00:00:00+00:00", "files": []},
        ),
        (File("s3://b/f"), OPTIONAL_FILE, {"uri": "s3://b/f", "format": "", "dimensionality": "SINGLE"}),
        (None, OPTIONAL_FILE, None),
        ([1, math.nan], {"simple": "STRUCT"}, [1, "NaN"]),
        (Color.RED, {"enumType": {"values": ["red"]}}, "red"),
    ],
)
def test_typed_outputs_are_written_as_their_type(value, literal_type, json_value):
    assert to_json(value, literal_type) == (json_value, literal_type)
    assert to_json(Typed(value, literal_type)) == (json_value, literal_type)


def test_typed_wins_over_a_declared_type_at_the_top_and_yields_to_it_inside():
    assert to_json(Typed(2, FLOAT), {"collectionType": INTEGER}) == (2.0, FLOAT)
    assert to_json([Typed(2, STRING)], {"collectionType": FLOAT}) == ([2.0], {"collectionType": FLOAT})


@pytest.mark.parametrize(
    "value, literal_type, error, message",
    [
        (True, INTEGER, TypeError, "expected an int for INTEGER, got bool"),
        (1.0, INTEGER, TypeError, "expected an int for INTEGER, got float"),
        ("1", FLOAT, TypeError, "expected a float or int for FLOAT, got str"),
        (1, STRING, TypeError, "expected a str for STRING, got int"),
        (1, BOOLEAN, TypeError, "expected a bool for BOOLEAN, got int"),
        ("2024-01-02T00:00:00Z", DATETIME, TypeError, "expected a datetime for DATETIME, got str"),
        (1.5, DURATION, TypeError, "expected a timedelta for DURATION, got float"),
        (0, NONE, TypeError, "expected None for NONE, got int"),
        ({"a": 1}, {"collectionType": INTEGER}, TypeError, "expected a list or tuple for a collection, got dict"),
        ([1, "2"], {"collectionType": INTEGER}, TypeError, "at [1]: expected an int for INTEGER, got str"),
        ({1: 2}, {"mapValueType": INTEGER}, TypeError, "dict keys must be strings, got int 1"),
        ({"a": {2: 1}}, {"simple": "STRUCT"}, TypeError, "at ['a']: dict keys must be strings, got int 2"),
        (File("s3://b/f"), {"blob": {"dimensionality": "MULTIPART"}}, TypeError, "a Dir for a MULTIPART blob"),
        (Dir("s3://b/d"), {"blob": {}}, TypeError, "expected a File for a SINGLE blob type, got Dir"),
        ("s3://b/f", {"blob": {}}, TypeError, "expected a File for a SINGLE blob type, got str"),
        (File("s3://b/f"), {"structuredDatasetType": {}}, TypeError, "a DataFrame for a structured dataset"),
        (2**63, INTEGER, ValueError, "integer 9223372036854775808 does not fit in 64 bits"),
        (timedelta(days=4_000_000), DURATION, ValueError, "longer than a protobuf Duration holds"),
    ],
)
def test_outputs_that_do_not_fit_their_type_are_refused(value, literal_type, error, message):
    with pytest.raises(error) as raised:
        to_json(value, literal_type)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "value, error, message",
    [
        (object(), TypeError, "object has no JSON form"),
        (b"bytes", TypeError, "bytes has no JSON form"),
        ({"a": [1, {2}]}, TypeError, "at ['a'][1]: set has no JSON form"),
        ({1: "a"}, TypeError, "dict keys must be strings, got int 1"),
        (-(2**63) - 1, ValueError, "does not fit in 64 bits"),
        ([1, 1.5, datetime(2024, 1, 2)], TypeError, "the list's elements have different types"),
        ([File("s3://b/f"), Dir("s3://b/d")], TypeError, "the list's elements have different types"),
        ([[datetime(2024, 1, 2)], [1]], TypeError, "the list's elements have different types"),
        ([datetime(2024, 1, 2), [1]], TypeError, "an untyped object or list"),
    ],
)
def test_untyped_outputs_without_a_json_form_are_refused(value, error, message):
    with pytest.raises(error) as raised:
        to_json(value)
    assert message in str(raised.value)


# --------------------------------------------------------------------------------------
# Round trips and protobuf's own JSON
# --------------------------------------------------------------------------------------

DATETIMES = [
    datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=UTC),
    datetime(2024, 1, 2, 3, 4, 5, 1, tzinfo=UTC),
    datetime(1960, 6, 30, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]
DURATIONS = [
    timedelta(0),
    timedelta(microseconds=1),
    timedelta(microseconds=-1),
    timedelta(milliseconds=1500),
    timedelta(seconds=-3),
    timedelta(days=3, microseconds=10),
    timedelta(days=-1),
    timedelta(seconds=315_576_000_000),
]


@pytest.mark.parametrize("value", DATETIMES, ids=str)
def test_datetimes_round_trip(value):
    json_value, literal_type = to_json(value)
    assert from_json(json_value, literal_type) == value


@pytest.mark.parametrize("value", DURATIONS, ids=str)
def test_durations_round_trip(value):
    json_value, literal_type = to_json(value)
    assert from_json(json_value, literal_type) == value


@pytest.mark.parametrize("value", DURATIONS, ids=str)
def test_durations_are_written_as_protobuf_writes_them(value):
    duration_pb2 = pytest.importorskip("google.protobuf.duration_pb2")
    proto = duration_pb2.Duration()
    proto.FromTimedelta(value)
    assert to_json(value)[0] == proto.ToJsonString()
    proto.FromJsonString(to_json(value)[0])
    assert proto.ToTimedelta() == value


@pytest.mark.parametrize("value", DATETIMES, ids=str)
def test_datetimes_are_written_as_protobuf_writes_them_but_with_an_offset(value):
    timestamp_pb2 = pytest.importorskip("google.protobuf.timestamp_pb2")
    proto = timestamp_pb2.Timestamp()
    proto.FromDatetime(value)
    assert to_json(value)[0] == proto.ToJsonString().replace("Z", "+00:00")
    proto.FromJsonString(to_json(value)[0])
    assert proto.ToDatetime(tzinfo=UTC) == value


# --------------------------------------------------------------------------------------
# File, Dir, DataFrame
# --------------------------------------------------------------------------------------


def test_files_dirs_and_dataframes_are_values_with_flytes_names():
    file = File("s3://b/f.csv", "csv")
    assert file.path == file.uri == "s3://b/f.csv"
    assert file == File(uri="s3://b/f.csv", format="csv")
    assert file != File("s3://b/f.csv", "csv", hash="h")
    assert File("s3://b/x") != Dir("s3://b/x")
    assert Dir("s3://b/d").path == "s3://b/d"
    assert len({file, File("s3://b/f.csv", "csv")}) == 1
    assert repr(file) == "File(uri='s3://b/f.csv', format='csv', hash=None)"
    assert repr(Dir("s3://b/d")) == "Dir(uri='s3://b/d', format='', hash=None)"
    frame = DataFrame("s3://b/df", "parquet")
    assert frame.file_format == frame.format == "parquet"
    assert repr(frame) == "DataFrame(uri='s3://b/df', format='parquet', hash=None)"
    with pytest.raises(AttributeError):
        file.uri = "elsewhere"  # type: ignore[misc]
