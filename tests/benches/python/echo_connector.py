"""An echo connector for the Python connector server (`c0` from the `flyte`
package): the baseline `make bench` measures flyte-connect against.

It does what `example-connectors/echo` does: `create` keeps the task's
inputs in its resource meta and `get` succeeds at once with them as outputs.
The server loads it with `c0 --modules echo_connector` run from this folder.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from flyteidl2.core.execution_pb2 import TaskExecution

from flyte.connectors import AsyncConnector, ConnectorRegistry, Resource, ResourceMeta


@dataclass
class EchoMeta(ResourceMeta):
    inputs: Dict[str, Any] = field(default_factory=dict)


class EchoConnector(AsyncConnector):
    name = "Echo Connector"
    task_type_name = "echo"
    metadata_type = EchoMeta

    async def create(self, task_template, output_prefix: str, inputs: Optional[Dict[str, Any]] = None, **kwargs) -> EchoMeta:
        return EchoMeta(inputs=dict(inputs or {}))

    async def get(self, resource_meta: EchoMeta, **kwargs) -> Resource:
        return Resource(phase=TaskExecution.SUCCEEDED, outputs=resource_meta.inputs)

    async def delete(self, resource_meta: EchoMeta, **kwargs) -> None:
        return None


ConnectorRegistry.register(EchoConnector())
