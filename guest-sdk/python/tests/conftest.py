"""What the SDK's tests share: the bindings componentize-py generates from
the SDK's own WIT, as a build generates them, and a component host for the
async world's tests (`component_host`)."""

from __future__ import annotations

import asyncio
import importlib
import io
import subprocess
import sys

import pytest

import component_host
from flyte_connector import _async_loop, _call_log, build

#: A line of componentize-py's support that only Python 3.12 reads (the
#: tests may run on 3.11); the same function without its type parameter.
_PEP_695 = (
    "async def await_result[T](result: Result[T, tuple[int, int]]) -> T:",
    "T = _T\n\nasync def await_result(result):",
)


@pytest.fixture(scope="session")
def bindings(tmp_path_factory):
    """The generated `wit_world` package (of both worlds, merged) and
    componentize-py's `componentize_py_types` and
    `componentize_py_async_support`, made importable for the session.
    Their data types (records, variants) work under plain CPython; their
    resources and functions need a component, or the async world's
    `component` fixture."""
    out = tmp_path_factory.mktemp("bindings")
    command = build.componentize_py("bindings", str(out), worlds=[build.SYNC_WORLD, build.ASYNC_WORLD])
    subprocess.run(command, check=True, capture_output=True)
    support = out / "componentize_py_async_support" / "__init__.py"
    if sys.version_info < (3, 12):
        source = support.read_text()
        assert source.count(_PEP_695[0]) == 1, "componentize-py's support changed: update _PEP_695"
        support.write_text(source.replace(*_PEP_695))
    sys.modules["componentize_py_runtime"] = component_host.runtime_module()
    sys.path.insert(0, str(out))
    # Importing the support makes its loop the running one, as in a
    # component; here only a component host's calls run on it.
    importlib.import_module("componentize_py_async_support")
    asyncio.events._set_running_loop(None)
    asyncio.set_event_loop(None)
    yield out
    sys.path.remove(str(out))
    del sys.modules["componentize_py_runtime"]


@pytest.fixture
def component(bindings, monkeypatch):
    """The async world: a `component_host.Host` with fresh imports, and
    `flyte_connector._guest_async` imported on them as the build imports it:
    its loop completed, the standard streams pointed at the calls' logs
    (`host.streams`, which the host makes `sys.stdout` and `sys.stderr`
    while a call runs: pytest's capture resets them between phases); the
    streams those replaced are `host.stdout` and `host.stderr`."""
    import componentize_py_async_support as support
    from wit_world.imports import connector_types, connector_waits

    host = component_host.Host(support, connector_waits)
    monkeypatch.setattr(component_host, "HOST", host)
    monkeypatch.setattr(support._loop, "exception", None)
    monkeypatch.setitem(sys.modules, "wit_world.imports", host.imports(connector_types))
    monkeypatch.setattr(_async_loop, "_world", None)
    monkeypatch.setattr(_call_log, "_serving", False)
    sys.modules.pop("flyte_connector._guest_async", None)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = host.stdout, host.stderr = io.StringIO(), io.StringIO()
    try:
        host.guest = importlib.import_module("flyte_connector._guest_async")
        host.streams = sys.stdout, sys.stderr
    finally:
        sys.stdout, sys.stderr = saved
    yield host
    sys.modules.pop("flyte_connector._guest_async", None)
