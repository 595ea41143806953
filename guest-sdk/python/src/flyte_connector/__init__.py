"""Write Flyte connectors in Python, with the shape of `flyte.connectors`.

A Flyte connector ports by changing its imports: the resource meta, the
resource, log links and phases here are those of `flyte.connectors` and
`flyteidl2`, with the same fields, defaults and encodings, so resource metas
move between flyte's Python server and flyte-connect.

Status: this package holds the data model and the phase table, checked
against the contract fixtures in `wit/fixtures/`. The connector base class,
the HTTP client and the build into a component are the next steps.
"""

from flyte_connector.phases import Phase, TaskExecution, convert_to_flyte_phase, is_terminal_phase
from flyte_connector.resource import Resource, ResourceMeta, TaskLog

__all__ = [
    "Phase",
    "Resource",
    "ResourceMeta",
    "TaskExecution",
    "TaskLog",
    "convert_to_flyte_phase",
    "is_terminal_phase",
]
