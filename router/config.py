"""The router's settings: one typed, frozen record with Heroku's numbers as defaults.

`RouterConfig.from_mapping` takes the `[router]` table of dynod.toml (or any dict) and refuses
unknown keys and wrong types with a message naming the key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import attrs
from attrs import frozen

Address = tuple[str, int]


class ConfigError(ValueError):
    """A router setting that cannot be used; str(err) names the key and what is wrong."""


def parse_address(text: str) -> Address:
    """`HOST:PORT`, `[v6]:PORT` or `:PORT` (all interfaces) → (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:8080)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{text!r} does not hold an IPv6 address in brackets") from None
    return (host or "0.0.0.0", int(port_text))


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ConfigError(f"router {attribute.name} must be positive, not {value!r}")


def _listen(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    parse_address(value)


@frozen
class RouterConfig:
    """Durations are seconds. Marked *(ours)* where Heroku publishes no number."""

    listen: str = attrs.field(default="127.0.0.1:8080", validator=_listen)
    # `<app>.<domain>[:port]` names app `<app>`; any other Host is passed to the backend whole.
    domain: str = "localhost"
    connect_timeout: float = attrs.field(default=5.0, validator=_positive)
    request_timeout: float = attrs.field(default=30.0, validator=_positive)  # H12
    idle_timeout: float = attrs.field(default=55.0, validator=_positive)  # H15 / H28
    boot_wait: float = attrs.field(default=75.0, validator=_positive)  # H20
    header_timeout: float = attrs.field(default=10.0, validator=_positive)  # slowloris
    max_connections: int = attrs.field(default=10000, validator=_positive)  # (ours)
    max_line_bytes: int = attrs.field(default=8192, validator=_positive)
    max_headers: int = attrs.field(default=1000, validator=_positive)
    max_head_bytes: int = attrs.field(default=65536, validator=_positive)  # (ours)
    quarantine: float = attrs.field(default=5.0, validator=_positive)
    pool_max_idle: int = attrs.field(default=256, validator=_positive)  # per dyno (ours)
    pool_idle_timeout: float = attrs.field(default=30.0, validator=_positive)  # (ours)

    @property
    def listen_address(self) -> Address:
        return parse_address(self.listen)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> RouterConfig:
        """Build from a `[router]` table; numbers may be int or float where floats are due."""
        fields = attrs.fields_dict(cls)
        values: dict[str, Any] = {}
        for key, value in table.items():
            field = fields.get(key)
            if field is None:
                raise ConfigError(f"unknown router setting {key!r}")
            want = str(field.type)  # annotations are strings here
            ok = (
                isinstance(value, str)
                if want == "str"
                else (
                    (isinstance(value, int) and not isinstance(value, bool))
                    if want == "int"
                    else (isinstance(value, (int, float)) and not isinstance(value, bool))
                )
            )
            if not ok:
                raise ConfigError(f"router {key} must be a {want}, not {value!r}")
            values[key] = float(value) if want == "float" else value
        return cls(**values)
