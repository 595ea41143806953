"""The Python SDK against the contract fixtures in `wit/fixtures/` (the host
and the Rust SDK check the same files), and against flyte's own classes
where the published `flyte` package is installed."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from flyte_connector import Phase, Resource, ResourceMeta, TaskExecution, TaskLog, convert_to_flyte_phase

FIXTURES = Path(__file__).resolve().parents[3] / "wit" / "fixtures"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def test_states_map_to_the_phases_flyte_maps_them_to():
    table = fixture("phases.json")
    assert len(table["states"]) >= 10
    for state, phase in table["states"].items():
        assert convert_to_flyte_phase(state).name == phase, state
    for case in table["unrecognized"]:
        with pytest.raises(ValueError) as raised:
            convert_to_flyte_phase(case["state"])
        assert str(raised.value) == case["error"]


@dataclass
class Note:
    text: str
    stars: int


@dataclass
class FixtureMeta(ResourceMeta):
    """The fields of the fixture metas."""

    job_id: str
    count: int = 0
    ratio: float = 1.0
    done: bool = False
    note: Optional[str] = None
    tags: List[str] = dataclasses.field(default_factory=list)
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)


def test_metas_are_the_bytes_flyte_writes_and_read_back():
    cases = fixture("resource-metas.json")["metas"]
    assert cases
    for case in cases:
        meta = FixtureMeta(**case["meta"])
        assert meta.encode().decode("utf-8") == case["encoded"]
        assert FixtureMeta.decode(case["encoded"].encode("utf-8")) == meta


def test_nested_dataclasses_are_rebuilt_and_unknown_fields_refused():
    @dataclass
    class WithNote(ResourceMeta):
        job_id: str
        note: Note

    meta = WithNote(job_id="j", note=Note(text="t", stars=3))
    assert WithNote.decode(meta.encode()) == meta
    with pytest.raises(ValueError, match="no field surprise"):
        WithNote.decode(b'{"job_id": "j", "note": {"text": "t", "stars": 1}, "surprise": 1}')


def test_phases_are_numbered_as_flyteidl2_numbers_them():
    execution_pb2 = pytest.importorskip("flyteidl2.core.execution_pb2")
    for phase in Phase:
        assert execution_pb2.TaskExecution.Phase.Value(phase.name) == phase.value
        assert getattr(TaskExecution, phase.name) == phase
    for link_type in ("EXTERNAL", "DASHBOARD", "IDE"):
        assert getattr(execution_pb2.TaskLog, link_type) == getattr(TaskLog, link_type)


def test_the_data_model_has_flytes_fields_and_defaults():
    connectors = pytest.importorskip("flyte.connectors")
    execution_pb2 = pytest.importorskip("flyteidl2.core.execution_pb2")
    ours = {f.name: f.default for f in dataclasses.fields(Resource)}
    theirs = {f.name: f.default for f in dataclasses.fields(connectors.Resource)}
    assert ours == theirs
    # TaskLog: the protobuf's fields this SDK exposes, with the protobuf's defaults.
    proto = execution_pb2.TaskLog()
    for field in dataclasses.fields(TaskLog):
        assert getattr(proto, field.name) == field.default, field.name

    # A meta written by flyte's ResourceMeta reads back here, and the other way round.
    @dataclass
    class Theirs(connectors.ResourceMeta):
        job_id: str
        ratio: float

    @dataclass
    class Ours(ResourceMeta):
        job_id: str
        ratio: float

    assert Ours(job_id="ü", ratio=1e-7).encode() == Theirs(job_id="ü", ratio=1e-7).encode()
    assert Theirs.decode(Ours(job_id="x", ratio=2.0).encode()) == Theirs(job_id="x", ratio=2.0)
