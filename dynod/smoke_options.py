"""`dynod smoke`'s options: the paths to request and what each must answer, the formation, the
boot timeout, config vars, the report and cache files, checked before anything runs (a usage
error, exit 2, names what to fix); and the app's name, from its directory."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from dynod.core.config_vars import apply_config_changes
from dynod.core.formation import parse_formation
from dynod.errors import DynodError, ParseError, UsageError
from dynod.state.apps import APP_NAME


@attrs.frozen
class PathCheck:
    path: str
    expect: int = 200

    @property
    def name(self) -> str:
        return f"GET {self.path} -> {self.expect}"


@attrs.frozen
class SmokeOptions:
    directory: Path
    paths: tuple[PathCheck, ...] = ()
    formation: str | None = None  # -m; default: one dyno of each process type
    timeout: float = 60.0  # the web dynos' boot timeout (R10)
    env: Mapping[str, str] = attrs.field(factory=dict)
    junit: Path | None = None
    buildpacks: tuple[str, ...] = ()
    cache: Path | None = None  # a build cache kept between runs (CI caches it)


def options(
    directory: str,
    paths: Sequence[tuple[str, int | None]],
    formation: str | None,
    timeout: float,
    env: Sequence[str],
    junit_file: Path | None,
    buildpacks: Sequence[str],
    cache: Path | None,
) -> SmokeOptions:
    """The command line's values, checked: anything wrong is a usage error (exit 2)."""
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"{directory} is not a directory: give the app's directory (default .)")
    root = root.resolve()
    checks = []
    for path, expect in paths:
        if not path.startswith("/") or not path.isascii() or not path.isprintable() or " " in path:
            raise UsageError(f"--path {path!r}: give a path starting with /, e.g. --path /health")
        if expect is not None and not 100 <= expect <= 599:
            raise UsageError(f"--expect {expect}: give an HTTP status from 100 to 599")
        checks.append(PathCheck(path, 200 if expect is None else expect))
    if not (math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"--timeout {timeout:g}: give a number of seconds above 0, e.g. 60")
    if formation is not None:
        _check_formation(formation)
    config_vars = _config_vars(env)
    if junit_file is not None and not junit_file.resolve().parent.is_dir():
        raise UsageError(f"--junit {junit_file}: its directory does not exist")
    if cache is not None:
        cache = cache.resolve()
        if cache.exists() and not cache.is_dir():
            raise UsageError(f"--cache {cache} is not a directory")
        if cache.is_relative_to(root):
            raise UsageError(f"--cache {cache} is inside the app: give a directory outside it")
    # A buildpack directory is named from where the command runs; a built-in by its name.
    named = tuple(str(Path(b).resolve()) if Path(b).is_dir() else b for b in buildpacks)
    return SmokeOptions(
        root, tuple(checks), formation, timeout, config_vars, junit_file, named, cache
    )


def _check_formation(text: str) -> None:
    named = [entry.partition("=")[0] for entry in text.replace(",", " ").split()]
    try:
        parse_formation(text, named)  # the form only: the types are known after the build
    except ParseError as err:
        raise UsageError(f"-m {text}: {err}") from None


def _config_vars(pairs: Sequence[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--env {pair!r}: write KEY=VALUE, e.g. --env DEBUG=1")
        values[key] = value
    try:
        if values:
            apply_config_changes({}, values)
    except DynodError as err:
        raise UsageError(f"--env: {err}") from None
    return values


def app_name(directory: Path) -> str:
    """The app is named after its directory when that makes a valid app name."""
    name = "".join(c if c.isalnum() else "-" for c in directory.name.lower()).strip("-")
    return name if APP_NAME.fullmatch(name) else "smoke"
