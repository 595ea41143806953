"""A Python connector that misbehaves on request, for the fault tests.

Task type `faulty_py`; the input `fault` picks what `create` does:

- `raise`: raises `KeyError('run_id')` deep in connector code;
- `loop`: spins forever (the call's deadline must stop it);
- `memory`: allocates until the memory cap stops it;
- `fetch`: GETs the input `url` (the manifest allows no host);
- `sleep`: awaits `asyncio.sleep(seconds)` (input `seconds`, default 0.2)
  twice at once with `asyncio.gather`, then `asyncio.wait_for` of a 60 s
  sleep with a 0.05 s timeout, and succeeds (the SDK's event loop runs
  timers; the benchmark holds calls in flight with it);
- `gather`: GETs the input `url` input `count` times at once
  (`asyncio.gather`), and reports as the meta's `tally` (JSON text) how many
  answered and the errors of the others;
- `invalid` / `retry`: raises the SDK's `InvalidRequest` / `Retryable`;
- `tally`: reports what this instance saw before, as the meta's `tally`
  (JSON text): an id drawn at its first tally call (`os.urandom`, at run
  time: the `random` module's state is baked into the build snapshot), the
  number of tally calls it served, the connection value `tenant` of each
  earlier one and this one's, the most tally calls it had in flight at once
  (`most`), and how many `hang` calls it saw unwind (`unwound`); keeps
  input `keep_kib` KiB more for good, and sleeps input `seconds` (default
  0) first;
- `hang`: awaits a 600 s sleep; once the host gives the call up, the sleep
  raises `CancelledError` in it (the async world), and its `finally`
  counts it as unwound;
- `stuck`: sleeps briefly, then awaits an `asyncio.Event` nobody sets: once
  given up, nothing it waits on ends, so it never unwinds;
- `abort`: sleeps input `seconds` (default 0), prints `aborting now`, then
  aborts the process, which traps the instance;
- anything else: succeeds.

`get` succeeds with the output `slept`, except for a task created with
`retry-poll`, whose every poll raises `Retryable`.
"""

import asyncio
import json
import os
from dataclasses import dataclass

from flyte_connector import (
    AsyncConnector,
    ConnectorRegistry,
    InvalidRequest,
    Resource,
    ResourceMeta,
    Retryable,
    TaskExecution,
    http,
)


@dataclass
class FaultMeta(ResourceMeta):
    fault: str
    slept: float = 0.0
    tally: str = ""


# What this instance remembers across the calls it serves (see `tally`).
_INSTANCE = {"id": None, "calls": 0, "tenants": [], "kept": [], "in_flight": 0, "most": 0, "unwound": 0}


async def _tally(inputs: dict, connection: dict) -> str:
    if _INSTANCE["id"] is None:
        _INSTANCE["id"] = os.urandom(8).hex()
    _INSTANCE["in_flight"] += 1
    _INSTANCE["most"] = max(_INSTANCE["most"], _INSTANCE["in_flight"])
    try:
        await asyncio.sleep(float(inputs.get("seconds", "0")))
    finally:
        _INSTANCE["in_flight"] -= 1
    _INSTANCE["calls"] += 1
    tenant = connection.get("tenant", "")
    seen = list(_INSTANCE["tenants"])
    _INSTANCE["tenants"].append(tenant)
    _INSTANCE["kept"].append(bytearray(int(inputs.get("keep_kib", 0)) * 1024))
    return json.dumps(
        {
            "instance": _INSTANCE["id"],
            "calls": _INSTANCE["calls"],
            "seen": seen,
            "tenant": tenant,
            "most": _INSTANCE["most"],
            "unwound": _INSTANCE["unwound"],
        }
    )


def _lookup(record: dict) -> str:
    return record["run_id"]


class FaultyConnector(AsyncConnector):
    name = "Faulty Connector (Python)"
    task_type_name = "faulty_py"
    metadata_type = FaultMeta

    async def create(self, task_template, output_prefix, inputs=None, task_execution_metadata=None, **kwargs):
        fault = inputs.get("fault", "")
        if fault == "raise":
            _lookup({})
        elif fault == "loop":
            while True:
                pass
        elif fault == "memory":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        elif fault == "fetch":
            await http.get(inputs["url"])
        elif fault == "gather":
            count = int(inputs.get("count", "8"))
            answers = await asyncio.gather(*(http.get(inputs["url"]) for _ in range(count)), return_exceptions=True)
            errors = [str(a) for a in answers if isinstance(a, BaseException)]
            return FaultMeta(fault=fault, tally=json.dumps({"answered": count - len(errors), "errors": errors}))
        elif fault == "invalid":
            raise InvalidRequest("the template asks for something this connector cannot run")
        elif fault == "tally":
            return FaultMeta(fault=fault, tally=await _tally(inputs, kwargs))
        elif fault == "hang":
            try:
                await asyncio.sleep(600)
            finally:
                _INSTANCE["unwound"] += 1
        elif fault == "stuck":
            await asyncio.sleep(0.01)
            await asyncio.Event().wait()
        elif fault == "abort":
            await asyncio.sleep(float(inputs.get("seconds", "0")))
            print("aborting now", flush=True)
            os.abort()
        elif fault == "retry":
            raise Retryable("the service is busy, try again")
        elif fault == "sleep":
            loop = asyncio.get_running_loop()
            started = loop.time()
            seconds = float(inputs.get("seconds", "0.2"))
            await asyncio.gather(asyncio.sleep(seconds), asyncio.sleep(seconds))
            slept = round(loop.time() - started, 1)
            try:
                await asyncio.wait_for(asyncio.sleep(60), timeout=0.05)
            except TimeoutError:
                return FaultMeta(fault=fault, slept=slept)
            raise AssertionError("asyncio.wait_for did not time out")
        return FaultMeta(fault=fault)

    async def get(self, resource_meta: FaultMeta, **kwargs) -> Resource:
        if resource_meta.fault == "retry-poll":
            raise Retryable("the service is busy, poll again")
        return Resource(phase=TaskExecution.SUCCEEDED, outputs={"slept": resource_meta.slept})

    async def delete(self, resource_meta: FaultMeta, **kwargs) -> None:
        return None


ConnectorRegistry.register(FaultyConnector())
