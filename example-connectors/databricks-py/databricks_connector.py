"""Databricks connector, in Python: runs the tasks of `flyteplugins-databricks`
as one-time runs of the Databricks Jobs API 2.1.

The twin of the Rust `databricks` connector, with the same requests,
phases, messages and resource meta:

- `create` submits the run (`POST /api/2.1/jobs/runs/submit`): the
  template's `custom.databricksConf`, completed as flyte's connector
  completes it (cluster image, Spark conf and environment from the
  template, Flyte's Databricks entrypoint run from git with the container's
  arguments).
- `get` polls it (`GET /api/2.1/jobs/runs/get`) and maps its state to a
  Flyte phase, with a link to the run in the Databricks console.
- `delete` cancels it (`POST /api/2.1/jobs/runs/cancel`).

The API token is the connection secret `databricks_token`. The resource
meta is flyte's `DatabricksJobMetadata`, byte for byte, so runs move
between flyte's server, the Rust connector and this one.
"""

import hashlib
import json
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from flyte_connector import (
    AsyncConnector,
    ConnectorError,
    ConnectorRegistry,
    InvalidRequest,
    Phase,
    Resource,
    ResourceMeta,
    TaskLog,
    http,
)

#: Environment variable naming the workspace when the task does not.
INSTANCE_ENV = "FLYTE_DATABRICKS_INSTANCE"
#: The connection secret holding the API token.
TOKEN_SECRET = "databricks_token"

# Where Flyte's Databricks entrypoint lives, as flyte's connector submits it.
ENTRYPOINT_FILE = "flyteplugins/databricks/entrypoint.py"
ENTRYPOINT_REPO = "https://github.com/flyteorg/flytetools"
ENTRYPOINT_COMMIT = "194364210c47c49ce66c419e8fb68d6f9c06fd7e"

#: Whole numbers below this magnitude are exact as doubles.
_EXACT_INTEGERS = 2**53


@dataclass
class DatabricksMeta(ResourceMeta):
    """What `create` stores: flyte's `DatabricksJobMetadata`."""

    #: The workspace, as the task named it.
    databricks_instance: str
    #: The run's id (a string, as flyte's connector writes it).
    run_id: str


class DatabricksError(ConnectorError):
    """Databricks refused a call or answered something this connector
    cannot use. It fails the call with its message as is (not retryable)."""


# -- the run to submit ---------------------------------------------------------


