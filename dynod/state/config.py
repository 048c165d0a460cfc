"""dynod.toml: one typed Config holding every setting (README, `dynod serve`) with its default.

`Config.from_toml` and `Config.from_mapping` check every key (unknown ones, wrong types and
ranges are DynodErrors naming the key); command-line flags override through `Config.replace`,
which checks values the same way. Also where the data directory is.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
from attrs import field, frozen

from dynod.core.names import LOG_HISTORY, LOG_TAIL_BUFFER, MAX_LINE_BYTES
from dynod.core.policy import (
    BOOT_TIMEOUT,
    CYCLE_AFTER,
    CYCLE_JITTER,
    IDLE_AFTER,
    MEMORY_QUOTA_MB,
    MEMORY_SAMPLE,
    PIDS_MAX,
    PLATFORM_LADDER,
    STOP_TIMEOUT,
)
from dynod.errors import DynodError, ParseError

if sys.version_info >= (3, 11):  # noqa: UP036 - tomli stays the fallback for older Pythons
    import tomllib
else:  # pragma: no cover - tomli where tomllib is missing (Python 3.10)
    import tomli as tomllib


class _Invalid(Exception):
    """A value that does not fit its key; carries the phrase saying what was expected."""


@frozen
class Address:
    """A `HOST:PORT` to listen on. Port 0 asks the OS for a free port (tests use it)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """`127.0.0.1:8080`, `localhost:0`, `[::1]:5050`; ValueError when malformed."""
        host, sep, port = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError("an IPv6 host must be in brackets: [::1]:5050")
        if not (sep and host and port.isascii() and port.isdigit()) or int(port) > 65535:
            raise ValueError(f"not HOST:PORT: {text!r}")
        if any(c.isspace() or c in "/[]" for c in host):
            raise ValueError(f"not a host name or address: {host!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@frozen
class PortRange:
    """The inclusive range dynos' `PORT`s come from, written `20000-29999`."""

    first: int
    last: int

    @classmethod
    def parse(cls, text: str) -> PortRange:
        match = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", text, re.ASCII)
        if match is None:
            raise ValueError(f"not FIRST-LAST: {text!r}")
        low, high = int(match[1]), int(match[2])
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"ports must satisfy 1 <= first <= last <= 65535: {text!r}")
        return cls(low, high)

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


# Value checkers: each takes a raw value (from TOML, or an already typed value from a flag) and
# returns the typed value or raises _Invalid with the phrase that completes "must be …".


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _Invalid("a positive number of seconds")
    return float(value)


def _seconds_or_zero(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise _Invalid("a number of seconds >= 0")
    return float(value)


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Invalid("a whole number >= 1")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("true or false")
    return value


def _ladder(value: object) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise _Invalid("a non-empty list of seconds, such as [0, 1200, 2400]")
    try:
        return tuple(_seconds_or_zero(step) for step in value)
    except _Invalid:
        raise _Invalid("a non-empty list of seconds >= 0, such as [0, 1200, 2400]") from None


def _name(value: object) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise _Invalid("a non-empty string without spaces")
    return value


def _domain(value: object) -> str:
    if isinstance(value, str):
        labels = value.lower().split(".")
        if all(label.replace("-", "").isalnum() and label.isascii() for label in labels):
            return value.lower()
    raise _Invalid('a domain name such as "localhost" or "dynod.test"')


def _address(value: object) -> Address:
    if isinstance(value, Address):
        return value
    try:
        if isinstance(value, str):
            return Address.parse(value)
    except ValueError:
        pass
    raise _Invalid('"HOST:PORT", such as "127.0.0.1:8080"')


def _port_range(value: object) -> PortRange:
    if isinstance(value, PortRange):
        return value
    try:
        if isinstance(value, str):
            return PortRange.parse(value)
    except ValueError:
        pass
    raise _Invalid('"FIRST-LAST" with 1 <= FIRST <= LAST <= 65535, such as "20000-29999"')


UID_MAX = 4294967294  # (uid_t)-1 means "no change" to setuid


def _uid_range(value: object) -> tuple[int, int] | None:
    """`[dynos] uid_range`: the uids apps' dynos get one each of, "FIRST-LAST"; "" to run every
    app's dynos as `[dynos] user` alone (apps can then read each other's config)."""
    if value is None or (isinstance(value, tuple) and len(value) == 2):
        return value
    if value == "":
        return None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d{1,10})\s*-\s*(\d{1,10})\s*", value, re.ASCII)
        if match is not None and 1000 <= int(match[1]) <= int(match[2]) <= UID_MAX:
            return int(match[1]), int(match[2])
    raise _Invalid(
        f'"FIRST-LAST" with 1000 <= FIRST <= LAST <= {UID_MAX}, such as '
        '"1900000000-1900065535", or "" for one user for every app'
    )


