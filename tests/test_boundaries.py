"""The import boundaries of the house, read from the `ast` of every module (docs/architecture.md).

- `dynod.core` is pure: no trio, h11 or other I/O modules, and nothing of dynod but itself and
  `dynod.errors`; so is `dynod.export` (rendering), which sees only `dynod.core` below it.
- dynod's rooms are layered; a room imports only rooms below it (or itself):
  core < export < state < logs < proc < slugs < builds < platform < api < the entry points
  (`dynod.cli`, `dynod.local`, `dynod.serve`). `dynod.errors` is a leaf every room may raise.
- `router` and `shell` import nothing of `dynod`; `shell` nothing of `router` either (it speaks
  HTTP), and `router` nothing of `shell`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [
    "core",
    "export",
    "state",
    "logs",
    "proc",
    "slugs",
    "builds",
    "addons",
    "platform",
    "api",
]
PURE = ("core", "export")  # rooms of pure functions: no trio, no I/O
ENTRY = "entry"  # dynod/cli.py, local.py, serve.py, __init__.py
IO_MODULES = {
    "trio", "h11", "asyncio", "subprocess", "socket", "shutil", "tempfile", "threading",
    "fcntl", "select", "selectors", "signal", "urllib", "http", "ctypes",
}  # fmt: skip


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module a file imports, at any depth (functions included), as absolute names."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if (
                module.count(".") <= 0 or not node.module
            ):  # `from dynod import x`: x may be a module
                for alias in node.names:
                    yield node.lineno, f"{module}.{alias.name}"
            else:
                yield node.lineno, module


def room_of(module: str) -> str:
    """`dynod.proc.dyno` → `proc`; `dynod.errors` → `errors`; entry points → `entry`."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__version__":
        return ENTRY
    if parts[1] in LAYERS or parts[1] == "errors":
        return parts[1]
    return ENTRY


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def violations(package: str) -> list[str]:
    """Every broken rule in `package` (`dynod`, `router` or `shell`), one line each."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if "buildpacks" in path.parts:
            continue
        here = module_name(path)
        for line, target in imports(path):
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            top = target.split(".")[0]
            if package in ("router", "shell") and top in {"dynod", "router", "shell"} - {package}:
                found.append(f"{where}: {package} imports nothing of {top}")
            if package != "dynod":
                continue
            mine = room_of(here)
            if mine in PURE and top in IO_MODULES:
                found.append(f"{where}: dynod.{mine} is pure (no trio, no I/O)")
            if top in ("router", "shell") and mine not in ("platform", "api", ENTRY):
                found.append(f"{where}: only the platform, the API and entry points see {top}")
            if top != "dynod":
                continue
            theirs = room_of(target)
            if theirs == "errors" or theirs == mine:
                continue
            if mine == "errors":
                found.append(f"{where}: dynod.errors is a leaf")
            elif theirs == ENTRY or (mine != ENTRY and LAYERS.index(theirs) > LAYERS.index(mine)):
                found.append(f"{where}: {mine} is below {theirs}, so it must not import it")
    return found


@pytest.mark.parametrize("package", ["dynod", "router", "shell"])
def test_imports_keep_to_the_layers(package: str) -> None:
    assert violations(package) == []


def test_the_check_catches_each_kind_of_break(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each rule, broken once in a scratch tree, is reported."""
    tree = tmp_path / "dynod"
    for room in ("core", "proc", "state"):
        (tree / room).mkdir(parents=True)
    (tree / "core" / "bad.py").write_text("import trio\nfrom dynod.proc import dyno\n")
    (tree / "state" / "bad.py").write_text("from dynod.platform.root import Platform\n")
    (tree / "proc" / "fine.py").write_text(
        "from dynod.core import policy\nfrom dynod import errors\n"
    )
    (tmp_path / "shell").mkdir()
    (tmp_path / "shell" / "bad.py").write_text("from dynod.state.config import Config\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    said = violations("dynod") + violations("shell")
    assert [line.split(": ", 1)[1] for line in said] == [
        "dynod.core is pure (no trio, no I/O)",
        "core is below proc, so it must not import it",
        "state is below platform, so it must not import it",
        "shell imports nothing of dynod",
    ]
