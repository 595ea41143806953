"""Python values <-> the JSON that crosses the component boundary.

The host hands a connector each input as JSON together with the input's
Flyte `LiteralType` (proto3 JSON, e.g. `{"simple": "INTEGER"}`), and takes
each output back as JSON plus an optional literal type (the table is in
`docs/authoring/values.md`). `from_json` turns an input into the Python
value flyte would give a connector (`int`, `datetime`, `File`, ...);
`to_json` turns an output back into JSON and the literal type to send with
it.

Wire forms written here, as the host writes them (proto3 JSON):

- datetimes: RFC 3339 in UTC with `+00:00` and 0, 3 or 6 fractional digits
  (`2024-01-02T03:04:05.500+00:00`). A `datetime` holds microseconds, so an
  input with nanoseconds is truncated and does not come back unchanged.
- durations: seconds with 0, 3 or 6 fractional digits and an `s`
  (`"1.500s"`, `"90s"`, `"-0.000001s"`); nanoseconds are truncated likewise.
- non-finite floats: the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Dict, List, Optional, Tuple

__all__ = ["DataFrame", "Dir", "File", "Inputs", "Typed", "from_json", "to_json"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# The range of google.protobuf.Duration: 10,000 years either way.
_MAX_DURATION_SECONDS = 315_576_000_000
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_DIMENSIONALITIES = ("SINGLE", "MULTIPART")
_BLOB_KEYS = {"uri", "format", "dimensionality"}

_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_DURATION = re.compile(r"(-)?([0-9]+)(?:\.([0-9]+))?s")

# The keys of a LiteralType's `type` oneof, in proto3 JSON (lowerCamelCase,
# which the host writes) and as proto field names (which parsers also take).
_KINDS = {
    "simple": "simple",
    "collectionType": "collection",
    "collection_type": "collection",
    "mapValueType": "map",
    "map_value_type": "map",
    "blob": "blob",
    "structuredDatasetType": "dataframe",
    "structured_dataset_type": "dataframe",
    "schema": "schema",
    "enumType": "enum",
    "enum_type": "enum",
    "unionType": "union",
    "union_type": "union",
}


@dataclass(frozen=True)
class _Blob:
    uri: str
    format: str = ""
    hash: Optional[str] = None

    DIMENSIONALITY: ClassVar[str] = "SINGLE"

    @property
    def path(self) -> str:
        """The URI, under the name flyte 2's `flyte.io.File` and `Dir` give it."""
        return self.uri


class File(_Blob):
    """A file (a Flyte blob of dimensionality `SINGLE`): flyte's `flyte.io.File`
    as a connector sees it. `format` may be empty; `hash` is the literal's
    cache key, if it carries one. `path` is the same as `uri`."""


class Dir(_Blob):
    """A directory (a Flyte blob of dimensionality `MULTIPART`): flyte's
    `flyte.io.Dir` as a connector sees it. `format` may be empty; `hash` is
    the literal's cache key, if it carries one. `path` is the same as `uri`."""

    DIMENSIONALITY: ClassVar[str] = "MULTIPART"


@dataclass(frozen=True)
class DataFrame:
    """A dataframe (a Flyte structured dataset) stored at `uri` in `format`
    (e.g. `"parquet"`): flyte's `flyte.io.DataFrame` as a connector sees it.
    `hash` is the literal's cache key, if it carries one; `file_format` is
    the same as `format`."""

    uri: str
    format: str = ""
    hash: Optional[str] = None

    @property
    def file_format(self) -> str:
        """The format, under the name flyte gives it."""
        return self.format


@dataclass
class Typed:
    """An output with an explicit Flyte type: put `Typed(value, literal_type)`
    in `Resource.outputs` and the host builds exactly that literal type
    (proto3 JSON, e.g. `{"mapValueType": {"simple": "FLOAT"}}`), where an
    untyped value would be inferred from its JSON."""

    value: Any
    literal_type: Dict[str, Any]


