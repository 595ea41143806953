"""The Snowflake connector served by flyte-connect, driven by the published
flyteidl2 client with TaskTemplates made by flyteplugins-snowflake's own
`Snowflake` task, against the harness's fake Snowflake SQL API v2, which
verifies every key-pair JWT against the test key's public half.

What the Python connector would do is computed by its own code: metas with
`SnowflakeJobMetadata(...).encode()`, batch expansion with its
`_expand_batch_query`, the dashboard link with its `_construct_query_link`, the
`results` output with flyte's connector server (`get_resource_proto`); a
statement is submitted "elsewhere" with a JWT made by Snowflake's own driver
(`AuthByKeyPair`) from the key as the Python connector loads it.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import urllib.request
from typing import Dict, Iterator, List, Type

import flyte.io
import grpc
import pytest
from flyte.connectors import Resource
from flyte.connectors._connector import get_resource_proto
from flyte.types import TypeEngine
from flyteidl2.connector import connector_pb2
from flyteidl2.core import execution_pb2, security_pb2
from flyteplugins.snowflake import Snowflake, SnowflakeConfig
from flyteplugins.snowflake._crypto import get_private_key
from flyteplugins.snowflake.connector import SnowflakeJobMetadata, _construct_query_link, _expand_batch_query
from snowflake.connector.auth import AuthByKeyPair

from conftest import (
    REPO_ROOT,
    RPC_TIMEOUT_S,
    HostedConnector,
    expect_rpc_error,
    fake_record,
    fake_service,
    flyte_inputs,
    hosted_connector,
    key_lines,
    output_literals,
    phase_name,
    plugin_template,
)

KEYS = REPO_ROOT / "tests" / "fixtures" / "keys"
ACCOUNT = "myorg-analytics"
USER = "flyte_loader"
DATABASE = "ANALYTICS"
SCHEMA = "PUBLIC"
WAREHOUSE = "COMPUTE_WH"
ROLE = "LOADER"
KEY_SECRET = "snowflake_private_key"
PASSPHRASE_SECRET = "snowflake_private_key_passphrase"
PASSPHRASE = "flyte-test-passphrase"


SERVICE_PEM = (KEYS / "service.pem").read_text()
ENCRYPTED_PEM = (KEYS / "service.encrypted.p8").read_text()


@pytest.fixture(scope="module")
def snowflake_connector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostedConnector]:
    """flyte-connect serving snowflake.wasm, pointed at a fake account by its manifest."""
    with fake_service("snowflake", ACCOUNT, USER, KEYS / "service.pub.pem") as fake:
        manifest = f'allowed_hosts = ["{fake}"]\n\n[env]\nSNOWFLAKE_ENDPOINT = "{fake}"\n'
        with hosted_connector("snowflake", manifest, fake, tmp_path_factory) as hosted:
            yield hosted
    log = hosted.server.log()  # all of it, shutdown included
    for line in key_lines(SERVICE_PEM) + key_lines(ENCRYPTED_PEM):
        assert line not in log, "a line of the key reached the server's log"
    assert "PRIVATE KEY" not in log, "the key reached the server's log"
    assert PASSPHRASE not in log, "the passphrase reached the server's log"


def snowflake_task(
    name: str,
    query: str,
    inputs: Dict[str, Type] | None = None,
    with_output: bool = True,
    batch: bool = False,
    encrypted_key: bool = False,
) -> Snowflake:
    return Snowflake(
        name=name,
        query_template=query,
        plugin_config=SnowflakeConfig(
            account=ACCOUNT,
            database=DATABASE,
            schema=SCHEMA,
            warehouse=WAREHOUSE,
            user=USER,
            connection_kwargs={"role": ROLE},
        ),
        inputs=inputs,
        output_dataframe_type=flyte.io.DataFrame if with_output else None,
        batch=batch,
        snowflake_private_key="sf-key",
        snowflake_private_key_passphrase="sf-passphrase" if encrypted_key else None,
    )


def connection(key: str = SERVICE_PEM, passphrase: str | None = None) -> security_pb2.Connection:
    secrets = {KEY_SECRET: key}
    if passphrase is not None:
        secrets[PASSPHRASE_SECRET] = passphrase
    return security_pb2.Connection(secrets=secrets)


def category() -> connector_pb2.TaskCategory:
    return connector_pb2.TaskCategory(name="snowflake", version=0)


def create(hosted: HostedConnector, task: Snowflake, conn: security_pb2.Connection | None = None, **inputs) -> bytes:
    """CreateTask with the template and the inputs, as Flyte sends them."""
    request = connector_pb2.CreateTaskRequest(
        template=plugin_template(task),
        output_prefix="s3://bucket/outputs/run-1/a0",
        connection=conn or connection(),
    )
    if inputs:
        request.inputs.CopyFrom(flyte_inputs(task, **inputs).proto_inputs)
    return hosted.stub.CreateTask(request, timeout=RPC_TIMEOUT_S).resource_meta


def get(hosted: HostedConnector, meta: bytes, conn: security_pb2.Connection | None = None) -> connector_pb2.Resource:
    request = connector_pb2.GetTaskRequest(
        task_category=category(), resource_meta=meta, connection=conn or connection()
    )
    return hosted.stub.GetTask(request, timeout=RPC_TIMEOUT_S).resource


def delete(hosted: HostedConnector, meta: bytes) -> None:
    request = connector_pb2.DeleteTaskRequest(task_category=category(), resource_meta=meta, connection=connection())
    hosted.stub.DeleteTask(request, timeout=RPC_TIMEOUT_S)


def python_meta(query_id: str, has_output: bool) -> bytes:
    """The meta the Python connector writes for this module's tasks."""
    return SnowflakeJobMetadata(
        account=ACCOUNT,
        user=USER,
        database=DATABASE,
        schema=SCHEMA,
        warehouse=WAREHOUSE,
        query_id=query_id,
        has_output=has_output,
        connection_kwargs={"role": ROLE},
    ).encode()


