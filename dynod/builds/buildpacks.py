"""Buildpacks as an app or a user names them: dynod's built-ins (the dynod/buildpacks package
data), local directories, the app's `.buildpacks` file, and the `default_process_types` that a
buildpack's bin/release prints."""

from __future__ import annotations

import json
import re
from pathlib import Path

from attrs import frozen

from dynod.errors import DynodError

BUILTIN_BUILDPACKS = ("python", "nodejs", "procfile")  # also the order of default detection
BUILDPACKS_DIR = Path(__file__).resolve().parent.parent / "buildpacks"


@frozen
class Buildpack:
    """A buildpack as named by the app or user: a built-in name or a local directory."""

    name: str  # "python", or the directory's absolute path
    path: Path

    @property
    def label(self) -> str:
        """The short name used in output and error messages."""
        return self.path.name


def resolve_buildpack(name: str, *, base: Path | None = None) -> Buildpack:
    """A built-in (`python`, or Heroku's `heroku/python`) or a local buildpack directory;
    a relative path is taken from `base` when given."""
    builtin = name.removeprefix("heroku/")
    if builtin in BUILTIN_BUILDPACKS:
        return Buildpack(builtin, BUILDPACKS_DIR / builtin)
    if "://" in name or name.startswith("git@"):
        raise DynodError(
            f"buildpack {name}: dynod runs local buildpacks only; clone it and name its directory"
        )
    path = Path(name).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    path = path.resolve()
    if not ((path / "bin" / "detect").is_file() and (path / "bin" / "compile").is_file()):
        raise DynodError(
            f"buildpack {name} not found: name a built-in ({', '.join(BUILTIN_BUILDPACKS)})"
            " or a directory holding bin/detect and bin/compile"
        )
    return Buildpack(str(path), path)


def app_buildpacks(build_dir: Path) -> list[Buildpack]:
    """The buildpacks the app names in `.buildpacks` (one per line, `#` comments), if any."""
    listing = build_dir / ".buildpacks"
    if not listing.is_file():
        return []
    lines = listing.read_text(encoding="utf-8", errors="replace").splitlines()
    names = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return [resolve_buildpack(name, base=build_dir) for name in names]


def parse_release_yaml(text: str) -> dict[str, str]:
    """`default_process_types` from bin/release's YAML: the small subset buildpacks print
    (a block mapping of `type: command`, plain or quoted scalars). ValueError otherwise."""
    types: dict[str, str] = {}
    inside = False
    indent: int | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip()
        body = line.lstrip()
        if not body or body.startswith("#") or body in ("---", "..."):
            continue
        depth = len(line) - len(body)
        key, colon, value = body.partition(":")
        if depth == 0:
            inside = key.strip() == "default_process_types"
            if inside and _scalar(value, number) not in ("", "{}", "~", "null"):
                raise ValueError(f"line {number}: write default_process_types as a block mapping")
            indent = None
            continue
        if not inside:
            continue  # the nested content of other keys (addons, config_vars)
        indent = depth if indent is None else indent
        if depth != indent or not colon:
            raise ValueError(f"line {number}: expected `  type: command`")
        types[_scalar(key, number)] = _scalar(value, number)
    return types


def _scalar(text: str, number: int) -> str:
    text = text.strip()
    if text[:1] == "'" and text[-1:] == "'" and len(text) > 1:
        return text[1:-1].replace("''", "'")
    if text[:1] == '"' and text[-1:] == '"' and len(text) > 1:
        try:
            value = json.loads(text)  # JSON's escapes are the ones buildpacks use
        except json.JSONDecodeError:
            raise ValueError(f"line {number}: unsupported escape in {text}") from None
        return str(value)
    if text[:1] in ("|", ">", "&", "*", "!", "[", "'", '"') or text.startswith("{ "):
        raise ValueError(f"line {number}: unsupported YAML {text[:20]!r}")
    return re.split(r"\s#", text, maxsplit=1)[0].rstrip()  # a plain scalar ends at " #"