class Inputs(dict):
    """The task's inputs as `create` receives them: input name → Python
    value, typed from the template's interface (see `from_json`).

    It is a plain `dict` in every way a connector written for flyte can use
    its `inputs`: it is built like one (`Inputs(pairs)`, `Inputs(**values)`,
    `type(inputs)(items)`), compares equal to a dict with the same items, and
    `dataclasses.asdict`, `copy.copy`, `copy.deepcopy`, pickle,
    `json.dumps`, `dict(inputs)` and `{**inputs}` treat it as one. So a
    connector may keep `inputs` in its resource meta, encoded with
    `json.dumps(asdict(meta))`, as flyte's own connectors do.

    Two extras serve connectors that pass values through untouched:

    - `json`: each input as the JSON the host sent (name → JSON value);
    - `types`: each input's Flyte literal type (name → proto3 JSON).

    Both are filled on the object the SDK hands to `create`, and copies made
    by `copy.copy`, `copy.deepcopy` and pickle keep them. A mapping built
    anew from the items (`Inputs(inputs)`, `type(inputs)(...)`, what
    `dataclasses.asdict` makes) starts with both empty, as `Inputs()` does;
    `dict(inputs)`, `{**inputs}` and `inputs.copy()` are plain dicts.
    """

    #: Each input as the JSON the host sent (empty unless the SDK built this).
    json: Dict[str, Any]
    #: Each input's Flyte literal type, proto3 JSON (empty likewise).
    types: Dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Inputs:
        # Set here rather than in __init__, so that what copy and pickle
        # build (with __new__ alone) has them too before its state is
        # restored; dict's own __init__ takes the items.
        inputs = super().__new__(cls)
        inputs.json = {}
        inputs.types = {}
        return inputs

    @classmethod
    def _from_host(cls, values: Dict[str, Any], raw: Dict[str, Any], types: Dict[str, Any]) -> Inputs:
        """The inputs of a request: `values` converted, with the JSON the
        host sent (`raw`) and the literal types as extras."""
        inputs = cls(values)
        inputs.json = raw
        inputs.types = types
        return inputs


def from_json(value: Any, literal_type: Optional[Dict[str, Any]]) -> Any:
    """The Python value a connector sees for an input that arrived as JSON
    `value` with Flyte type `literal_type` (proto3 JSON, or None).

    By type: INTEGER -> int, FLOAT -> float, STRING -> str, BOOLEAN -> bool,
    DATETIME -> `datetime` in UTC, DURATION -> `timedelta`, NONE -> None,
    collections and maps -> list and dict (converted element by element),
    blobs -> `File` or `Dir`, structured datasets -> `DataFrame`, unions ->
    the value under the first variant it fits (`null` trying NONE first).
    Structs (dataclasses, pydantic models, dicts as msgpack), binary, enums,
    schemas and errors stay the JSON they arrived as. Without a type the JSON
    is taken as is, except that objects shaped exactly like a blob
    (`uri`, `format`, `dimensionality`, optionally `hash`) become `File`/`Dir`.

    Raises `ValueError` naming what was expected and what arrived when the
    JSON does not fit the type.
    """
    if literal_type is None:
        return _untyped_from_json(value)
    return _from_json(value, literal_type, "")


