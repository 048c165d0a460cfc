"""dynod/export's rendering alone: the plan's ports, the .env that foreman, honcho and dynod read
alike, add-on config vars, and names other engines refuse (README, "dynod export")."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from dynod.core.dotenv import parse_dotenv
from dynod.errors import DynodError
from dynod.export.kubernetes import render_kubernetes
from dynod.export.plan import PROFILE_PRELUDE, ExportPlan, addon_vars
from dynod.export.procfile import render_portable_dotenv, render_procfile_export
from dynod.export.systemd import render_environment_file, render_systemd
from dynod.proc.dyno import PROFILE_PRELUDE as DYNO_PRELUDE

# Values each reader must get back exactly (foreman, honcho and dynod start are run on them in
# test_export.py; here dynod's own parser).
TRICKY = {
    "PLAIN": "postgres://u:p@host:5432/db?sslmode=require",
    "SPACED": "hello world",
    "PADDED": "  both ends  ",
    "QUOTES": 'say "hi" $HOME `id`',
    "APOSTROPHE": "it's",
    "LINES": "line one\nline 'two'",
    "HASH": "a #not a comment",
    "BACKSLASH": "C:\\dir\\file",
    "TAB": "a\tb",
    "UNICODE": "héllo ✓",
    "EMPTY": "",
    "EQUALS": "a=b==",
}


def plan(**changes: Any) -> ExportPlan:
    values: dict[str, Any] = {
        "app": "shop",
        "process_types": {"web": "python3 web.py", "worker": "python3 worker.py"},
        "formation": {"web": 2, "worker": 1},
        "config_vars": {"GREETING": "hi"},
        "slug_checksum": "SHA256:" + "ab" * 32,
        "path": "/usr/local/bin:/usr/bin:/bin",
        "release_timeout": 3600.0,
    }
    values.update(changes)
    return ExportPlan(**values)


def test_the_profile_prelude_is_the_dynos_on_one_line() -> None:
    assert PROFILE_PRELUDE == DYNO_PRELUDE.replace("\n", "; ")


def test_ports_are_foremans() -> None:
    p = plan(process_types={"release": "x", "web": "a", "worker": "b"})
    assert p.types == ("web", "worker")
    assert p.ports("web") == [5000, 5001] and p.ports("worker") == [5100]


def test_the_portable_env_reads_back_in_dynod() -> None:
    assert parse_dotenv(render_portable_dotenv(TRICKY)) == TRICKY


@pytest.mark.parametrize(
    "value", ["a\\nb", "tab\\there", "cr\rhere", "ff\x0chere", "sep\u2028here"]
)
def test_values_no_env_file_carries_alike_are_refused_by_key(value: str) -> None:
    with pytest.raises(DynodError, match="^BAD holds"):
        render_portable_dotenv({"BAD": value})


def test_environment_file_quotes_what_systemd_would_expand() -> None:
    text = render_environment_file({"A": "x y", "B": 'q"$v`\\', "C": "ok:1", "D": ""})
    assert text == 'A="x y"\nB="q\\"\\$v\\`\\\\"\nC=ok:1\nD=""\n'


def test_systemd_exec_start_escapes_specifiers_and_variables() -> None:
    files = render_systemd(
        plan(process_types={"web": 'echo "50%" $PORT \\o/'}, formation={"web": 1}),
        app_dir="/srv/shop/app",
        env_file="/srv/shop/shop.env",
    )
    unit = files["shop-web@.service"].text
    start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert start.startswith('ExecStart=/bin/bash -c "export PORT=%i DYNO=web.$$((%i - 4999)) ')
    assert start.endswith('echo \\"50%%\\" $$PORT \\\\o/"')
    assert files["shop.env"].mode == 0o600


def test_addons_name_the_vars_to_supply() -> None:
    assert addon_vars(("redis-1", "postgresql-2", "cache")) == {
        "REDIS_URL": "redis-1",
        "DATABASE_URL": "postgresql-2",
        "CACHE_URL": "cache",
    }


def test_kubernetes_commands_escape_variable_references() -> None:
    files = render_kubernetes(
        plan(process_types={"web": "echo $(date) $PORT"}, formation={"web": 1}),
        slug_url="https://slugs.example.com/shop.tgz",
    )
    deployment = json.loads(files["20-deployment-web.json"].text)
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["bash", "-c"] and command[2].endswith("echo $$(date) $$PORT")


def test_kubernetes_refuses_types_that_clash_once_lowercased() -> None:
    with pytest.raises(DynodError, match="both become 'shop-big-job'"):
        render_kubernetes(
            plan(process_types={"big_job": "a", "Big-Job": "b"}, formation={}),
            slug_url="https://slugs.example.com/shop.tgz",
        )


def test_procfile_lines_run_through_the_wrapper() -> None:
    files = render_procfile_export(plan(process_types={"web": "python3 -c 'print(1)'"}))
    line = files["Procfile"].text.strip()
    name, _, command = line.partition(": ")
    assert name == "web" and shlex.split(command) == ["./.dyno", "python3 -c 'print(1)'"]
    assert files[".dyno"].mode == 0o755 and files[".env"].mode == 0o600
