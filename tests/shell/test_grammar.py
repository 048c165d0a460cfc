"""The command grammar: positional arguments, flags in every Heroku CLI spelling, literal command
lines, and the one-line usage errors."""

from __future__ import annotations

import pytest

from shell.commands import TABLE
from shell.errors import UsageError
from shell.grammar import find, overview, parse


def words(line: str) -> list[str]:
    return line.split()


def test_positional_and_app_flag() -> None:
    parsed = parse(find(TABLE, "config:get"), words("FOO -a myapp"))
    assert parsed.arg("KEY") == "FOO"
    assert parsed.value("app") == "myapp"


@pytest.mark.parametrize("spelling", ["-n 5", "-n5", "--num 5", "--num=5"])
def test_value_flag_spellings(spelling: str) -> None:
    parsed = parse(find(TABLE, "logs"), words(spelling))
    assert parsed.value("num") == "5"


def test_switches_and_several_flags() -> None:
    parsed = parse(find(TABLE, "logs"), words("-t -d web.1 --source heroku --app=x"))
    assert parsed.on("tail") and not parsed.on("json")
    assert (parsed.value("dyno"), parsed.value("source"), parsed.value("app")) == (
        "web.1",
        "heroku",
        "x",
    )


def test_repeatable_flag_keeps_order() -> None:
    parsed = parse(find(TABLE, "deploy"), words("app --buildpack python -b ./bp"))
    assert parsed.arg("DIR") == "app"
    assert parsed.values("buildpack") == ["python", "./bp"]


def test_last_value_wins_for_a_single_flag() -> None:
    assert parse(find(TABLE, "ps"), words("-a one -a two")).value("app") == "two"


def test_many_takes_every_word() -> None:
    parsed = parse(find(TABLE, "config:set"), words("A=1 B=2=3 -a x C="))
    assert parsed.args("KEY=VALUE") == ["A=1", "B=2=3", "C="]


def test_literal_command_keeps_its_flags() -> None:
    parsed = parse(find(TABLE, "run:detached"), words("-a x python -c print -n 3 --json"))
    assert parsed.value("app") == "x"
    assert parsed.args("COMMAND") == ["python", "-c", "print", "-n", "3", "--json"]
    assert not parsed.on("json")


def test_app_flag_anywhere_in_a_command_line_unless_after_double_dash() -> None:
    run = find(TABLE, "run:detached")
    parsed = parse(run, words("rake db:migrate -a x --trace"))
    assert (parsed.value("app"), parsed.args("COMMAND")) == ("x", ["rake", "db:migrate", "--trace"])
    parsed = parse(run, words("ls --app=y -l"))
    assert (parsed.value("app"), parsed.args("COMMAND")) == ("y", ["ls", "-l"])
    parsed = parse(run, words("-a x ls -- -a"))
    assert (parsed.value("app"), parsed.args("COMMAND")) == ("x", ["ls", "-a"])


def test_double_dash_ends_flags() -> None:
    parsed = parse(find(TABLE, "config:unset"), words("-a x -- -WEIRD"))
    assert parsed.args("KEY") == ["-WEIRD"]


def test_scale_words_with_minus_are_positional() -> None:
    parsed = parse(find(TABLE, "ps:scale"), words("web-1 worker+2"))
    assert parsed.args("TYPE=N") == ["web-1", "worker+2"]


def test_help_flag_skips_argument_checks() -> None:
    assert parse(find(TABLE, "config:get"), ["--help"]).on("help")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("logs --bogus", "unknown flag --bogus for `dyno logs`: see `dyno help logs`"),
        ("logs -x", "unknown flag -x for `dyno logs`: see `dyno help logs`"),
        ("apps -a x", "unknown flag -a for `dyno apps`"),
        ("config --json=yes", "flag --json takes no value"),
        ("logs -n", "flag --num needs a value (N)"),
        ("logs -tn", "flag -t takes no value"),
        ("config:get", "missing KEY: usage: dyno config:get KEY [-a APP]"),
        ("config:set", "missing KEY=VALUE"),
        ("ps:stop", "missing TARGET"),
        ("config:get A B", "unexpected argument `B` for `dyno config:get`"),
        ("ps --json=1", "takes no value"),
    ],
)
def test_usage_errors(line: str, message: str) -> None:
    command, *rest = words(line)
    with pytest.raises(UsageError) as caught:
        parse(find(TABLE, command), rest)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unknown_command() -> None:
    with pytest.raises(UsageError, match="unknown command `frobnicate`: run `dyno help`"):
        find(TABLE, "frobnicate")


def test_json_only_where_it_belongs() -> None:
    with_json = {c.name for c in TABLE if c.json}
    for name in ("apps", "apps:info", "builds", "ps", "config", "releases", "releases:info"):
        assert name in with_json
    for name in ("config:set", "logs", "deploy", "help"):
        assert name not in with_json


def test_help_texts() -> None:
    text = find(TABLE, "deploy").help()
    assert text.startswith("Usage: dyno deploy [DIR] [-b BUILDPACK]… [-a APP]")
    assert "--buildpack BUILDPACK" in text
    listing = overview(TABLE)
    assert all(command.name in listing for command in TABLE)
