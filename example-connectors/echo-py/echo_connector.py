"""Echo connector, in Python: a task whose outputs are its inputs.

The twin of the Rust `echo` connector, for task type `echo_py`. `create`
keeps the inputs as the host sent them (JSON) with their literal types in
the resource meta; `get` turns each back into its Python value and returns
it typed as it came, so the client gets back exactly the literals it sent,
through the SDK's conversions both ways. It also answers metrics and logs.
"""

from dataclasses import dataclass
from typing import Any, Dict

from flyte_connector import (
    AsyncConnector,
    ConnectorRegistry,
    LogsPage,
    MetricResult,
    Resource,
    ResourceMeta,
    TaskExecution,
    Typed,
    from_json,
)


@dataclass
class EchoMeta(ResourceMeta):
    """The task's inputs as JSON, and the literal type of each."""

    inputs: Dict[str, Any]
    input_types: Dict[str, Any]


class EchoConnector(AsyncConnector):
    name = "Echo Connector (Python)"
    task_type_name = "echo_py"
    metadata_type = EchoMeta

    async def create(self, task_template, output_prefix, inputs=None, task_execution_metadata=None, **kwargs):
        return EchoMeta(inputs=inputs.json, input_types=inputs.types)

    async def get(self, resource_meta: EchoMeta, **kwargs) -> Resource:
        outputs = {
            name: Typed(from_json(value, resource_meta.input_types[name]), resource_meta.input_types[name])
            for name, value in resource_meta.inputs.items()
        }
        return Resource(
            phase=TaskExecution.SUCCEEDED,
            message=f"echoed {len(outputs)} inputs",
            outputs=outputs,
        )

    async def delete(self, resource_meta: EchoMeta, **kwargs) -> None:
        return None

    async def get_metrics(self, resource_meta: EchoMeta, queries, **kwargs):
        return [MetricResult(metric=query, data={"inputs": len(resource_meta.inputs)}) for query in queries]

    async def get_logs(self, resource_meta: EchoMeta, lines=0, token="", **kwargs):
        entries = sorted(resource_meta.inputs.items())
        if lines:
            entries = entries[:lines]
        return LogsPage(lines=[f"{name}={_json_text(value)}" for name, value in entries])


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


ConnectorRegistry.register(EchoConnector())