@frozen
class MemoryQuota:
    """`[dynos] memory_quota_mb`: MB for every dyno (`memory_quota_mb = 1024`), or per process
    type (`[dynos.memory_quota_mb]` then `web = 256`), the types not named keeping 512."""

    default: float = MEMORY_QUOTA_MB
    types: tuple[tuple[str, float], ...] = ()

    def by_type(self) -> dict[str, float]:
        return dict(self.types)


def _megabytes(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _Invalid("a positive number of MB")
    return float(value)


def _memory_quota(value: object) -> MemoryQuota | None:
    if value is None or isinstance(value, MemoryQuota):
        return value
    try:
        if isinstance(value, Mapping):
            return MemoryQuota(types=tuple((str(k), _megabytes(v)) for k, v in value.items()))
        return MemoryQuota(_megabytes(value))
    except _Invalid:
        raise _Invalid(
            "a positive number of MB (512), or a table of MB by process type (web = 256)"
        ) from None


def _setting(default: Any, check: Callable[[object], Any]) -> Any:
    """An attrs field whose default is `default` and whose dynod.toml values go through `check`."""
    return field(default=default, metadata={"check": check})


@frozen
class ApiConfig:
    listen: Address = _setting(Address("127.0.0.1", 5050), _address)


@frozen
class RouterSettings:
    """The router's knobs as dynod.toml spells them (router/ turns them into its own config)."""

    listen: Address = _setting(Address("127.0.0.1", 8080), _address)
    domain: str = _setting("localhost", _domain)
    connect_timeout: float = _setting(5.0, _seconds)
    request_timeout: float = _setting(30.0, _seconds)
    idle_timeout: float = _setting(55.0, _seconds)
    boot_wait: float = _setting(75.0, _seconds)
    header_timeout: float = _setting(10.0, _seconds)
    # The router's own default (router/config.py), which state may not import;
    # tests/dynod/state/test_config.py checks that the two agree.
    max_connections: int = _setting(10000, _count)


@frozen
class DynosConfig:
    boot_timeout: float = _setting(BOOT_TIMEOUT, _seconds)
    stop_timeout: float = _setting(STOP_TIMEOUT, _seconds)
    restart_ladder: tuple[float, ...] = _setting(PLATFORM_LADDER, _ladder)
    cycle_after: float = _setting(CYCLE_AFTER, _seconds)
    cycle_jitter: float = _setting(CYCLE_JITTER, _seconds_or_zero)
    user: str = _setting("nobody", _name)
    # When dynod is root, each app's dynos run as a uid of their own from this range, in the
    # group of `user`: no app's dyno can read another's config (/proc/PID/environ) or files.
    uid_range: tuple[int, int] | None = _setting((1900000000, 1900065535), _uid_range)
    port_range: PortRange = _setting(PortRange(20000, 29999), _port_range)
    # Processes and threads each dyno may have, where dynos run in cgroups (README).
    pids_max: int = _setting(PIDS_MAX, _count)
    # When dynod is root, each dyno gets a mount namespace with its own /tmp and /dev/shm.
    private_tmp: bool = _setting(True, _flag)
    # Each dyno's memory is read this often; above its quota R14, above twice R15 (README).
    memory_sample: float = _setting(MEMORY_SAMPLE, _seconds)
    # Not set (None): 512 MB each; `dynod start` then only warns (R14), never kills (R15).
    memory_quota_mb: MemoryQuota | None = _setting(None, _memory_quota)
    # An app of eco (or free) dynos sleeps after this long without a request (README).
    idle_after: float = _setting(IDLE_AFTER, _seconds)


@frozen
class LogplexConfig:
    history: int = _setting(LOG_HISTORY, _count)
    tail_buffer: int = _setting(LOG_TAIL_BUFFER, _count)
    max_line_bytes: int = _setting(MAX_LINE_BYTES, _count)


@frozen
class BuildConfig:
    slug_warn_mb: int = _setting(300, _count)
    slug_max_mb: int = _setting(500, _count)
    # A build's source_blob.url may name a path on this machine (read as the app's user);
    # false: only uploads and http(s) URLs (docs/platform.md, "Builds").
    local_sources: bool = _setting(True, _flag)


_SECTIONS = ("api", "router", "dynos", "logplex", "build")


@frozen
class Config:
    """Every setting of `dynod serve`; `Config()` is all defaults."""

    api: ApiConfig = field(factory=ApiConfig)
    router: RouterSettings = field(factory=RouterSettings)
    dynos: DynosConfig = field(factory=DynosConfig)
    logplex: LogplexConfig = field(factory=LogplexConfig)
    build: BuildConfig = field(factory=BuildConfig)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Config:
        """Read a dynod.toml; every key is optional, any mistake is a one-line DynodError."""
        source = os.fspath(path)
        try:
            data = tomllib.loads(Path(source).read_text(encoding="utf-8"))
        except OSError as err:
            raise DynodError(f"{source}: cannot read the config file ({err.strerror})") from None
        except UnicodeDecodeError:
            raise ParseError("not UTF-8 text; save it as UTF-8", source=source) from None
        except tomllib.TOMLDecodeError as err:
            raise ParseError(f"invalid TOML: {err}", source=source) from None
        return cls.from_mapping(data, source=source)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, source: str = "dynod.toml") -> Config:
        """Build a Config from parsed TOML (sections of keys); `source` prefixes errors."""
        for name, section in data.items():
            if name not in _SECTIONS:
                is_table = isinstance(section, Mapping)
                what = f"section {_bracket(_plain(name))}" if is_table else f"key {_plain(name)}"
                raise DynodError(
                    f"{source}: unknown {what}:"
                    f"{_suggest(name, _SECTIONS, _bracket)}"
                    f" the sections are {', '.join(map(_bracket, _SECTIONS))}"
                )
            if not isinstance(section, Mapping):
                raise DynodError(f"{source}: {_bracket(name)} must be a table of keys, not a value")
        return cls()._merged(data, source)

    def replace(self, *, source: str = "command line", **sections: Mapping[str, object]) -> Config:
        """Override some keys, checked as dynod.toml's are: `replace(api={"listen": "[::1]:0"})`.
        Values may be raw (strings, numbers) or already typed (an Address)."""
        unknown = [name for name in sections if name not in _SECTIONS]
        if unknown:
            raise DynodError(f"{source}: unknown section {_bracket(unknown[0])}")
        return self._merged(sections, source)

    def _merged(self, data: Mapping[str, object], source: str) -> Config:
        changes: dict[str, Any] = {}
        for name, values in data.items():
            assert isinstance(values, Mapping)
            changes[name] = _merge_section(getattr(self, name), name, values, source)
        merged = attrs.evolve(self, **changes)
        if merged.build.slug_warn_mb > merged.build.slug_max_mb:
            raise DynodError(
                f"{source}: [build] slug_warn_mb ({merged.build.slug_warn_mb}) must not exceed"
                f" slug_max_mb ({merged.build.slug_max_mb})"
            )
        return merged


