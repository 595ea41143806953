"""`inputs` as `create` receives them (`flyte_connector.values.Inputs`): a
plain dict to every idiom a connector written for flyte uses on its
`inputs`, with the SDK's extras (`json`, `types`) on the object it hands
over."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from dataclasses import dataclass
from typing import Any, Dict, Optional

import pytest

from flyte_connector import ResourceMeta
from flyte_connector.values import Inputs

VALUES: Dict[str, Any] = {
    "n": 3,
    "name": "flyte",
    "ratio": 0.5,
    "ok": True,
    "ids": [1, 2],
    "conf": {"retries": 2, "tags": ["a"]},
    "nothing": None,
}
# The JSON the host sent for them (here the same values) and their types.
RAW: Dict[str, Any] = json.loads(json.dumps(VALUES))
TYPES: Dict[str, Any] = {
    "n": {"simple": "INTEGER"},
    "name": {"simple": "STRING"},
    "ratio": {"simple": "FLOAT"},
    "ok": {"simple": "BOOLEAN"},
    "ids": {"collectionType": {"simple": "INTEGER"}},
    "conf": {"simple": "STRUCT"},
    "nothing": {"simple": "NONE"},
}


def sdk_inputs() -> Inputs:
    """Inputs as the SDK builds them for `create`."""
    return Inputs._from_host(copy.deepcopy(VALUES), copy.deepcopy(RAW), copy.deepcopy(TYPES))


@dataclass
class EchoMeta(ResourceMeta):
    """A meta keeping the inputs, as flyte's echo connector's does."""

    job_id: str
    inputs: Optional[Dict[str, Any]] = None


def test_the_sdk_fills_the_extras():
    inputs = sdk_inputs()
    assert inputs.json == RAW
    assert inputs.types == TYPES


def test_it_reads_as_a_dict():
    inputs = sdk_inputs()
    assert isinstance(inputs, dict)
    assert inputs == VALUES and VALUES == inputs
    assert not inputs != VALUES
    assert list(inputs) == list(VALUES)
    assert list(inputs.keys()) == list(VALUES.keys())
    assert list(inputs.values()) == list(VALUES.values())
    assert list(inputs.items()) == list(VALUES.items())
    assert [name for name in inputs] == list(VALUES)
    assert len(inputs) == len(VALUES)
    assert "n" in inputs and "absent" not in inputs
    assert inputs["n"] == 3
    assert inputs.get("name") == "flyte"
    assert inputs.get("absent") is None
    assert inputs.get("absent", "fallback") == "fallback"
    assert bool(inputs) and not bool(Inputs())
    with pytest.raises(KeyError):
        inputs["absent"]
    assert repr(inputs) == repr(VALUES)


def test_the_extras_are_attributes_not_items():
    # An input may even be named `json` or `types`.
    inputs = Inputs._from_host({"json": 1, "types": 2}, {"json": 1, "types": 2}, {"json": {"simple": "INTEGER"}})
    assert inputs == {"json": 1, "types": 2}
    assert inputs["json"] == 1 and inputs["types"] == 2
    assert inputs.json == {"json": 1, "types": 2}
    assert inputs.types == {"json": {"simple": "INTEGER"}}
    assert "json" not in sdk_inputs() and "types" not in sdk_inputs()


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda: Inputs(), {}),
        (lambda: Inputs({"a": 1, "b": 2}), {"a": 1, "b": 2}),
        (lambda: Inputs([("a", 1), ("b", 2)]), {"a": 1, "b": 2}),
        (lambda: Inputs(a=1, b=2), {"a": 1, "b": 2}),
        (lambda: Inputs({"a": 1}, b=2), {"a": 1, "b": 2}),
        (lambda: Inputs(iter([("a", 1), ("b", 2)])), {"a": 1, "b": 2}),
        (lambda: Inputs.fromkeys(["a", "b"], 0), {"a": 0, "b": 0}),
    ],
    ids=["empty", "mapping", "pairs", "keywords", "mapping-and-keywords", "iterator", "fromkeys"],
)
def test_it_is_built_as_a_dict_is(make, expected):
    built = make()
    assert type(built) is Inputs
    assert built == expected
    assert built.json == {} and built.types == {}


def test_a_bad_argument_fails_as_it_does_for_a_dict():
    for args in ((1,), ([1, 2],), ({}, {})):
        with pytest.raises(TypeError):
            dict(*args)
        with pytest.raises(TypeError):
            Inputs(*args)


def test_type_of_inputs_rebuilds_it_from_items():
    inputs = sdk_inputs()
    rebuilt = type(inputs)(inputs.items())
    assert type(rebuilt) is Inputs and rebuilt == VALUES
    # Built anew from items: the extras start empty.
    assert rebuilt.json == {} and rebuilt.types == {}
    rebuilt = type(inputs)((key, value) for key, value in inputs.items())
    assert rebuilt == VALUES


def test_a_dataclass_meta_holding_inputs_is_encoded_as_flyte_encodes_it():
    meta = EchoMeta(job_id="echo-1", inputs=sdk_inputs())
    assert dataclasses.asdict(meta) == {"job_id": "echo-1", "inputs": VALUES}
    assert dataclasses.astuple(meta) == ("echo-1", VALUES)
    # ResourceMeta.encode is flyte's json.dumps(asdict(meta)).
    assert meta.encode() == json.dumps({"job_id": "echo-1", "inputs": VALUES}).encode("utf-8")
    assert json.dumps(dataclasses.asdict(meta)) == json.dumps({"job_id": "echo-1", "inputs": VALUES})
    decoded = EchoMeta.decode(meta.encode())
    assert decoded == EchoMeta(job_id="echo-1", inputs=VALUES)


def test_asdict_with_a_dict_factory_gets_the_factorys_type():
    meta = EchoMeta(job_id="echo-1", inputs=sdk_inputs())
    assert dataclasses.asdict(meta, dict_factory=dict) == {"job_id": "echo-1", "inputs": VALUES}


@pytest.mark.parametrize("how", ["copy", "deepcopy", *(f"pickle-{p}" for p in range(pickle.HIGHEST_PROTOCOL + 1))])
def test_copies_are_equal_inputs_that_keep_the_extras(how):
    inputs = sdk_inputs()
    if how == "copy":
        copied = copy.copy(inputs)
    elif how == "deepcopy":
        copied = copy.deepcopy(inputs)
    else:
        copied = pickle.loads(pickle.dumps(inputs, protocol=int(how.split("-")[1])))
    assert type(copied) is Inputs
    assert copied is not inputs
    assert copied == VALUES
    assert copied.json == RAW and copied.types == TYPES
    copied["added"] = 1
    assert "added" not in inputs
    if how == "copy":
        # A shallow copy shares the values, as dict's does.
        assert copied["ids"] is inputs["ids"]
    else:
        assert copied["ids"] is not inputs["ids"]
        assert copied.json is not inputs.json


def test_copies_of_a_meta_holding_inputs():
    meta = EchoMeta(job_id="echo-1", inputs=sdk_inputs())
    for copied in (copy.copy(meta), copy.deepcopy(meta), pickle.loads(pickle.dumps(meta))):
        assert copied == meta
        assert copied.encode() == meta.encode()
    assert dataclasses.replace(meta, job_id="echo-2").inputs == VALUES


def test_plain_dict_views_of_it():
    inputs = sdk_inputs()
    plains = (dict(inputs), {**inputs}, inputs.copy(), inputs | {}, {name: value for name, value in inputs.items()})
    for plain in plains:
        assert type(plain) is dict
        assert plain == VALUES
    assert {**inputs, "extra": 1} == {**VALUES, "extra": 1}
    assert dict(**inputs) == VALUES


def test_json_writes_it_as_a_dict():
    inputs = sdk_inputs()
    assert json.dumps(inputs) == json.dumps(VALUES)
    # The pure-Python encoder (indent) and sorted keys too.
    assert json.dumps(inputs, indent=2, sort_keys=True) == json.dumps(VALUES, indent=2, sort_keys=True)
    assert json.loads(json.dumps({"inputs": inputs})) == {"inputs": VALUES}


def test_it_changes_as_a_dict_does():
    inputs = sdk_inputs()
    inputs["extra"] = "x"
    inputs.update(n=4)
    del inputs["nothing"]
    assert inputs.pop("extra") == "x"
    assert inputs.setdefault("new", 1) == 1
    assert inputs == {**{k: v for k, v in VALUES.items() if k != "nothing"}, "n": 4, "new": 1}
    # The extras are what the host sent, untouched by those changes.
    assert inputs.json == RAW
