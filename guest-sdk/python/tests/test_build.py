"""`flyte-connector build` names what is wrong with a connector module
before componentize-py runs (these cases never reach it)."""

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