def to_json(value: Any, literal_type: Optional[Dict[str, Any]] = None) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """An output value as (JSON-serialisable value, literal type to send or
    None), the literal type being proto3 JSON.

    `Typed(v, t)` is `to_json(v, t)`. With a literal type the value is written
    as that type (an int for FLOAT becomes a float, a naive `datetime` is
    taken as UTC, `File`/`Dir`/`DataFrame` for blobs and structured datasets,
    lists and dicts element by element; structs, unions, enums and the rest
    are written as plain JSON) and the same type is returned. Without one:
    bool, int, str and None go as they are with no type (the host infers
    boolean, integer, string, none); a float too, unless it is NaN or
    infinite (then its string, typed FLOAT); `datetime` and `timedelta` go
    typed DATETIME and DURATION, `File`/`Dir`/`DataFrame` typed as blobs and
    structured datasets; an `Enum` member as its value; a list or tuple as a
    list, typed as a collection of its elements' type when they carry one;
    a dict (string keys) or dataclass instance as an object, untyped (the
    host sends it as msgpack), with datetimes, files etc. inside written in
    their JSON forms.

    Raises `TypeError` for a value of a type that has no JSON form here or
    does not fit `literal_type`, and `ValueError` for a value out of range
    (an int beyond 64 bits, a duration beyond 10,000 years).
    """
    if isinstance(value, Typed):
        return to_json(value.value, value.literal_type)
    if literal_type is None:
        return _infer(value, "")
    return _typed_to_json(value, literal_type, ""), literal_type


# --------------------------------------------------------------------------------------
# JSON -> Python
# --------------------------------------------------------------------------------------


def _value_error(where: str, message: str) -> ValueError:
    return ValueError(f"at {where}: {message}" if where else message)


