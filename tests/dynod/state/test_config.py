"""dynod.toml: defaults, every section, and the one-line errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynod.errors import DynodError
from dynod.state.config import Address, Config, PortRange
from router.config import RouterConfig


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dynod.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(DynodError) as caught:
        Config.from_toml(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "dynod.toml") + ": ")
    return message


def test_defaults_are_the_documented_ones() -> None:
    config = Config()
    assert str(config.api.listen) == "127.0.0.1:5050"
    router = config.router
    assert (str(router.listen), router.domain) == ("127.0.0.1:8080", "localhost")
    assert (router.connect_timeout, router.request_timeout, router.idle_timeout) == (5, 30, 55)
    assert (router.boot_wait, router.header_timeout, router.max_connections) == (75, 10, 10000)
    dynos = config.dynos
    assert (dynos.boot_timeout, dynos.stop_timeout) == (60, 30)
    assert dynos.restart_ladder == (0, 1200, 2400, 3600, 10800, 19200)
    assert (dynos.cycle_after, dynos.cycle_jitter) == (86400, 12960)
    assert (dynos.user, dynos.port_range) == ("nobody", PortRange(20000, 29999))
    assert dynos.pids_max == 256
    assert (config.logplex.history, config.logplex.tail_buffer) == (1500, 1024)
    assert config.logplex.max_line_bytes == 10000
    assert (config.build.slug_warn_mb, config.build.slug_max_mb) == (300, 500)
    assert config.build.local_sources is True


def test_the_routers_connection_cap_is_the_routers_default() -> None:
    """dynod.toml's `[router] max_connections` default is router/config.py's (state may not
    import the router, so the number is written twice and checked here)."""
    assert Config().router.max_connections == RouterConfig().max_connections


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    assert Config.from_toml(write(tmp_path, "")) == Config()


def test_every_section_and_key(tmp_path: Path) -> None:
    config = Config.from_toml(
        write(
            tmp_path,
            """
            [api]
            listen = "0.0.0.0:6000"
            [router]
            listen = "[::1]:0"
            domain = "Dynod.Test"
            connect_timeout = 1.5
            request_timeout = 10
            idle_timeout = 20
            boot_wait = 3
            header_timeout = 2
            max_connections = 50
            [dynos]
            boot_timeout = 5
            stop_timeout = 0.5
            restart_ladder = [0, 1, 2.5]
            cycle_after = 600
            cycle_jitter = 0
            user = "dyno"
            port_range = "30000-30010"
            [logplex]
            history = 10
            tail_buffer = 5
            max_line_bytes = 100
            [build]
            slug_warn_mb = 1
            slug_max_mb = 2
            local_sources = false
            """,
        )
    )
    assert config.api.listen == Address("0.0.0.0", 6000)
    assert config.router.listen == Address("::1", 0)
    assert str(config.router.listen) == "[::1]:0"
    assert config.router.domain == "dynod.test"
    assert config.router.connect_timeout == 1.5
    assert config.router.max_connections == 50
    assert config.dynos.restart_ladder == (0.0, 1.0, 2.5)
    assert config.dynos.stop_timeout == 0.5 and config.dynos.cycle_jitter == 0
    assert config.dynos.user == "dyno"
    assert config.dynos.port_range == PortRange(30000, 30010)
    assert 30005 in config.dynos.port_range and 30011 not in config.dynos.port_range
    assert len(config.dynos.port_range) == 11
    assert (config.logplex.history, config.logplex.tail_buffer) == (10, 5)
    assert config.logplex.max_line_bytes == 100
    assert (config.build.slug_warn_mb, config.build.slug_max_mb) == (1, 2)
    assert config.build.local_sources is False


def test_keys_left_out_keep_their_defaults(tmp_path: Path) -> None:
    config = Config.from_toml(write(tmp_path, "[router]\nboot_wait = 5\n"))
    assert config.router.boot_wait == 5
    assert config.router.listen == Config().router.listen
    assert config.dynos == Config().dynos


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[router]\nlistne = "127.0.0.1:1"\n')
    assert ": unknown key [router] listne: did you mean listen?" in message
    assert "connect_timeout" in message  # the keys it could have been


def test_unknown_section_is_named(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[routr]\nlisten = 1\n")
    assert "unknown section [routr]: did you mean [router]?" in message


def test_top_level_key_is_unknown(tmp_path: Path) -> None:
    message = error_of(tmp_path, 'data_dir = "/tmp"\n')
    assert "unknown key data_dir: the sections are [api]" in message


def test_section_must_be_a_table(tmp_path: Path) -> None:
    assert "[api] must be a table" in error_of(tmp_path, 'api = "127.0.0.1:1"\n')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[router]\nconnect_timeout = "5s"',
            '[router] connect_timeout must be a positive number of seconds, not "5s"',
        ),
        ("[router]\nrequest_timeout = 0", "[router] request_timeout must be a positive number"),
        (
            "[router]\nboot_wait = true",
            "[router] boot_wait must be a positive number of seconds, not true",
        ),
        (
            "[router]\nmax_connections = 1.5",
            "[router] max_connections must be a whole number >= 1, not 1.5",
        ),
        ('[router]\ndomain = "bad domain"', "[router] domain must be a domain name"),
        ('[router]\ndomain = "a..b"', "[router] domain must be a domain name"),
        ("[api]\nlisten = 5050", '[api] listen must be "HOST:PORT"'),
        ('[api]\nlisten = "localhost"', '[api] listen must be "HOST:PORT"'),
        ('[api]\nlisten = "localhost:99999"', '[api] listen must be "HOST:PORT"'),
        ('[api]\nlisten = "::1:80"', '[api] listen must be "HOST:PORT"'),
        ('[api]\nlisten = ":80"', '[api] listen must be "HOST:PORT"'),
        ("[dynos]\nrestart_ladder = []", "[dynos] restart_ladder must be a non-empty list"),
        (
            "[dynos]\nrestart_ladder = [0, -1]",
            "[dynos] restart_ladder must be a non-empty list of seconds >= 0",
        ),
        (
            "[dynos]\ncycle_jitter = -1",
            "[dynos] cycle_jitter must be a number of seconds >= 0, not -1",
        ),
        ('[dynos]\nuser = ""', "[dynos] user must be a non-empty string"),
        (
            '[dynos]\nuid_range = "5-10"',
            '[dynos] uid_range must be "FIRST-LAST" with 1000 <= FIRST',
        ),
        ('[dynos]\nuid_range = "3000-2000"', '[dynos] uid_range must be "FIRST-LAST"'),
        ("[dynos]\nuid_range = [2000, 3000]", '[dynos] uid_range must be "FIRST-LAST"'),
        ("[logplex]\nhistory = -5", "[logplex] history must be a whole number >= 1, not -5"),
        ('[build]\nlocal_sources = "no"', '[build] local_sources must be true or false, not "no"'),
        (
            "[build]\nslug_max_mb = 100",
            "[build] slug_warn_mb (300) must not exceed slug_max_mb (100)",
        ),
    ],
)
def test_wrong_types_and_ranges_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


@pytest.mark.parametrize(
    "port_range", ["29999-20000", "0-10", "20000-70000", "20000", "a-b", "20000:29999", 20000]
)
def test_bad_port_range(tmp_path: Path, port_range: object) -> None:
    value = f'"{port_range}"' if isinstance(port_range, str) else str(port_range)
    message = error_of(tmp_path, f"[dynos]\nport_range = {value}\n")
    assert '[dynos] port_range must be "FIRST-LAST"' in message


def test_pids_max_is_a_whole_number(tmp_path: Path) -> None:
    assert Config.from_mapping({"dynos": {"pids_max": 512}}).dynos.pids_max == 512
    assert "[dynos] pids_max must be a whole number >= 1" in error_of(
        tmp_path, "[dynos]\npids_max = 0\n"
    )


def test_toml_syntax_error_is_one_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[router]\nlisten = \n")
    assert "invalid TOML" in message and "line 2" in message


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(DynodError, match="cannot read the config file"):
        Config.from_toml(tmp_path / "nope.toml")
    bad = tmp_path / "dynod.toml"
    bad.write_bytes(b'[dynos]\nuser = "\xff"\n')
    with pytest.raises(DynodError, match="not UTF-8"):
        Config.from_toml(bad)


def test_replace_overrides_and_checks_like_the_file() -> None:
    base = Config.from_mapping({"router": {"boot_wait": 5}})
    config = base.replace(api={"listen": "127.0.0.1:0"}, router={"listen": Address("::", 0)})
    assert config.api.listen == Address("127.0.0.1", 0)
    assert config.router.listen == Address("::", 0)
    assert config.router.boot_wait == 5  # untouched keys survive
    assert base.api.listen == Address("127.0.0.1", 5050)  # frozen: the original is unchanged
    with pytest.raises(DynodError, match=r'^command line: \[router\] listen must be "HOST:PORT"'):
        base.replace(router={"listen": "nonsense"})
    with pytest.raises(DynodError, match=r"^--api: unknown key \[api\] port"):
        base.replace(source="--api", api={"port": 1})
    with pytest.raises(DynodError, match=r"unknown section \[routr\]"):
        base.replace(routr={"listen": "x:1"})


def test_address_parse() -> None:
    assert Address.parse("localhost:0") == Address("localhost", 0)
    assert Address.parse("[fe80::1]:8080") == Address("fe80::1", 8080)
    assert str(Address("fe80::1", 8080)) == "[fe80::1]:8080"
    for bad in ["", "host:", "host:port", "[::1]", "a b:1", "host:٥٠"]:
        with pytest.raises(ValueError):
            Address.parse(bad)


def test_uid_range_or_one_user_for_every_app(tmp_path: Path) -> None:
    assert Config().dynos.uid_range == (1900000000, 1900065535)
    config = Config.from_toml(write(tmp_path, '[dynos]\nuid_range = "2000-2009"\n'))
    assert config.dynos.uid_range == (2000, 2009)
    assert Config.from_toml(write(tmp_path, '[dynos]\nuid_range = ""\n')).dynos.uid_range is None


def test_private_tmp_is_true_or_false(tmp_path: Path) -> None:
    assert Config().dynos.private_tmp is True
    assert Config.from_mapping({"dynos": {"private_tmp": False}}).dynos.private_tmp is False
    assert "[dynos] private_tmp must be true or false" in error_of(
        tmp_path, "[dynos]\nprivate_tmp = 1\n"
    )
