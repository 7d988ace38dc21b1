"""Builds a Python plugin into a component with componentize-py, against the contract this SDK
was written for (the WIT in this package's `wit/` directory, world `destination`).

    python -m canopy_plugin_sdk.build app dist/acme.wasm    # the component, from app.py
    python -m canopy_plugin_sdk.build --bindings gen         # wit_world for native unit tests
    python -m canopy_plugin_sdk.build --wit                  # where the WIT is

The component is built from the app module found in the project directory (`-p`, default the
current one) and the packages of the running interpreter's environment (the SDK and any other
dependency), and is written only when complete. It is not built again when it is newer than
every input: the project's Python files and `requirements.txt`, and this SDK's installed
files (`--force` builds anyway).
"""

from __future__ import annotations

import argparse
import os
import site
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

#: The contract's world every plugin implements.
WORLD = "destination"

_PACKAGE = Path(__file__).resolve().parent

# Directories of a project that never hold the plugin's sources.
_SKIPPED_DIRS = {".venv", "venv", "dist", "__pycache__", "node_modules", ".git", "tests"}

# componentize-py's command line, run by this interpreter (no console script needed).
_LAUNCHER = (
    "import sys; from componentize_py import script; "
    "sys.argv[0] = 'componentize-py'; sys.exit(script())"
)


def wit_dir() -> Path:
    """The directory of the contract's WIT this SDK builds against."""
    directory = (_PACKAGE / "wit").resolve()
    if not (directory / "destination.wit").is_file():
        raise FileNotFoundError(f"the contract's WIT is missing from {directory}")
    return directory


def componentize_py(arguments: Sequence[str]) -> list[str]:
    """The command that runs componentize-py with `arguments` under this interpreter."""
    return [sys.executable, "-c", _LAUNCHER, *arguments]


def site_packages() -> list[str]:
    """The running environment's package directories (a virtual environment's, under one)."""
    paths = [p for p in site.getsitepackages() if os.path.isdir(p)]
    return list(dict.fromkeys(paths))


def bindings(out: Path) -> None:
    """Writes the contract's Python bindings (`wit_world`, `componentize_py_types`) to `out`,
    for importing a plugin natively (unit tests); a component build generates its own."""
    command = componentize_py(["-q", "-d", str(wit_dir()), "-w", WORLD, "bindings", str(out)])
    subprocess.run(command, check=True)


def _files(root: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if d not in _SKIPPED_DIRS]
        for name in files:
            if name.endswith(suffixes):
                yield Path(directory, name)


def inputs(project_paths: Iterable[Path]) -> list[Path]:
    """Every file a component depends on that may change between builds."""
    found: list[Path] = []
    for root in project_paths:
        found.extend(_files(root, (".py",)))
        requirements = root / "requirements.txt"
        if requirements.is_file():
            found.append(requirements)
    found.extend(_files(_PACKAGE, (".py",)))
    found.extend(wit_dir().glob("*.wit"))
    return found


def is_fresh(output: Path, project_paths: Iterable[Path]) -> bool:
    """Whether `output` exists and is newer than every input."""
    try:
        built = output.stat().st_mtime
    except FileNotFoundError:
        return False
    return all(path.stat().st_mtime < built for path in inputs(project_paths))


def build(app: str, output: Path, project_paths: Sequence[Path], force: bool = False) -> bool:
    """Builds the component of the `app` module into `output`; answers whether it did (False:
    it was already up to date)."""
    if not force and is_fresh(output, project_paths):
        print(f"{output} is up to date")
        return False
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f"{output.name}.{os.getpid()}.partial")
    arguments = ["-q", "-d", str(wit_dir()), "-w", WORLD, "componentize", app]
    for path in [*map(str, project_paths), *site_packages()]:
        arguments += ["-p", path]
    arguments += ["-o", str(partial)]
    started = time.monotonic()
    try:
        subprocess.run(componentize_py(arguments), check=True)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, output)
    size = output.stat().st_size
    print(f"built {output} ({size / 1e6:.1f} MB) in {time.monotonic() - started:.1f} s")
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m canopy_plugin_sdk.build",
        description="Builds a Canopy destination plugin written in Python into a component.",
    )
    parser.add_argument("app", nargs="?", help="the plugin's module, e.g. app (for app.py)")
    parser.add_argument("output", nargs="?", type=Path, help="the component to write, e.g. dist/acme.wasm")
    parser.add_argument(
        "-p",
        "--path",
        dest="paths",
        action="append",
        type=Path,
        help="a directory holding the app and its modules (default: the current one)",
    )
    parser.add_argument("--force", action="store_true", help="build even when the component is up to date")
    parser.add_argument("--bindings", type=Path, metavar="DIR", help="write the contract's bindings to DIR instead")
    parser.add_argument("--wit", action="store_true", help="print the WIT directory instead")
    args = parser.parse_args(argv)

    if args.wit:
        print(wit_dir())
        return 0
    if args.bindings is not None:
        bindings(args.bindings)
        return 0
    if args.app is None or args.output is None:
        parser.error("give the app module and the output file (or --bindings DIR, or --wit)")
    paths = [p.resolve() for p in (args.paths or [Path.cwd()])]
    try:
        build(args.app, args.output, paths, force=args.force)
    except subprocess.CalledProcessError as error:
        print(f"componentize-py failed (exit status {error.returncode})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