def _merge_section(current: Any, name: str, values: Mapping[str, object], source: str) -> Any:
    fields = {f.name: f for f in attrs.fields(type(current))}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        spec = fields.get(key)
        if spec is None:
            raise DynodError(
                f"{source}: unknown key [{name}] {_plain(key)}:{_suggest(key, fields, str)}"
                f" the keys of [{name}] are {', '.join(fields)}"
            )
        try:
            changes[key] = spec.metadata["check"](value)
        except _Invalid as err:
            message = f"[{name}] {key} must be {err}, not {_show(value)}"
            raise DynodError(f"{source}: {message}") from None
    return attrs.evolve(current, **changes)


def _plain(key: str) -> str:
    """A key as the user wrote it, quoted when it holds what would break a one-line message."""
    return key if key.isprintable() and " " not in key else json.dumps(key)


def _bracket(name: str) -> str:
    return f"[{name}]"


def _suggest(word: str, choices: Iterable[str], show: Callable[[str], str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" did you mean {show(close[0])}?" if close else ""


def _show(value: object) -> str:
    return json.dumps(value, default=str)


def resolve_data_dir(
    override: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """Where dynod keeps its state: `--data` if given, else `DYNOD_DATA` (`~` expanded), else
    `$XDG_DATA_HOME/dynod` (ignored when relative, as the XDG spec says), else
    `~/.local/share/dynod`. Always an absolute path. shell/api.py's `data_dir` is the same rule
    (the client may not import dynod); tests/test_data_dir.py holds the two to one table."""
    env = os.environ if environ is None else environ
    home = env.get("HOME") or str(Path.home())
    if override is not None and os.fspath(override):
        chosen = _expand_home(os.fspath(override), home)
    elif env.get("DYNOD_DATA"):
        chosen = _expand_home(env["DYNOD_DATA"], home)
    elif env.get("XDG_DATA_HOME") and Path(env["XDG_DATA_HOME"]).is_absolute():
        chosen = Path(env["XDG_DATA_HOME"]) / "dynod"
    else:
        chosen = Path(home) / ".local" / "share" / "dynod"
    return chosen.absolute()


def _expand_home(text: str, home: str) -> Path:
    """`~` and `~/…` against the given HOME; `~user/…` as the system knows that user."""
    if text == "~" or text.startswith("~/"):
        return Path(home, text[2:])
    return Path(text).expanduser()
