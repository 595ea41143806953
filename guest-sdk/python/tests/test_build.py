"""`flyte-connector build` names what is wrong with a connector module
before componentize-py runs (these cases never reach it), and hands a good
one to componentize-py for the world asked: the async one by default, the
sync one with `--sync`."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flyte_connector import build

GOOD = '''
from dataclasses import dataclass
from flyte_connector import AsyncConnector, ConnectorRegistry, Resource, ResourceMeta, TaskExecution

@dataclass
class Meta(ResourceMeta):
    job: str

class JobConnector(AsyncConnector):
    name = "Job Connector"
    task_type_name = "job"
    metadata_type = Meta

    async def create(self, task_template, output_prefix, inputs=None, **kwargs):
        return Meta(job="1")

    async def get(self, resource_meta, **kwargs):
        return Resource(phase=TaskExecution.SUCCEEDED)

    async def delete(self, resource_meta, **kwargs):
        return None
'''


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def build_error(module: Path, *extra: str) -> str:
    """Runs the command line as a user would; its error output (it must fail)."""
    finished = subprocess.run(
        [sys.executable, "-m", "flyte_connector", "build", str(module), "-o", str(module.with_suffix(".wasm")), *extra],
        capture_output=True,
        text=True,
    )
    assert finished.returncode == 1, finished
    assert not module.with_suffix(".wasm").exists()
    lines = finished.stderr.strip().splitlines()
    assert lines and lines[0].startswith("flyte-connector build: error: "), finished.stderr
    return finished.stderr


def test_a_complete_module_passes_the_checks(tmp_path):
    module = write(tmp_path, "job_connector.py", GOOD + "\nConnectorRegistry.register(JobConnector())\n")
    assert build.check(module, []) == "job_connector"


def test_a_syntax_error_names_the_file_and_line(tmp_path):
    module = write(tmp_path, "job_connector.py", GOOD + "\n    def broken(:\n")
    error = build_error(module)
    assert f"{module}:{GOOD.count(chr(10)) + 2}: syntax error" in error


def test_a_module_that_registers_nothing_names_the_unregistered_class(tmp_path):
    module = write(tmp_path, "job_connector.py", GOOD)
    error = build_error(module)
    assert "no connector is registered" in error
    assert "JobConnector is defined but never registered" in error


def test_a_module_without_a_connector_class_says_so(tmp_path):
    module = write(tmp_path, "job_connector.py", "VALUE = 1\n")
    assert "the module defines no AsyncConnector subclass" in build_error(module)


def test_an_incomplete_declaration_names_the_missing_attribute(tmp_path):
    source = GOOD.replace('task_type_name = "job"', "") + "\nConnectorRegistry.register(JobConnector())\n"
    module = write(tmp_path, "job_connector.py", source)
    error = build_error(module)
    assert "JobConnector must set `task_type_name`" in error
    assert f"{module}:{source.count(chr(10))}" in error


def test_a_missing_dependency_names_it_and_where_to_put_it(tmp_path):
    module = write(tmp_path, "job_connector.py", "import not_installed_anywhere\n" + GOOD)
    error = build_error(module)
    assert "cannot import 'not_installed_anywhere'" in error and "-p" in error


def test_a_dependency_with_native_code_is_refused(tmp_path):
    spec = importlib.util.find_spec("_cffi_backend")
    if spec is None or spec.origin is None:
        pytest.skip("no stand-alone extension module installed to play the native dependency")
    deps = tmp_path / "deps"
    deps.mkdir()
    shutil.copy(spec.origin, deps / Path(spec.origin).name)
    module = write(tmp_path, "job_connector.py", "import _cffi_backend\n" + GOOD + "\nConnectorRegistry.register(JobConnector())\n")
    error = build_error(module, "-p", str(deps))
    assert "native code, which a component cannot run: _cffi_backend" in error


def test_dependencies_come_only_from_the_named_folders(tmp_path):
    # The build's Python (this venv) has grpc installed; the component would
    # not, so the check must not find it either.
    module = write(tmp_path, "job_connector.py", "import grpc\n" + GOOD + "\nConnectorRegistry.register(JobConnector())\n")
    assert "cannot import 'grpc'" in build_error(module)


def componentize(monkeypatch, tmp_path, *extra: str):
    """Runs the command line on a good module with componentize-py stood in
    for: the command it would run and the app module it would build."""
    module = write(tmp_path, "job_connector.py", GOOD + "\nConnectorRegistry.register(JobConnector())\n")
    seen = {}

    def componentize_py(command, env):
        scratch = Path(command[command.index("-p") + 1])
        seen.update(command=command, app=(scratch / f"{build.APP_MODULE}.py").read_text())
        Path(command[command.index("-o") + 1]).write_bytes(b"\0asm")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(build.subprocess, "run", componentize_py)
    monkeypatch.setattr(build, "check", lambda module, python_path: module.stem)
    assert build.main(["build", str(module), "-o", str(tmp_path / "job.wasm"), "-q", *extra]) == 0
    command = seen["command"]
    return command[command.index("-w") + 1], seen["app"]


def test_the_async_world_is_built_by_default(monkeypatch, tmp_path):
    world, app = componentize(monkeypatch, tmp_path)
    assert world == build.ASYNC_WORLD == "python-async-plugin"
    lines = app.splitlines()
    # The export first (timers and log streams ready for the connector's module), the freeze last.
    assert lines[0].startswith("from flyte_connector._guest_async import AsyncConnector")
    assert lines[1].startswith("import job_connector")
    assert lines[-1].startswith("import flyte_connector._snapshot")


def test_sync_builds_the_sync_world(monkeypatch, tmp_path):
    world, app = componentize(monkeypatch, tmp_path, "--sync")
    assert world == build.SYNC_WORLD == "python-plugin"
    lines = app.splitlines()
    assert lines[0].startswith("import job_connector")
    assert lines[1].startswith("from flyte_connector._guest import Connector")
    assert lines[-1].startswith("import flyte_connector._snapshot")


def test_the_help_names_the_switch_and_both_worlds():
    finished = subprocess.run(
        [sys.executable, "-m", "flyte_connector", "build", "--help"], capture_output=True, text=True, check=True
    )
    text = " ".join(finished.stdout.split())
    assert "--sync" in text and build.SYNC_WORLD in text and build.ASYNC_WORLD in text


def test_the_worlds_are_in_the_shipped_wit_and_the_contract_is_the_hosts():
    python_wit = (build.WIT_DIR / "python.wit").read_text()
    assert f"package flyte:connector@{build.CONTRACT};" in python_wit
    assert f"world {build.SYNC_WORLD} {{" in python_wit and f"world {build.ASYNC_WORLD} {{" in python_wit
    shipped = (build.WIT_DIR / "connector.wit").read_bytes()
    assert shipped == (Path(__file__).resolve().parents[3] / "wit" / "connector.wit").read_bytes()
