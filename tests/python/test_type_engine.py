"""Literals made by the real `flyte` type engine survive the echo connector.

Each value is turned into a Flyte literal (and its LiteralType, declared in the
task interface) by `flyte.types.TypeEngine` from the published `flyte` package,
sent to each echo connector (the Rust `echo` and its Python twin `echo_py`)
with the published flyteidl2 client, and the
outputs GetTask returns are read back by the same type engine:

- the output literal must equal the input literal (protobuf equality), and
- `TypeEngine.to_python_value(output, python_type)` must give the original value.

This is what a Flyte task does when its connector task returns its inputs: if
these pass, literals flyte-connect hands back are literals flyte can read.

Files, directories and dataframes reference existing remote paths
(`File(path=...)`, `File.from_existing_remote`, `Dir.from_existing_remote`,
`DataFrame.from_existing_remote`): nothing is uploaded and no storage is touched.

Every literal is compared exactly, msgpack bytes included: flyte writes a
dataclass as a msgpack map in field order with minimal-width integers and
float64 floats, and the host re-encodes the value the connector returns the
same way, so the bytes match. (A dataclass with `dict[int, ...]` or `bytes`
fields could not match: JSON, which the connector sees, has only string keys
and no bytes. None of the values here has such a field.)
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import pytest
from conftest import Var, assert_succeeded, echo_round_trip, output_literals
from flyte.io import DataFrame, Dir, File
from flyte.types import TypeEngine
from flyteidl2.core import literals_pb2

# --------------------------------------------------------------------------------------
# The values
# --------------------------------------------------------------------------------------


@dataclass
class Inner:
    code: int
    tag: Optional[str]


@dataclass
class Record:
    count: int
    label: str
    weights: list[float]
    note: Optional[str]
    inner: Inner


def _same_file(got: File, want: File) -> None:
    assert isinstance(got, File), type(got)
    assert (got.path, got.name, got.format, got.hash) == (want.path, want.name, want.format, want.hash)


def _same_dir(got: Dir, want: Dir) -> None:
    assert isinstance(got, Dir), type(got)
    assert (got.path, got.name, got.format, got.hash) == (want.path, want.name, want.format, want.hash)


def _same_dataframe(got: DataFrame, want: DataFrame) -> None:
    assert isinstance(got, DataFrame), type(got)
    assert (got.uri, got.format, got.hash) == (want.uri, want.format, want.hash)


def _equal(got: Any, want: Any) -> None:
    assert type(got) is type(want), f"read back {got!r} ({type(got)}), sent {want!r} ({type(want)})"
    assert got == want


@dataclass(frozen=True)
class Case:
    id: str
    python_type: Any
    value: Any
    # How a value read back by the type engine is compared with the one sent.
    same_value: Callable[[Any, Any], None] = _equal


UTC = datetime.timezone.utc

CASES: List[Case] = [
    Case("int", int, 1_000_000_007),
    Case("float", float, 3.25),
    Case("str", str, 'héllo, "world" ✓'),
    Case("bool", bool, True),
    Case("datetime", datetime.datetime, datetime.datetime(2024, 2, 29, 13, 45, 7, 123456, tzinfo=UTC)),
    Case("timedelta", datetime.timedelta, datetime.timedelta(days=1, seconds=3723, microseconds=456000)),
    Case("list_int", list[int], [1, -2, 3, 2**40]),
    # 2.0 is a whole number: it must stay a float.
    Case("dict_str_float", dict[str, float], {"a": 0.5, "b": 2.0, "c": -1.25}),
    Case(
        "dataclass",
        Record,
        Record(count=42, label="widgets", weights=[0.5, 2.0, -1.25], note=None, inner=Inner(code=7, tag="x")),
    ),
    # The File constructor is the documented way to reference an existing remote file
    # with a format; from_existing_remote takes no format.
    Case("file", File, File(path="s3://bucket/data.csv", format="csv"), same_value=_same_file),
    Case("dir", Dir, Dir.from_existing_remote("s3://bucket/data/"), same_value=_same_dir),
    Case(
        "dataframe",
        DataFrame,
        DataFrame.from_existing_remote("s3://bucket/data.parquet", format="parquet"),
        same_value=_same_dataframe,
    ),
    # A cache key travels as Literal.hash ("caller-supplied hash used for caching instead of
    # hashing the value", flyteidl2 core/literals.proto); flyte reads it back into .hash.
    Case(
        "file_with_cache_key",
        File,
        File.from_existing_remote("s3://bucket/data.csv", file_cache_key="sha256:5f2b"),
        same_value=_same_file,
    ),
    Case(
        "dir_with_cache_key",
        Dir,
        Dir.from_existing_remote("s3://bucket/data/", dir_cache_key="sha256:77aa"),
        same_value=_same_dir,
    ),
    Case(
        "dataframe_with_cache_key",
        DataFrame,
        DataFrame.from_existing_remote("s3://bucket/data.parquet", format="parquet", hash="sha256:c0de"),
        same_value=_same_dataframe,
    ),
    Case("optional_int", Optional[int], 7),
    Case("optional_int_none", Optional[int], None),
]

CASE_IDS = [c.id for c in CASES]


def _variable(case: Case) -> Var:
    """(name, LiteralType, Literal, python value), both made by flyte's type engine."""
    literal_type = TypeEngine.to_literal_type(case.python_type)
    literal = asyncio.run(TypeEngine.to_literal(case.value, case.python_type, literal_type))
    return case.id, literal_type, literal, case.value


def _read_back(literal: literals_pb2.Literal, case: Case) -> Any:
    return asyncio.run(TypeEngine.to_python_value(literal, case.python_type))


def _assert_same_literal(case: Case, sent: literals_pb2.Literal, got: literals_pb2.Literal) -> None:
    assert got == sent, f"{case.id}: sent literal\n{sent}\ngot back\n{got}"


def _assert_same_value(case: Case, got: literals_pb2.Literal) -> None:
    try:
        value = _read_back(got, case)
    except Exception as e:  # the type engine rejecting the literal is a failure of the round trip
        pytest.fail(f"{case.id}: flyte's type engine cannot read back\n{got}\n{type(e).__name__}: {e}")
    case.same_value(value, case.value)


def _echo(connectors, echo, variables: List[Var]) -> dict:
    resource = echo_round_trip(connectors, variables, task_type=echo.task_type)
    assert_succeeded(resource)
    outputs = output_literals(resource)
    assert sorted(outputs) == sorted(name for name, _, _, _ in variables)
    return outputs


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_flyte_type_engine_values_round_trip(connectors, echo, case: Case):
    var = _variable(case)
    outputs = _echo(connectors, echo, [var])
    _assert_same_value(case, outputs[case.id])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_echo_returns_flyte_type_engine_literals_unchanged(connectors, echo, case: Case):
    var = _variable(case)
    outputs = _echo(connectors, echo, [var])
    _assert_same_literal(case, var[2], outputs[case.id])


def test_echo_returns_all_flyte_type_engine_values_in_one_task(connectors, echo):
    variables = [_variable(case) for case in CASES]
    outputs = _echo(connectors, echo, variables)
    problems = []
    for case, (name, _, sent, _) in zip(CASES, variables):
        for check in (
            lambda: _assert_same_literal(case, sent, outputs[name]),
            lambda: _assert_same_value(case, outputs[name]),
        ):
            try:
                check()
            except (AssertionError, pytest.fail.Exception) as e:
                problems.append(f"[{case.id}] {e}")
    assert not problems, "\n\n".join(problems)
