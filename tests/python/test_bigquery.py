"""The BigQuery connector served by flyte-connect, driven by the published
flyteidl2 client with TaskTemplates made by flyteplugins-bigquery's own
`BigQueryTask`, against the harness's fake Google (BigQuery jobs API and
metadata server), which verifies every self-signed JWT against the test
key's public half.

What the Python connector would do is computed by its own code: metas with
`BigQueryMetadata(...).encode()`, query parameters with google-cloud-bigquery's
`ScalarQueryParameter`, the `results` output with flyte's connector server
(`get_resource_proto`); jobs are inserted "elsewhere" with Google's own
BigQuery client and self-signed JWT credentials. So tasks move between the two
servers, and a user sees the same parameters, phases and outputs.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Dict, Iterator, Type

import flyte.io
import grpc
import pytest
from flyte._internal.runtime.convert import convert_from_inputs_to_native
from flyte.connectors import Resource
from flyte.connectors._connector import get_resource_proto
from flyte.types import TypeEngine
from flyteidl2.connector import connector_pb2
from flyteidl2.core import execution_pb2, security_pb2
from flyteplugins.bigquery import BigQueryConfig, BigQueryTask
from flyteplugins.bigquery.connector import BigQueryMetadata, pythonTypeToBigQueryType
from google.api_core.client_options import ClientOptions
from google.auth import jwt as google_jwt
from google.cloud import bigquery

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
CLIENT_EMAIL = "flyte-connect@flyte-tests.iam.gserviceaccount.com"
PRIVATE_KEY_ID = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
PROJECT = "flyte-proj"
# The dataset of the fake's anonymous result tables (tests/src/fake_bigquery.rs).
RESULT_DATASET = "_0a1b2c3d4e"
SECRET = "google_application_credentials"
USER_AGENT = "Flyte/2.12.1 (GPN:Union;development)"


def key_file(private_key_pem: str) -> str:
    """A service-account key file, as the Cloud console downloads it."""
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "flyte-tests",
            "private_key_id": PRIVATE_KEY_ID,
            "private_key": private_key_pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "104235361934208751632",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": "https://oauth2.googleapis.com/token",
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": (
                "https://www.googleapis.com/robot/v1/metadata/x509/" + CLIENT_EMAIL.replace("@", "%40")
            ),
            "universe_domain": "googleapis.com",
        },
        indent=2,
    )


SERVICE_PEM = (KEYS / "service.pem").read_text()
KEY_FILE = key_file(SERVICE_PEM)


@pytest.fixture(scope="module")
def bigquery_connector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostedConnector]:
    """flyte-connect serving bigquery.wasm, pointed at a fake Google by its manifest."""
    with fake_service("bigquery", CLIENT_EMAIL, PRIVATE_KEY_ID, KEYS / "service.pub.pem") as fake:
        host = fake.removeprefix("http://")
        manifest = f'allowed_hosts = ["{fake}"]\n\n[env]\nBIGQUERY_ENDPOINT = "{fake}"\nGCE_METADATA_HOST = "{host}"\n'
        with hosted_connector("bigquery", manifest, fake, tmp_path_factory) as hosted:
            yield hosted
    log = hosted.server.log()  # all of it, shutdown included
    for line in key_lines(SERVICE_PEM):
        assert line not in log, "a line of the service account's key reached the server's log"
    assert "PRIVATE KEY" not in log, "the key file reached the server's log"


def bigquery_task(name: str, query: str, inputs: Dict[str, Type] | None = None) -> BigQueryTask:
    return BigQueryTask(
        name=name,
        query_template=query,
        plugin_config=BigQueryConfig(ProjectID=PROJECT, Location="US"),
        inputs=inputs,
        output_dataframe_type=flyte.io.DataFrame,
    )


def connection(key: str = KEY_FILE) -> security_pb2.Connection:
    return security_pb2.Connection(secrets={SECRET: key})


def category() -> connector_pb2.TaskCategory:
    return connector_pb2.TaskCategory(name="bigquery_query_job_task", version=0)


def create(hosted: HostedConnector, task: BigQueryTask, key: str = KEY_FILE, **inputs) -> bytes:
    """CreateTask with the template and the inputs, as Flyte sends them."""
    request = connector_pb2.CreateTaskRequest(
        template=plugin_template(task),
        output_prefix="s3://bucket/outputs/run-1/a0",
        connection=connection(key),
    )
    if inputs:
        request.inputs.CopyFrom(flyte_inputs(task, **inputs).proto_inputs)
    return hosted.stub.CreateTask(request, timeout=RPC_TIMEOUT_S).resource_meta


def get(hosted: HostedConnector, meta: bytes) -> connector_pb2.Resource:
    request = connector_pb2.GetTaskRequest(task_category=category(), resource_meta=meta, connection=connection())
    return hosted.stub.GetTask(request, timeout=RPC_TIMEOUT_S).resource


def delete(hosted: HostedConnector, meta: bytes) -> None:
    request = connector_pb2.DeleteTaskRequest(task_category=category(), resource_meta=meta, connection=connection())
    hosted.stub.DeleteTask(request, timeout=RPC_TIMEOUT_S)


def inserted_job(hosted: HostedConnector, job_id: str) -> dict:
    """The body of the jobs.insert for `job_id` the fake received, with its user agent."""
    found = [s for s in fake_record(hosted.fake, "submitted") if s["body"]["jobReference"]["jobId"] == job_id]
    assert len(found) == 1, f"{len(found)} inserts of job {job_id}"
    return found[0]


def python_query_parameters(task: BigQueryTask, **inputs) -> Dict[str, tuple]:
    """{name: (type, value)} of the parameters the Python connector sends for
    `inputs`: the literals decoded as its server does, typed as it types them,
    serialized by google-cloud-bigquery. Values as strings (it sends a FLOAT64 as
    a JSON number, which the API takes as well)."""
    native = asyncio.run(convert_from_inputs_to_native(task.native_interface, flyte_inputs(task, **inputs)))
    parameters = {}
    for name, value in native.items():
        kind = pythonTypeToBigQueryType[task.native_interface.inputs[name][0]]
        api = bigquery.ScalarQueryParameter(name, kind, value).to_api_repr()
        parameters[name] = (api["parameterType"]["type"], str(api["parameterValue"]["value"]))
    return parameters


def google_client(fake: str, location: str) -> bigquery.Client:
    """Google's BigQuery client with self-signed JWT credentials of the test
    account, pointed at the fake: "someone else"."""
    credentials = google_jwt.Credentials.from_service_account_info(
        json.loads(KEY_FILE), audience="https://bigquery.googleapis.com/"
    )
    return bigquery.Client(
        project=PROJECT, location=location, credentials=credentials, client_options=ClientOptions(api_endpoint=fake)
    )


def test_a_plugin_made_query_runs_to_success_with_typed_parameters_and_the_python_meta(bigquery_connector):
    hosted = bigquery_connector
    task = bigquery_task(
        "typed_query",
        """SELECT *
             FROM events
            WHERE n = @n AND ratio < @ratio AND name = @name AND active = @active AND ts > @since""",
        {"n": int, "ratio": float, "name": str, "active": bool, "since": datetime.datetime},
    )
    # 15:45:07.123456 at UTC+2 is 13:45:07.123456 UTC.
    since = datetime.datetime(2024, 2, 29, 15, 45, 7, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    inputs = dict(n=42, ratio=0.25, name="o'hara", active=True, since=since)
    meta = create(hosted, task, **inputs)

    # The Python connector's meta, byte for byte, around the job id ours generated.
    job_id = json.loads(meta)["job_id"]
    assert meta == BigQueryMetadata(job_id=job_id, project=PROJECT, location="US", user_agent=USER_AGENT).encode()
    decoded = BigQueryMetadata.decode(meta)
    assert (decoded.job_id, decoded.project, decoded.location, decoded.user_agent) == (
        job_id,
        PROJECT,
        "US",
        USER_AGENT,
    )

    # The job BigQuery received: the plugin's (whitespace-normalised) query with typed parameters.
    insert = inserted_job(hosted, job_id)
    assert insert["user_agent"] == USER_AGENT
    job = insert["body"]
    assert job["jobReference"] == {"projectId": PROJECT, "jobId": job_id, "location": "US"}
    query = job["configuration"]["query"]
    assert query["query"] == (
        "SELECT * FROM events WHERE n = @n AND ratio < @ratio AND name = @name AND active = @active AND ts > @since"
    )
    assert query["useLegacySql"] is False
    assert query["parameterMode"] == "NAMED"
    sent = {p["name"]: (p["parameterType"]["type"], p["parameterValue"]["value"]) for p in query["queryParameters"]}
    assert len(sent) == len(query["queryParameters"]), "a parameter is sent twice"
    assert sent == {
        "n": ("INT64", "42"),
        "ratio": ("FLOAT64", "0.25"),
        "name": ("STRING", "o'hara"),
        "active": ("BOOL", "true"),
        "since": ("DATETIME", "2024-02-29T13:45:07.123456"),
    }
    # The same the Python connector sends for these inputs.
    assert sent == python_query_parameters(task, **inputs)

    resources = [get(hosted, meta) for _ in range(3)]
    assert [phase_name(r) for r in resources] == ["INITIALIZING", "RUNNING", "SUCCEEDED"]
    assert [r.message for r in resources] == ["PENDING", "RUNNING", "DONE"]
    link = resources[0].log_links[0]
    # A dashboard link, ready, as the Python connector marks it.
    assert (link.name, link.ready, link.link_type) == ("BigQuery Console", True, execution_pb2.TaskLog.DASHBOARD)
    assert link.uri == (
        f"https://console.cloud.google.com/bigquery?project={PROJECT}&j=bq:US:{job_id}&page=queryresults"
    )

    # The result table, as a DataFrame flyte reads...
    done = resources[-1]
    results = output_literals(done)["results"]
    frame = asyncio.run(TypeEngine.to_python_value(results, flyte.io.DataFrame))
    assert isinstance(frame, flyte.io.DataFrame)
    table = f"bq://{PROJECT}:{RESULT_DATASET}.anon_{job_id.replace('-', '')}"
    assert frame.uri == table
    # ... the very literal the Python connector's server returns for that table ...
    python_resource = asyncio.run(
        get_resource_proto(
            Resource(phase=execution_pb2.TaskExecution.SUCCEEDED, outputs={"results": flyte.io.DataFrame(uri=table)})
        )
    )
    assert done.outputs == python_resource.outputs
    # ... and the job's destination table, as Google's client reads it from the meta's fields.
    destination = google_client(hosted.fake, decoded.location).get_job(decoded.job_id, decoded.project).destination
    assert f"bq://{destination.project}:{destination.dataset_id}.{destination.table_id}" == table


def test_a_job_inserted_elsewhere_is_polled_and_a_slow_job_is_cancelled(bigquery_connector):
    hosted = bigquery_connector
    # A job inserted by Google's own client (as the Python connector does), in the EU ...
    job = google_client(hosted.fake, "EU").query("SELECT COUNT(*) FROM events")
    # ... and the meta the Python connector stores for it.
    meta = BigQueryMetadata(job_id=job.job_id, project=PROJECT, location="EU", user_agent=USER_AGENT).encode()
    resources = [get(hosted, meta) for _ in range(3)]
    assert [phase_name(r) for r in resources] == ["INITIALIZING", "RUNNING", "SUCCEEDED"]
    frame = asyncio.run(TypeEngine.to_python_value(output_literals(resources[-1])["results"], flyte.io.DataFrame))
    assert frame.uri == f"bq://{PROJECT}:{RESULT_DATASET}.anon_{job.job_id.replace('-', '')}"

    # A job that would run forever, cancelled; cancelling it again is fine.
    slow = create(hosted, bigquery_task("slow_query", "SELECT 1 -- slow"))
    assert phase_name(get(hosted, slow)) == "INITIALIZING"
    cancels = fake_record(hosted.fake, "calls")["cancel"]
    delete(hosted, slow)
    assert fake_record(hosted.fake, "calls")["cancel"] == cancels + 1
    cancelled = get(hosted, slow)
    assert phase_name(cancelled) == "FAILED"
    assert "cancelled" in cancelled.message, cancelled.message
    delete(hosted, slow)
    assert fake_record(hosted.fake, "calls")["cancel"] == cancels + 2
    assert phase_name(get(hosted, slow)) == "FAILED"


def test_a_key_google_does_not_know_is_refused_naming_the_project_and_account(bigquery_connector):
    hosted = bigquery_connector
    other_pem = (KEYS / "other.pem").read_text()
    refused = fake_record(hosted.fake, "calls")["unauthorized"]
    err = expect_rpc_error(
        lambda: create(hosted, bigquery_task("wrong_key", "SELECT 1"), key=key_file(other_pem)),
        grpc.StatusCode.INTERNAL,
    )
    message = err.details()
    assert PROJECT in message and CLIENT_EMAIL in message and "refused" in message, message
    assert "eyJ" not in message, "the message quotes the JWT"
    assert fake_record(hosted.fake, "calls")["unauthorized"] == refused + 1
    log = hosted.server.log()
    for line in key_lines(other_pem):
        assert line not in message, "the message quotes the key"
        assert line not in log, "a line of the key reached the server's log"