def idempotency_token(task_execution_metadata: Any) -> Optional[str]:
    """The run's `idempotency_token`: SHA-256 (hex) of the task execution's
    id as compact JSON with sorted keys, as the Rust connector makes it, so
    every attempt of one task execution sends the same token."""
    if task_execution_metadata is None:
        return None
    task_execution_id = task_execution_metadata.to_dict().get("taskExecutionId")
    if not task_execution_id:
        return None
    text = json.dumps(task_execution_id, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()



def _custom_fields(custom: Dict[str, Any]) -> Tuple[Optional[Dict[str, Any]], Optional[str], Dict[str, Any]]:
    """`databricksConf`, `databricksInstance` and `sparkConf` of the
    template's `custom`, checked for their types."""

    def field(name: str, kind: type, kind_name: str) -> Any:
        value = custom.get(name)
        if value is not None and not isinstance(value, kind):
            raise InvalidRequest(f"cannot read the task template's custom field: {name} is not {kind_name}")
        return value

    conf = field("databricksConf", dict, "an object")
    instance = field("databricksInstance", str, "a string")
    spark_conf = field("sparkConf", dict, "an object")
    return conf, instance, spark_conf or {}


def _is_empty(value: Any) -> bool:
    """Whether a JSON value is absent or empty, as Python's `not value`
    says, except that every number counts as set."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return False
    return not value


def _integral_numbers(value: Any) -> Any:
    """`value` with whole floats made integers again.

    Numbers in a template's `custom` went through `google.protobuf.Struct`,
    which knows only doubles: `3600` arrives as `3600.0`. The Jobs API's
    fields are integers."""
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INTEGERS:
        return int(value)
    if isinstance(value, list):
        return [_integral_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral_numbers(item) for key, item in value.items()}
    return value


def _complete_cluster(cluster: Dict[str, Any], image: str, spark_conf: Dict[str, Any], env: Dict[str, str]) -> None:
    """Fills a `new_cluster` from the template: the container image, the
    task's Spark conf, and the container's env merged into its Spark env."""
    if _is_empty(cluster.get("docker_image")):
        cluster["docker_image"] = {"url": image}
    if _is_empty(cluster.get("spark_conf")):
        cluster["spark_conf"] = spark_conf
    env_vars = cluster.get("spark_env_vars")
    if isinstance(env_vars, dict) and env_vars:
        env_vars.update(env)
    else:
        cluster["spark_env_vars"] = dict(env)


def run_spec(
    conf: Optional[Dict[str, Any]], spark_conf: Dict[str, Any], image: str, args: List[str], env: Dict[str, str]
) -> Dict[str, Any]:
    """The run to submit: `databricksConf`, completed."""
    if conf is None:
        raise InvalidRequest("the task template has no Databricks job configuration (custom.databricksConf)")
    spec = dict(conf)
    if spec.get("existing_cluster_id") is None:
        cluster = spec.get("new_cluster")
        if not isinstance(cluster, dict):
            raise InvalidRequest("the Databricks job configuration needs either existing_cluster_id or new_cluster")
        _complete_cluster(cluster, image, spark_conf, env)
    spec["spark_python_task"] = {"python_file": ENTRYPOINT_FILE, "parameters": list(args), "source": "GIT"}
    spec["git_source"] = {"git_url": ENTRYPOINT_REPO, "git_provider": "gitHub", "git_commit": ENTRYPOINT_COMMIT}
    return _integral_numbers(spec)


# -- the workspace ---------------------------------------------------------------


def base_url(instance: str) -> str:
    """The API's base URL: `https://INSTANCE`, or the instance itself when
    it already names a scheme (private endpoints, proxies, tests)."""
    instance = instance.rstrip("/")
    if instance.startswith(("https://", "http://")):
        return instance
    return f"https://{instance}"


def _token(kwargs: Dict[str, Any]) -> str:
    """The API token, from the connection."""
    token = kwargs.get(TOKEN_SECRET)
    if token is None:
        raise InvalidRequest(f"the connection has no `{TOKEN_SECRET}`: set it in the connection's secrets or configs")
    return token


def _headers(token: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _checked(response: http.Response, instance: str, what: str) -> http.Response:
    """`response`, if Databricks accepted the call. A refused token fails
    with a message that names the workspace (never the token); other error
    statuses raise `StatusError` with Databricks' answer (retryable for 429
    and 5xx)."""
    if response.status in (401, 403):
        raise DatabricksError(
            f"Databricks workspace {instance} refused the API token (HTTP {response.status}) while trying to "
            f"{what}: check the connection secret `{TOKEN_SECRET}`"
        )
    return response.raise_for_status()


def _json_object(response: http.Response, what: str) -> Dict[str, Any]:
    """The answer's body, which must be a JSON object."""
    answer = response.json()
    if not isinstance(answer, dict):
        raise DatabricksError(f"cannot read the answer to {response.method} {response.url} as {what}: not an object")
    return answer


