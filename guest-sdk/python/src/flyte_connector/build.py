"""`flyte-connector build`: a connector module into a WebAssembly component.

    flyte-connector build my_connector.py -o my_connector.wasm [-p DEPS_DIR ...] [--sync]

Before handing the module to componentize-py, the build checks what it can
name clearly: the module compiles, imports (with its dependencies, from the
module's folder and each `-p` folder), registers exactly one connector
whose declaration is complete, and needs no native extension module (a
component runs pure Python only). Then componentize-py bundles the module,
its pure-Python dependencies and this SDK with CPython into one component
targeting a world of the WIT shipped in this package:

- by default `python-async-plugin` (flyte:connector's `async-plugin`): the
  host may run several calls of one tenant in one instance at once, each
  waiting (HTTP, `asyncio.sleep`) through the contract's `waits` while the
  others run. Those calls share the module's globals, so a connector must
  not keep one call's state in them (caches of values are fine, see
  `flyte_connector.cache`), nor share an asyncio lock, event or future
  between calls (a call cannot wake another one).
- with `--sync`, `python-plugin` (`plugin`): one call per instance at a
  time, over wasi:http. For a connector that is not safe to run
  concurrently.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import List, Optional, Sequence

import flyte_connector

#: The WIT this SDK targets, shipped inside the package.
WIT_DIR = Path(flyte_connector.__file__).parent / "wit"
#: The version of flyte:connector in `WIT_DIR`.
CONTRACT = "1.3.0"
#: The world built by default: calls may share an instance (`async-plugin`).
ASYNC_WORLD = "python-async-plugin"
#: The world `--sync` builds: one call per instance at a time (`plugin`).
SYNC_WORLD = "python-plugin"
#: Module names of imported WIT interfaces, fixed so the SDK's imports do not
#: depend on componentize-py's clash resolution. (A world without one of
#: them ignores its name.)
INTERFACE_NAMES = [
    f"flyte:connector/types@{CONTRACT}=connector_types",
    f"flyte:connector/call@{CONTRACT}=connector_call",
    f"flyte:connector/http-retries@{CONTRACT}=connector_http_retries",
    f"flyte:connector/waits@{CONTRACT}=connector_waits",
    "wasi:http/types@0.2.12=wasi_http_types",
]
APP_MODULE = "flyte_connector_app"
#: The folder holding this package: on the Python path of the check and of
#: the component.
SDK_ROOT = Path(flyte_connector.__file__).resolve().parent.parent


class BuildError(Exception):
    """A problem with the connector module, found before componentize-py runs."""


def main(argv: Optional[List[str]] = None) -> int:
    """The `flyte-connector` command line."""
    parser = argparse.ArgumentParser(prog="flyte-connector", description="Build Flyte connectors into components.")
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build a connector module into a .wasm component")
    build_parser.add_argument("module", type=Path, help="the connector's Python file (my_connector.py)")
    build_parser.add_argument("-o", "--output", type=Path, help="the component to write (default: MODULE.wasm)")
    build_parser.add_argument(
        "-p",
        "--python-path",
        type=Path,
        action="append",
        default=[],
        help="a folder of pure-Python dependencies to bundle (repeatable)",
    )
    build_parser.add_argument(
        "--sync",
        action="store_true",
        help=(
            f"build for the sync world ({SYNC_WORLD}: one call per instance at a time, over wasi:http) "
            f"instead of the async one ({ASYNC_WORLD}, the default: the host may run several calls of one "
            "tenant in one instance at once, sharing the module's globals); for a connector that is not "
            "safe to run concurrently"
        ),
    )
    build_parser.add_argument("-q", "--quiet", action="store_true", help="only print errors")
    args = parser.parse_args(argv)

    output = args.output or args.module.with_suffix(".wasm")
    try:
        build(args.module, output, args.python_path, quiet=args.quiet, sync=args.sync)
    except BuildError as error:
        print(f"flyte-connector build: error: {error}", file=sys.stderr)
        return 1
    return 0


def build(module: Path, output: Path, python_path: List[Path], quiet: bool = False, sync: bool = False) -> None:
    """Checks `module` and builds it into the component `output`, of the
    async world, or of the sync one when `sync`."""
    name = check(module, python_path)
    with tempfile.TemporaryDirectory(prefix="flyte-connector-build-") as scratch:
        (Path(scratch) / f"{APP_MODULE}.py").write_text(app_module(name, sync))
        command = componentize_py(
            *(["--quiet"] if quiet else []),
            "componentize",
            APP_MODULE,
            "-p",
            scratch,
            "-p",
            str(module.resolve().parent),
            *(arg for folder in python_path for arg in ("-p", str(folder.resolve()))),
            "-p",
            str(SDK_ROOT),
            "-o",
            str(output),
            worlds=[SYNC_WORLD if sync else ASYNC_WORLD],
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        finished = subprocess.run(command, env=_without_virtual_env())
        if finished.returncode != 0:
            raise BuildError(f"componentize-py failed (exit {finished.returncode}) building {module}; its output is above")
    if not quiet:
        world = SYNC_WORLD if sync else ASYNC_WORLD
        print(f"built {output} ({output.stat().st_size / 1e6:.1f} MB, world {world})")


def app_module(name: str, sync: bool) -> str:
    """The module componentize-py builds: the connector module `name`, the
    export of the world, and last the snapshot's freeze. In the async world
    the export's module comes first, so that the connector's module already
    finds the timers and the calls' log streams (a `logging.StreamHandler`
    it makes keeps the `sys.stderr` it found)."""
    if sync:
        lines = [
            f"import {name}  # registers the connector",
            "from flyte_connector._guest import Connector",
        ]
    else:
        lines = [
            "from flyte_connector._guest_async import AsyncConnector  # first: timers, log streams",
            f"import {name}  # registers the connector",
        ]
    return "\n".join([*lines, "import flyte_connector._snapshot  # last", ""])


def componentize_py(*args: str, worlds: Sequence[str]) -> List[str]:
    """The command line running componentize-py (with this Python) on the
    SDK's WIT and `worlds` (several are merged), its interface module names
    pinned, then `args`."""
    return [
        sys.executable,
        "-c",
        "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
        "-d",
        str(WIT_DIR),
        *(arg for world in worlds for arg in ("-w", world)),
        *(arg for interface in INTERFACE_NAMES for arg in ("--import-interface-name", interface)),
        *args,
    ]


def check(module: Path, python_path: List[Path]) -> str:
    """The module's name, once it compiles, imports and registers one
    connector; `BuildError` naming the problem otherwise."""
    if not module.is_file():
        raise BuildError(f"{module}: no such file")
    name = module.stem
    if not name.isidentifier():
        raise BuildError(f"{module}: the file name must be a Python module name (letters, digits, _)")
    if name == APP_MODULE or name in ("flyte_connector", "wit_world"):
        raise BuildError(f"{module}: the module name {name!r} is taken by the build; rename the file")
    source = module.read_text(encoding="utf-8")
    try:
        compile(source, str(module), "exec")
    except SyntaxError as error:
        raise BuildError(f"{module}:{error.lineno}: syntax error: {error.msg}") from None

    folders = [module.resolve().parent, *(folder.resolve() for folder in python_path), SDK_ROOT]
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, name, *map(str, folders)],
        capture_output=True,
        text=True,
        env=_without_virtual_env(),
    )
    try:
        report = json.loads(probe.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BuildError(f"{module}: checking the module failed:\n{probe.stderr.strip()}") from None
    if report.get("error"):
        raise BuildError(f"{module}: {report['error']}")
    return name


def _without_virtual_env() -> dict:
    """The environment for child processes, without VIRTUAL_ENV, so that
    componentize-py bundles only the folders the build names."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    return env