def _describe(value: Any) -> str:
    """What a JSON value is, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _kind(literal_type: Dict[str, Any]) -> Tuple[Optional[str], Any]:
    """Which kind of LiteralType this is, and the kind's payload; (None,
    None) for a type with no kind this module knows."""
    if not isinstance(literal_type, dict):
        raise TypeError(f"a literal type is a dict (proto3 JSON), got {type(literal_type).__name__}")
    for key, payload in literal_type.items():
        kind = _KINDS.get(key)
        if kind is not None:
            return kind, payload
    return None, None


def _from_json(value: Any, literal_type: Dict[str, Any], where: str) -> Any:
    kind, payload = _kind(literal_type)
    if kind == "simple":
        return _simple_from_json(value, payload, where)
    if kind == "collection":
        if not isinstance(value, list):
            raise _value_error(where, f"expected an array (a collection), got {_describe(value)}")
        return [_from_json(item, payload, f"{where}[{i}]") for i, item in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _value_error(where, f"expected an object (a map), got {_describe(value)}")
        return {key: _from_json(item, payload, f"{where}[{key!r}]") for key, item in value.items()}
    if kind == "blob":
        return _blob_from_json(value, payload, where)
    if kind == "dataframe":
        uri, format_, hash_ = _uri_format_hash(value, "a dataframe", where)
        return DataFrame(uri, format_, hash_)
    if kind == "union":
        return _union_from_json(value, payload.get("variants", []), where)
    return value


def _simple_from_json(value: Any, simple: str, where: str) -> Any:
    if simple == "INTEGER":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _value_error(where, f"expected an integer (INTEGER), got {_describe(value)}")
    if simple == "FLOAT":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and value in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[value]
        raise _value_error(
            where, f'expected a float (FLOAT): a number, "NaN", "Infinity" or "-Infinity", got {_describe(value)}'
        )
    if simple == "STRING":
        if isinstance(value, str):
            return value
        raise _value_error(where, f"expected a string (STRING), got {_describe(value)}")
    if simple == "BOOLEAN":
        if isinstance(value, bool):
            return value
        raise _value_error(where, f"expected true or false (BOOLEAN), got {_describe(value)}")
    if simple == "DATETIME":
        return _parse_datetime(value, where)
    if simple == "DURATION":
        return _parse_duration(value, where)
    if simple == "NONE":
        if value is None:
            return None
        raise _value_error(where, f"expected null (NONE), got {_describe(value)}")
    return value


def _parse_datetime(value: Any, where: str) -> datetime:
    expected = "an RFC 3339 datetime string (DATETIME) such as 2024-01-02T03:04:05Z"
    match = _DATETIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _value_error(where, f"expected {expected}, got {_describe(value)}")
    year, month, day, hour, minute, second, fraction, zulu, sign, offset_h, offset_m = match.groups()
    offset = timedelta(0) if zulu else timedelta(hours=int(offset_h), minutes=int(offset_m))
    if sign == "-":
        offset = -offset
    try:
        parsed = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "")[:6].ljust(6, "0")),
            tzinfo=timezone(offset),
        )
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError) as err:
        raise _value_error(where, f"expected {expected}, got {_describe(value)} ({err})") from None


def _parse_duration(value: Any, where: str) -> timedelta:
    expected = 'a duration string (DURATION) such as "1.5s"'
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _value_error(where, f"expected {expected}, got {_describe(value)}")
    negative, seconds, fraction = match.groups()
    micros = int(seconds) * 1_000_000 + int((fraction or "")[:6].ljust(6, "0"))
    try:
        return timedelta(microseconds=-micros if negative else micros)
    except OverflowError:
        raise _value_error(where, f"expected {expected}, got {_describe(value)}, which is too long") from None


def _uri_format_hash(value: Any, what: str, where: str) -> Tuple[str, str, Optional[str]]:
    if not isinstance(value, dict) or not isinstance(value.get("uri"), str):
        raise _value_error(where, f'expected {what}, an object with a string "uri", got {_describe(value)}')
    format_ = value.get("format", "")
    if not isinstance(format_, str):
        raise _value_error(where, f'expected a string "format" for {what}, got {_describe(format_)}')
    hash_ = value.get("hash")
    if hash_ is not None and not isinstance(hash_, str):
        raise _value_error(where, f'expected a string "hash" for {what}, got {_describe(hash_)}')
    return value["uri"], format_, hash_


def _blob_from_json(value: Any, blob_type: Dict[str, Any], where: str) -> _Blob:
    uri, format_, hash_ = _uri_format_hash(value, "a file or directory (blob)", where)
    dimensionality = value.get("dimensionality", blob_type.get("dimensionality", "SINGLE"))
    if dimensionality not in _DIMENSIONALITIES:
        raise _value_error(where, f'expected "dimensionality" SINGLE or MULTIPART, got {_describe(dimensionality)}')
    cls = Dir if dimensionality == "MULTIPART" else File
    return cls(uri, format_, hash_)


def _union_from_json(value: Any, variants: List[Dict[str, Any]], where: str) -> Any:
    if not variants:
        return value
    if value is None:
        # As the host does: null is the NONE variant's before any other's.
        variants = sorted(variants, key=lambda variant: variant.get("simple") != "NONE")
    reasons = []
    for variant in variants:
        try:
            return _from_json(value, variant, where)
        except ValueError as err:
            reasons.append(str(err))
    raise _value_error(where, f"{_describe(value)} fits no variant of the union ({'; '.join(reasons)})")


def _untyped_from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_untyped_from_json(item) for item in value]
    if isinstance(value, dict):
        if _looks_like_blob(value):
            return _blob_from_json(value, {}, "")
        return {key: _untyped_from_json(item) for key, item in value.items()}
    return value


def _looks_like_blob(value: Dict[str, Any]) -> bool:
    keys = set(value)
    return (
        (keys == _BLOB_KEYS or keys == _BLOB_KEYS | {"hash"})
        and isinstance(value["uri"], str)
        and isinstance(value["format"], str)
        and value["dimensionality"] in _DIMENSIONALITIES
        and (value.get("hash") is None or isinstance(value["hash"], str))
    )


# --------------------------------------------------------------------------------------
# Python -> JSON
# --------------------------------------------------------------------------------------


def _type_error(where: str, message: str) -> TypeError:
    return TypeError(f"at {where}: {message}" if where else message)


def _typed_to_json(value: Any, literal_type: Dict[str, Any], where: str) -> Any:
    # Inside a declared type, that type describes the value: a nested Typed
    # contributes its value only.
    if isinstance(value, Typed):
        value = value.value
    if isinstance(value, enum.Enum):
        value = value.value
    kind, payload = _kind(literal_type)
    if kind == "simple":
        return _simple_to_json(value, payload, where)
    if kind == "collection":
        if not isinstance(value, (list, tuple)):
            raise _type_error(where, f"expected a list or tuple for a collection, got {type(value).__name__}")
        return [_typed_to_json(item, payload, f"{where}[{i}]") for i, item in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _type_error(where, f"expected a dict for a map, got {type(value).__name__}")
        return {
            _check_key(key, where): _typed_to_json(item, payload, f"{where}[{key!r}]") for key, item in value.items()
        }
    if kind == "blob":
        cls = Dir if payload.get("dimensionality") == "MULTIPART" else File
        if not isinstance(value, cls):
            raise _type_error(
                where, f"expected a {cls.__name__} for a {cls.DIMENSIONALITY} blob type, got {type(value).__name__}"
            )
        return _blob_json(value)
    if kind == "dataframe":
        if not isinstance(value, DataFrame):
            raise _type_error(where, f"expected a DataFrame for a structured dataset type, got {type(value).__name__}")
        return _dataframe_json(value)
    return _plain(value, where)


def _simple_to_json(value: Any, simple: str, where: str) -> Any:
    def expected(what: str) -> TypeError:
        return _type_error(where, f"expected {what} for {simple}, got {type(value).__name__}")

    if simple == "INTEGER":
        if isinstance(value, int) and not isinstance(value, bool):
            return _check_int64(value, where)
        raise expected("an int")
    if simple == "FLOAT":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _float_json(float(value))
        raise expected("a float or int")
    if simple == "STRING":
        if isinstance(value, str):
            return value
        raise expected("a str")
    if simple == "BOOLEAN":
        if isinstance(value, bool):
            return value
        raise expected("a bool")
    if simple == "DATETIME":
        if isinstance(value, datetime):
            return _format_datetime(value, where)
        raise expected("a datetime")
    if simple == "DURATION":
        if isinstance(value, timedelta):
            return _format_duration(value, where)
        raise expected("a timedelta")
    if simple == "NONE":
        if value is None:
            return None
        raise expected("None")
    return _plain(value, where)


def _infer(value: Any, where: str) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """An untyped output's JSON and, where JSON alone would be inferred
    as another type, the type to send with it."""
    if isinstance(value, Typed):
        return _typed_to_json(value.value, value.literal_type, where), value.literal_type
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, (bool, str)):
        return value, None
    if isinstance(value, int):
        return _check_int64(value, where), None
    if isinstance(value, float):
        return _float_json(value), (None if math.isfinite(value) else {"simple": "FLOAT"})
    if isinstance(value, datetime):
        return _format_datetime(value, where), {"simple": "DATETIME"}
    if isinstance(value, timedelta):
        return _format_duration(value, where), {"simple": "DURATION"}
    if isinstance(value, _Blob):
        blob_type: Dict[str, Any] = {"format": value.format}
        if isinstance(value, Dir):
            blob_type["dimensionality"] = "MULTIPART"
        return _blob_json(value), {"blob": blob_type}
    if isinstance(value, DataFrame):
        return _dataframe_json(value), {"structuredDatasetType": {"format": value.format}}
    if isinstance(value, (list, tuple)):
        return _infer_list(value, where)
    if isinstance(value, dict) or _is_dataclass_instance(value):
        return _plain(value, where), None
    raise _type_error(where, f"{type(value).__name__} has no JSON form; return a JSON value or wrap it in Typed(...)")


def _infer_list(items: Any, where: str) -> Tuple[List[Any], Optional[Dict[str, Any]]]:
    """A list's JSON, typed as a collection when its elements carry a type
    (datetimes, files, ...) so that they do not come back as strings or
    objects; a list of elements of different types is refused then."""
    converted = [_infer(item, f"{where}[{i}]") for i, item in enumerate(items)]
    values = [json_value for json_value, _ in converted]
    if all(item_type is None for _, item_type in converted):
        return values, None
    types = [item_type or _json_type(json_value) for json_value, item_type in converted]
    for candidates in (types, [_without_format(t) for t in types]):
        if all(t is not None and t == candidates[0] for t in candidates):
            return values, {"collectionType": candidates[0]}
    seen = sorted({json.dumps(t, sort_keys=True) if t is not None else "an untyped object or list" for t in types})
    raise _type_error(
        where,
        f"the list's elements have different types ({', '.join(seen)}); give it one with "
        'Typed(value, {"collectionType": ...}) or convert the elements first',
    )


def _json_type(value: Any) -> Optional[Dict[str, Any]]:
    """The type the host infers for untyped JSON that is a scalar."""
    if value is None:
        return {"simple": "NONE"}
    if isinstance(value, bool):
        return {"simple": "BOOLEAN"}
    if isinstance(value, int):
        return {"simple": "INTEGER"}
    if isinstance(value, float):
        return {"simple": "FLOAT"}
    if isinstance(value, str):
        return {"simple": "STRING"}
    return None


def _without_format(literal_type: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """A blob or structured dataset type without its format: a collection of
    files of several formats is a collection of blobs, each literal
    carrying its own format."""
    if literal_type is None:
        return None
    if "blob" in literal_type:
        return {"blob": {key: v for key, v in literal_type["blob"].items() if key != "format"}}
    if "structuredDatasetType" in literal_type:
        return {"structuredDatasetType": {}}
    return literal_type


def _plain(value: Any, where: str) -> Any:
    """A value as plain JSON, where no literal type goes with it (inside a
    struct, a union or an untyped dict)."""
    if isinstance(value, Typed):
        value = value.value
    if isinstance(value, dict):
        return {_check_key(key, where): _plain(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if _is_dataclass_instance(value) and not isinstance(value, (_Blob, DataFrame)):
        return {
            field.name: _plain(getattr(value, field.name), f"{where}.{field.name}" if where else field.name)
            for field in dataclasses.fields(value)
        }
    json_value, _ = _infer(value, where)
    return json_value


def _is_dataclass_instance(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _check_key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise _type_error(where, f"dict keys must be strings, got {type(key).__name__} {key!r}")
    return key


def _check_int64(value: int, where: str) -> int:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise _value_error(where, f"integer {value} does not fit in 64 bits")
    return value


def _float_json(value: float) -> Any:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _format_datetime(value: datetime, where: str) -> str:
    if value.utcoffset() is None:
        value = value.replace(tzinfo=timezone.utc)  # a naive datetime is taken as UTC
    try:
        utc = value.astimezone(timezone.utc).replace(tzinfo=None)
    except OverflowError:
        raise _value_error(where, f"{value.isoformat()} is out of range in UTC") from None
    micros = utc.microsecond
    timespec = "seconds" if micros == 0 else "milliseconds" if micros % 1000 == 0 else "microseconds"
    return utc.isoformat(timespec=timespec) + "+00:00"


def _format_duration(value: timedelta, where: str) -> str:
    micros = value // timedelta(microseconds=1)
    seconds, micros = divmod(abs(micros), 1_000_000)
    if seconds > _MAX_DURATION_SECONDS:
        raise _value_error(where, f"duration {value} is longer than a protobuf Duration holds (10,000 years)")
    if micros == 0:
        fraction = ""
    elif micros % 1000 == 0:
        fraction = f".{micros // 1000:03d}"
    else:
        fraction = f".{micros:06d}"
    sign = "-" if value < timedelta(0) else ""
    return f"{sign}{seconds}{fraction}s"


def _blob_json(blob: _Blob) -> Dict[str, Any]:
    json_value = {"uri": blob.uri, "format": blob.format, "dimensionality": blob.DIMENSIONALITY}
    if blob.hash is not None:
        json_value["hash"] = blob.hash
    return json_value


def _dataframe_json(dataframe: DataFrame) -> Dict[str, Any]:
    json_value = {"uri": dataframe.uri, "format": dataframe.format}
    if dataframe.hash is not None:
        json_value["hash"] = dataframe.hash
    return json_value