def _id_text(value: Any) -> Optional[str]:
    """A run or job id as text: numbers as JSON writes them, strings as
    they are; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return value
    return None


def _run_id_value(run_id: str) -> Any:
    """The run id as the cancel request sends it: a number when it is one."""
    if re.fullmatch(r"\+?[0-9]+", run_id) and int(run_id) < 2**64:
        return int(run_id)
    return run_id


# -- phases ------------------------------------------------------------------------

_LIFE_CYCLE_PHASES = {
    "QUEUED": Phase.QUEUED,
    "PENDING": Phase.INITIALIZING,
    "BLOCKED": Phase.WAITING_FOR_RESOURCES,
    "RUNNING": Phase.RUNNING,
    "TERMINATING": Phase.RUNNING,
    "WAITING_FOR_RETRY": Phase.RUNNING,
    "SKIPPED": Phase.FAILED,
    "INTERNAL_ERROR": Phase.RETRYABLE_FAILED,
}

_RESULT_PHASES = {
    "SUCCESS": Phase.SUCCEEDED,
    "SUCCESS_WITH_FAILURES": Phase.SUCCEEDED,
    **dict.fromkeys(
        ["FAILED", "TIMEDOUT", "CANCELED", "EXCLUDED", "UPSTREAM_FAILED", "UPSTREAM_CANCELED", "DISABLED"],
        Phase.FAILED,
    ),
    # Skipped for too many concurrent runs: a later attempt can run.
    "MAXIMUM_CONCURRENT_RUNS_REACHED": Phase.RETRYABLE_FAILED,
}


def phase_of(life_cycle_state: str, result_state: Optional[str]) -> Phase:
    """The Flyte phase of a run's state. Every state the Jobs API documents
    has one; flyte's connector fails on QUEUED, BLOCKED and
    WAITING_FOR_RETRY, which are runs still on their way."""
    if life_cycle_state != "TERMINATED":
        if life_cycle_state not in _LIFE_CYCLE_PHASES:
            raise DatabricksError(f"unrecognized Databricks life cycle state {life_cycle_state}")
        return _LIFE_CYCLE_PHASES[life_cycle_state]
    if result_state is None:
        raise DatabricksError("the Databricks run is TERMINATED but has no result state")
    if result_state not in _RESULT_PHASES:
        raise DatabricksError(f"unrecognized Databricks result state {result_state}")
    return _RESULT_PHASES[result_state]


# -- the connector ---------------------------------------------------------------


class DatabricksConnector(AsyncConnector):
    """Databricks one-time runs, for the tasks of `flyteplugins-databricks`."""

    name = "Databricks Connector (Python)"
    task_type_name = "databricks"
    task_type_version = 0
    metadata_type = DatabricksMeta

    async def create(self, task_template, output_prefix, inputs=None, task_execution_metadata=None, **kwargs):
        """Submits the run; the meta names its workspace and id."""
        conf, instance, spark_conf = _custom_fields(task_template.custom)
        container = task_template.container
        if not instance:
            instance = os.environ.get(INSTANCE_ENV)
        if instance is None:
            raise InvalidRequest(
                "the task names no Databricks instance: set databricks_instance on the task, "
                f"or {INSTANCE_ENV} in the connector's manifest"
            )
        env = {var.key: var.value for var in container.env}
        spec = run_spec(conf, spark_conf, container.image, container.args, env)
        if spec.get("idempotency_token") is None:
            idempotency = idempotency_token(task_execution_metadata)
            if idempotency is not None:
                spec["idempotency_token"] = idempotency
        token = _token(kwargs)
        url = f"{base_url(instance)}/api/2.1/jobs/runs/submit"
        # With a token Databricks returns the run a first submit started, so
        # a throttled submit may be repeated.
        response = await http.post(
            url, json=spec, headers=_headers(token), idempotent=spec.get("idempotency_token") is not None
        )
        submitted = _json_object(_checked(response, instance, "submit the run"), "a submitted run")
        if "run_id" not in submitted:
            raise DatabricksError(f"cannot read the answer to POST {response.url} as a submitted run: no run_id")
        run_id = _id_text(submitted["run_id"])
        if run_id is None:
            raise DatabricksError(f"Databricks answered the submit with run_id {json.dumps(submitted['run_id'])}")
        print(f"submitted Databricks run {run_id} to {instance}", file=sys.stderr)
        return DatabricksMeta(databricks_instance=instance, run_id=run_id)

    async def get(self, resource_meta: DatabricksMeta, **kwargs) -> Resource:
        """The run's phase and state message, with a link to its console page."""
        instance = resource_meta.databricks_instance
        token = _token(kwargs)
        run_id = urllib.parse.quote(resource_meta.run_id, safe="")
        url = f"{base_url(instance)}/api/2.1/jobs/runs/get?run_id={run_id}"
        response = await http.get(url, headers=_headers(token))
        run = _json_object(_checked(response, instance, "poll the run"), "a run")
        state = run.get("state") or {}
        phase = phase_of(state.get("life_cycle_state") or "PENDING", state.get("result_state"))
        job_id = _id_text(run.get("job_id")) or ""
        console = f"{base_url(instance)}/#job/{job_id}/run/{resource_meta.run_id}"
        return Resource(
            phase=phase,
            message=state.get("state_message") or "",
            log_links=[TaskLog(name="Databricks Console", uri=console, ready=True)],
        )

    async def delete(self, resource_meta: DatabricksMeta, **kwargs) -> None:
        """Cancels the run; cancelling it again is fine."""
        instance = resource_meta.databricks_instance
        token = _token(kwargs)
        url = f"{base_url(instance)}/api/2.1/jobs/runs/cancel"
        body = {"run_id": _run_id_value(resource_meta.run_id)}
        _checked(await http.post(url, json=body, headers=_headers(token)), instance, "cancel the run")


ConnectorRegistry.register(DatabricksConnector())
