"""What the SDK's tests share: the bindings componentize-py generates from
the SDK's own WIT, as a build generates them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flyte_connector import build


@pytest.fixture(scope="session")
def bindings(tmp_path_factory):
    """The generated `wit_world` package and `componentize_py_types`, made
    importable for the session. Their data types (records, variants) work
    under plain CPython; their resources and functions need a component."""
    out = tmp_path_factory.mktemp("bindings")
    subprocess.run(build.componentize_py("bindings", str(out)), check=True, capture_output=True)
    sys.path.insert(0, str(out))
    yield out
    sys.path.remove(str(out))
