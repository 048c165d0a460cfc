"""RouterConfig: Heroku's defaults, a `[router]` table, refusals that name the key."""

from __future__ import annotations

import pytest

from router.config import ConfigError, RouterConfig, parse_address


def test_defaults_are_herokus() -> None:
    config = RouterConfig()
    assert (config.connect_timeout, config.request_timeout, config.idle_timeout) == (5, 30, 55)
    assert (config.boot_wait, config.header_timeout, config.quarantine) == (75, 10, 5)
    assert (config.max_line_bytes, config.max_headers) == (8192, 1000)
    assert config.listen_address == ("127.0.0.1", 8080) and config.domain == "localhost"


def test_from_mapping_takes_ints_for_durations() -> None:
    config = RouterConfig.from_mapping(
        {"listen": "0.0.0.0:80", "request_timeout": 2, "max_connections": 9}
    )
    assert config.request_timeout == 2.0 and isinstance(config.request_timeout, float)
    assert config.max_connections == 9 and config.listen_address == ("0.0.0.0", 80)


@pytest.mark.parametrize(
    "table, words",
    [
        ({"request_timout": 3}, "request_timout"),
        ({"max_connections": 1.5}, "max_connections"),
        ({"boot_wait": "75"}, "boot_wait"),
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"listen": "localhost"}, "HOST:PORT"),
    ],
)
def test_bad_settings_name_the_key(table: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        RouterConfig.from_mapping(table)


def test_addresses() -> None:
    assert parse_address("[::1]:8080") == ("::1", 8080)
    assert parse_address(":8080") == ("0.0.0.0", 8080)
    for bad in ("1.2.3.4", "h:99999", "[zz]:1"):
        with pytest.raises(ConfigError):
            parse_address(bad)