# Runs in a child CPython: imports the module with only the build's folders
# (and the standard library) on its path, and reports what is wrong as one
# JSON line.
_PROBE = textwrap.dedent(
    """
    import importlib, json, sys, sysconfig, traceback
    from pathlib import Path

    name, folders = sys.argv[1], sys.argv[2:]
    stdlib = [Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib")]

    def in_stdlib(path):
        path = Path(path).resolve()
        installed = {"site-packages", "dist-packages"} & set(path.parts)
        return not installed and any(path.is_relative_to(s) for s in stdlib)

    sys.path[:] = [p for p in sys.path if p and in_stdlib(p)] + folders

    def report(error=None):
        print(json.dumps({"error": error}))
        sys.exit(0)

    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        report(f"cannot import {error.name!r}: install it (pure Python only) into a folder given with -p, "
               f"or beside the module")
    except Exception as error:
        # The deepest line of the connector's own code (not this SDK's) that failed.
        sdk = Path(sys.modules["flyte_connector"].__file__).parent if "flyte_connector" in sys.modules else None
        frames = traceback.extract_tb(error.__traceback__)
        own = [f for f in frames if not (sdk and Path(f.filename).resolve().is_relative_to(sdk.resolve()))]
        frame = (own or frames)[-1]
        last = traceback.format_exception_only(error)[-1].strip()
        report(f"importing the module failed at {frame.filename}:{frame.lineno}: {last}")

    native = sorted(
        f"{mod_name} ({Path(mod.__file__)})"
        for mod_name, mod in list(sys.modules.items())
        if getattr(mod, "__file__", None)
        and Path(mod.__file__).suffix in (".so", ".pyd", ".dylib")
        and not in_stdlib(mod.__file__)
    )
    if native:
        report("these modules are native code, which a component cannot run: " + ", ".join(native)
               + "; use pure-Python packages")

    from flyte_connector.connector import AsyncConnector, ConnectorRegistry
    try:
        ConnectorRegistry.get_connector()
    except LookupError as error:
        defined = sorted(
            value.__name__ for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, AsyncConnector) and value is not AsyncConnector
        )
        hint = (f" ({', '.join(defined)} is defined but never registered)" if defined
                else " (the module defines no AsyncConnector subclass)")
        report(str(error) + hint)
    report()
    """
)


if __name__ == "__main__":
    sys.exit(main())
