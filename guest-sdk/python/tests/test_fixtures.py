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

from flyte_connector import Phase, Resource, ResourceMeta, TaskExecution, TaskLog, convert_to_flyte_phase, http

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


def test_a_meta_is_encoded_as_json_dumps_of_asdict_at_every_depth():
    @dataclass
    class Deep(ResourceMeta):
        job_id: str
        note: Note
        notes: List[Note]
        by_name: Dict[str, Any]
        pair: tuple

    meta = Deep(
        job_id="ü",
        note=Note(text="t", stars=3),
        notes=[Note(text="a", stars=1), Note(text="b", stars=2)],
        by_name={"n": Note(text="c", stars=4), "plain": {"x": [1.5, None, True]}},
        pair=(Note(text="d", stars=5), "e"),
    )
    assert meta.encode() == json.dumps(dataclasses.asdict(meta)).encode("utf-8")


def test_a_meta_json_cannot_write_fails_as_json_fails_it():
    @dataclass
    class Odd(ResourceMeta):
        job_id: str
        tags: set

    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        Odd(job_id="j", tags={"a"}).encode()
    with pytest.raises(TypeError, match="Object of type type is not JSON serializable"):
        Odd(job_id="j", tags=Note).encode()  # a dataclass class, not an instance


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


# -- wit/fixtures/http.json --------------------------------------------------

#: The fixture's name for each kind of HTTP error.
HTTP_KINDS = {
    http.Denied: "denied",
    http.ConnectionFailed: "connection",
    http.Timeout: "timeout",
    http.RequestInvalid: "invalid",
    http.StatusError: "status",
}


def test_statuses_below_400_are_ok_and_429_and_5xx_retryable():
    contract = fixture("http.json")
    method, url = contract["request"]["method"], contract["request"]["url"]
    assert len(contract["statuses"]) >= 18
    for case in contract["statuses"]:
        status = case["status"]
        response = http.Response(method, url, status, http.Headers([]), b"answer")
        assert response.ok == case["ok"], status
        try:
            assert response.raise_for_status() is response
            error = None
        except http.StatusError as raised:
            error = raised
        assert (error is not None) == case["error"], status
        assert (error is not None and error.retryable) == case["retryable"], status
        if error is not None:
            assert error.status == status

    case = contract["status_error"]
    response = http.Response(method, url, case["status"], http.Headers([]), case["body"].encode("utf-8"))
    with pytest.raises(http.StatusError) as raised:
        response.raise_for_status()
    assert str(raised.value) == case["message"]


def error_code(wasi: Any, case: str, payload: Any) -> Any:
    """The generated `error-code` value the fixture describes: the class
    componentize-py names after the WIT case, its payload built from JSON."""
    cls = getattr(wasi, "ErrorCode_" + "".join(part.capitalize() for part in case.split("-")))
    if not dataclasses.fields(cls):
        return cls()
    if isinstance(payload, dict):
        record = {"DNS-error": wasi.DnsErrorPayload, "TLS-alert-received": wasi.TlsAlertReceivedPayload}.get(
            case, wasi.FieldSizePayload
        )
        payload = record(**{name.replace("-", "_"): value for name, value in payload.items()})
    return cls(payload)


def test_error_codes_are_sorted_and_named_as_the_fixture_says(bindings):
    from wit_world.imports import wasi_http_types as wasi

    contract = fixture("http.json")
    request = contract["request"]
    cases = contract["error_codes"]
    # Every case wasi:http has, and no other.
    assert {case["code"] for case in cases} == set(http._WIT_CASES)
    assert len(http._WIT_CASES) == len(wasi.ErrorCode.__args__)
    for case in cases:
        shown = f"{case['code']} {case['payload']!r}"
        code = error_code(wasi, case["code"], case["payload"])
        error = http._classify(code, request["method"], request["url"], request["host"])
        assert HTTP_KINDS[type(error)] == case["kind"], shown
        assert error.retryable == case["retryable"], shown
        message = str(error)
        assert case["message_contains"] in message, shown
        for text in contract["messages_never_contain"]:
            assert text not in message, (shown, message)


def test_retries_follow_the_fixture():
    from flyte_connector import retry

    rules = fixture("http.json")["retry"]
    for case in rules["methods"]:
        assert retry.repeatable(case["method"], False) == case["repeated"], case
        assert retry.repeatable(case["method"], True) == case["idempotent"], case
    for case in rules["statuses"]:
        assert retry.retried_status(case["status"]) == case["retried"], case
    for case in rules["error_codes"]:
        assert retry.retried_code(case["case"]) == case["retried"], case
    defaults = rules["defaults"]
    assert retry.CALL_BUDGET == defaults["call_budget"]
    policy = retry.Retry()
    assert policy == retry.Retry(
        max_retries=defaults["max_retries"],
        base_delay=defaults["base_delay_ms"] / 1000,
        max_delay=defaults["max_delay_ms"] / 1000,
    )
    for attempt, (shortest, longest) in enumerate(rules["backoff_ms"], start=1):
        assert policy.backoff_bounds(attempt) == (shortest / 1000, longest / 1000), attempt
    now = rules["retry_after"]["now"]
    for case in rules["retry_after"]["cases"]:
        expected = None if case["wait_ms"] is None else case["wait_ms"] / 1000
        assert retry.retry_after(case["value"], now) == expected, case
    for left_ms, reserve_ms in rules["reserve_ms"]:
        assert retry.reserve(left_ms / 1000) == pytest.approx(reserve_ms / 1000), left_ms
    assert retry.MIN_ATTEMPT == rules["min_attempt_ms"] / 1000