def submitted(hosted: HostedConnector) -> List[dict]:
    return [s["body"] for s in fake_record(hosted.fake, "submitted")]


def results_uri(query_id: str) -> str:
    return f"snowflake://{USER}/{ACCOUNT}/{WAREHOUSE}/{DATABASE}/{SCHEMA}/{query_id}"


def test_a_plugin_made_query_runs_to_success_with_typed_bindings_and_the_python_meta(snowflake_connector):
    hosted = snowflake_connector
    task = snowflake_task(
        "typed_query",
        """SELECT * FROM users
            WHERE id = %(id)s AND name = %(name)s AND score > %(score)s
              AND active = %(active)s AND seen > %(since)s AND tag LIKE 'a%%'""",
        {"id": int, "name": str, "score": float, "active": bool, "since": datetime.datetime},
    )
    # 17:13:20.5 at UTC-5 is 22:13:20.5 UTC.
    since = datetime.datetime(2023, 11, 14, 17, 13, 20, 500000, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
    before = len(submitted(hosted))
    meta = create(hosted, task, id=7, name="o'hara", score=0.5, active=False, since=since)

    # The Python connector's meta, byte for byte, around the statement handle.
    query_id = json.loads(meta)["query_id"]
    assert meta == python_meta(query_id, has_output=True)
    assert SnowflakeJobMetadata.decode(meta).query_id == query_id

    # The statement Snowflake received: `?` bind variables, typed, never spliced into the SQL.
    bodies = submitted(hosted)[before:]
    assert len(bodies) == 1
    statement = bodies[0]
    assert statement["statement"] == (
        "SELECT * FROM users WHERE id = ? AND name = ? AND score > ? AND active = ? AND seen > ? AND tag LIKE 'a%'"
    )
    assert statement["bindings"] == {
        "1": {"type": "FIXED", "value": "7"},
        "2": {"type": "TEXT", "value": "o'hara"},
        "3": {"type": "REAL", "value": "0.5"},
        "4": {"type": "BOOLEAN", "value": "false"},
        "5": {"type": "TIMESTAMP_NTZ", "value": "2023-11-14T22:13:20.500000000"},
    }
    assert {k: statement.get(k) for k in ("database", "schema", "warehouse", "role")} == {
        "database": DATABASE,
        "schema": SCHEMA,
        "warehouse": WAREHOUSE,
        "role": ROLE,
    }

    resources = [get(hosted, meta) for _ in range(2)]
    assert [phase_name(r) for r in resources] == ["RUNNING", "SUCCEEDED"]
    link = resources[0].log_links[0]
    assert (link.name, link.uri) == ("Snowflake Dashboard", _construct_query_link(ACCOUNT, query_id))
    assert (link.ready, link.link_type) == (True, execution_pb2.TaskLog.DASHBOARD)

    # The result set, as a DataFrame flyte reads, and the very literal the Python connector's server returns.
    done = resources[-1]
    frame = asyncio.run(TypeEngine.to_python_value(output_literals(done)["results"], flyte.io.DataFrame))
    assert isinstance(frame, flyte.io.DataFrame)
    assert frame.uri == results_uri(query_id)
    python_resource = asyncio.run(
        get_resource_proto(
            Resource(
                phase=execution_pb2.TaskExecution.SUCCEEDED,
                outputs={"results": flyte.io.DataFrame(uri=results_uri(query_id))},
            )
        )
    )
    assert done.outputs == python_resource.outputs


def test_a_batch_with_an_encrypted_key_is_one_multi_row_statement(snowflake_connector):
    hosted = snowflake_connector
    query = "INSERT INTO people (id, name) VALUES (%(ids)s, %(names)s)"
    task = snowflake_task(
        "load_people", query, {"ids": list[int], "names": list[str]}, with_output=False, batch=True, encrypted_key=True
    )
    rows = {"ids": [1, 2, 3], "names": ["a", "b", "c"]}
    encrypted = connection(ENCRYPTED_PEM, PASSPHRASE)
    before = len(submitted(hosted))
    meta = create(hosted, task, encrypted, **rows)
    query_id = json.loads(meta)["query_id"]
    assert meta == python_meta(query_id, has_output=False)

    bodies = submitted(hosted)[before:]
    assert len(bodies) == 1, "a batch is one statement"
    statement = bodies[0]
    assert statement["statement"] == "INSERT INTO people (id, name) VALUES (?, ?), (?, ?), (?, ?)"
    bindings = statement["bindings"]
    assert [bindings[str(i)] for i in range(1, len(bindings) + 1)] == [
        {"type": "FIXED", "value": "1"},
        {"type": "TEXT", "value": "a"},
        {"type": "FIXED", "value": "2"},
        {"type": "TEXT", "value": "b"},
        {"type": "FIXED", "value": "3"},
        {"type": "TEXT", "value": "c"},
    ]
    # The rows the Python connector's own expansion makes, in the same order.
    expanded, flat = _expand_batch_query(task.query_template, rows)
    names = re.findall(r"%\((\w+)\)s", expanded)
    assert re.sub(r"%\(\w+\)s", "?", expanded) == statement["statement"]
    assert [str(flat[name]) for name in names] == [bindings[str(i)]["value"] for i in range(1, len(names) + 1)]

    # No output declared: success without outputs.
    resources = [get(hosted, meta, encrypted) for _ in range(2)]
    assert [phase_name(r) for r in resources] == ["RUNNING", "SUCCEEDED"]
    assert not resources[-1].HasField("outputs"), resources[-1].outputs


def submit_elsewhere(hosted: HostedConnector, statement: str) -> str:
    """Submits `statement` with a JWT made by Snowflake's own driver from the key
    as the Python connector loads it; the statement handle."""
    token = AuthByKeyPair(get_private_key(SERVICE_PEM)).prepare(account=ACCOUNT, user=USER)
    body = {"statement": statement, "database": DATABASE, "schema": SCHEMA, "warehouse": WAREHOUSE, "role": ROLE}
    request = urllib.request.Request(
        f"{hosted.fake}/api/v2/statements?async=true",
        data=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {token}",
            "X-Snowflake-Authorization-Token-Type": "KEYPAIR_JWT",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=RPC_TIMEOUT_S) as answer:
        assert answer.status == 202
        return json.load(answer)["statementHandle"]


def test_a_statement_submitted_elsewhere_is_polled_and_a_slow_one_is_cancelled(snowflake_connector):
    hosted = snowflake_connector
    # A statement submitted by someone else, and the meta the Python connector stores for it.
    query_id = submit_elsewhere(hosted, "SELECT COUNT(*) FROM users")
    meta = python_meta(query_id, has_output=True)
    resources = [get(hosted, meta) for _ in range(2)]
    assert [phase_name(r) for r in resources] == ["RUNNING", "SUCCEEDED"]
    frame = asyncio.run(TypeEngine.to_python_value(output_literals(resources[-1])["results"], flyte.io.DataFrame))
    assert frame.uri == results_uri(query_id)

    # A statement that would run forever, cancelled through the meta as the Python
    # connector re-encodes it; cancelling it again is fine.
    slow = create(hosted, snowflake_task("slow_query", "SELECT 1 -- slow"))
    assert phase_name(get(hosted, slow)) == "RUNNING"
    reencoded = SnowflakeJobMetadata.decode(slow).encode()
    assert reencoded == slow
    cancels = fake_record(hosted.fake, "calls")["cancel"]
    delete(hosted, reencoded)
    assert fake_record(hosted.fake, "calls")["cancel"] == cancels + 1
    cancelled = get(hosted, reencoded)
    assert phase_name(cancelled) == "FAILED"
    assert "000604" in cancelled.message and "canceled" in cancelled.message, cancelled.message
    delete(hosted, reencoded)
    assert fake_record(hosted.fake, "calls")["cancel"] == cancels + 2
    assert phase_name(get(hosted, reencoded)) == "FAILED"


def test_a_wrong_key_is_refused_naming_the_account_and_user(snowflake_connector):
    hosted = snowflake_connector
    other_pem = (KEYS / "other.pem").read_text()
    refused = fake_record(hosted.fake, "calls")["unauthorized"]
    err = expect_rpc_error(
        lambda: create(hosted, snowflake_task("wrong_key", "SELECT 1"), connection(other_pem)),
        grpc.StatusCode.INTERNAL,
    )
    message = err.details()
    assert ACCOUNT in message and USER in message and "refused" in message, message
    assert KEY_SECRET in message, "the message does not say which secret to check"
    assert "eyJ" not in message, "the message quotes the JWT"
    assert fake_record(hosted.fake, "calls")["unauthorized"] == refused + 1
    log = hosted.server.log()
    for line in key_lines(other_pem):
        assert line not in message, "the message quotes the key"
        assert line not in log, "a line of the key reached the server's log"


def test_a_failing_query_fails_with_snowflakes_code_and_message(snowflake_connector):
    hosted = snowflake_connector
    meta = create(hosted, snowflake_task("missing_table", "SELECT * FROM MISSING_TABLE"))
    resources = [get(hosted, meta) for _ in range(2)]
    assert [phase_name(r) for r in resources] == ["RUNNING", "FAILED"]
    # code (SQL state): query id: message, as Snowflake's driver words it.
    query_id = json.loads(meta)["query_id"]
    assert resources[-1].message == (
        f"002003 (02000): {query_id}: SQL compilation error:\nObject 'MISSING_TABLE' does not exist or not authorized."
    )
    assert not resources[-1].HasField("outputs")
