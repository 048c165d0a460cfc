"""Procfile parsing, rendering and loading: docs/platform.md's rules, example by example, then
hypothesis over arbitrary and Procfile-shaped text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynod.core.procfile import (
    ProcessType,
    Procfile,
    load_procfile,
    parse_procfile,
    render_procfile,
)
from dynod.errors import DynodError, ParseError


def test_types_in_file_order() -> None:
    p = parse_procfile("web: python app.py\nworker: python worker.py\nrelease: ./migrate\n")
    assert p.names == ("web", "worker", "release")
    assert p.formation_names == ("web", "worker")
    assert p.command("worker") == "python worker.py"
    assert p.release == "./migrate"
    assert "web" in p and "clock" not in p and 3 not in p


def test_no_release() -> None:
    p = parse_procfile("web: a\n")
    assert p.release is None
    with pytest.raises(KeyError):
        p.command("release")


def test_comments_blank_lines_crlf_and_whitespace() -> None:
    text = "# a comment\r\n\r\n   # indented comment\r\n  web :  bundle exec puma  \r\n\t\r\n"
    assert parse_procfile(text) == Procfile((ProcessType("web", "bundle exec puma"),))


def test_command_kept_verbatim() -> None:
    command = "VAR=x ${X:-y} && echo $PORT: done # not a comment"
    assert parse_procfile(f"web: {command}").command("web") == command


def test_name_charset_and_length() -> None:
    name = "A-z_0" + "x" * 58
    assert parse_procfile(f"{name}: run").names == (name,)
    with pytest.raises(ParseError, match="bad process type"):
        parse_procfile(f"{name}x: run")
    for bad in ("web.1", "wéb", "my web", ""):
        with pytest.raises(ParseError, match="bad process type"):
            parse_procfile(f"{bad}: run")


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("web: a\n\nnot a procfile line\n", 3, "expected `type: command`"),
        ("web: a\nworker:   \n", 2, "has no command"),
        ("# c\nweb.1: a\n", 2, "bad process type"),
        ("web: a\nworker: b\nweb: c\n", 3, "already defined on line 1"),
        ("web: a\rworker: b\n", 1, "line break"),
        ("web: a\0b\n", 1, "NUL"),
    ],
)
def test_bad_lines_name_their_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ParseError, match=fragment) as info:
        parse_procfile(text, source="app/Procfile")
    assert info.value.line == line
    assert str(info.value).startswith(f"app/Procfile line {line}: ")
    assert "\n" not in str(info.value)


def test_empty_procfile() -> None:
    for text in ("", "\n\n", "# only a comment\n"):
        with pytest.raises(ParseError, match="no process types: add a line like `web: python"):
            parse_procfile(text)


def test_render() -> None:
    p = Procfile((ProcessType("web", "a b"), ProcessType("release", "m")))
    assert render_procfile(p) == "web: a b\nrelease: m\n"
    assert parse_procfile(render_procfile(p)) == p


@pytest.mark.parametrize(
    "types",
    [
        (),
        (ProcessType("web", "a"), ProcessType("web", "b")),
        (ProcessType("web.1", "a"),),
        (ProcessType("web", " a"),),
        (ProcessType("web", "a\nb"),),
        (ProcessType("web", ""),),
    ],
)
def test_render_refuses_what_would_not_parse_back(types: tuple[ProcessType, ...]) -> None:
    with pytest.raises(DynodError, match="Procfile"):
        render_procfile(Procfile(types))


def test_load(tmp_path: Path) -> None:
    path = tmp_path / "Procfile"
    path.write_bytes(b"\xef\xbb\xbfweb: caf\xc3\xa9\n")
    assert load_procfile(path).command("web") == "café"


def test_load_missing(tmp_path: Path) -> None:
    path = tmp_path / "Procfile"
    with pytest.raises(
        DynodError, match=re.escape(f"no Procfile at {path}: create one or pass -f PATH")
    ):
        load_procfile(path)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(DynodError, match="cannot read Procfile"):
        load_procfile(tmp_path)


def test_load_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "Procfile"
    path.write_bytes(b"web: a\nworker: \xff\n")
    with pytest.raises(ParseError, match="UTF-8") as info:
        load_procfile(path)
    assert info.value.line == 2 and info.value.source == str(path)


def test_parse_error_from_load_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "Procfile"
    path.write_text("web a\n")
    with pytest.raises(ParseError, match="^" + re.escape(f"{path} line 1: ")):
        load_procfile(path)


# Property tests ---------------------------------------------------------------------------

PROCFILE_ALPHABET = st.sampled_from(list("=#'\"\\ \t\n\r:\0abwe-_.1$é") + ["web", "release"])
procfile_text = st.lists(PROCFILE_ALPHABET, max_size=60).map("".join)
names = st.from_regex(r"[A-Za-z0-9_-]{1,63}", fullmatch=True)
commands = (
    st.text(min_size=1)
    .map(str.strip)
    .filter(lambda c: bool(c) and not any(ch in c for ch in "\r\n\0"))
)


def _parses_or_refuses(text: str) -> None:
    try:
        p = parse_procfile(text)
    except ParseError as err:
        assert "\n" not in str(err)
        return
    assert parse_procfile(render_procfile(p)) == p


@settings(deadline=None)
@given(st.text())
def test_arbitrary_text_parses_or_refuses(text: str) -> None:
    _parses_or_refuses(text)


@settings(deadline=None)
@given(procfile_text)
def test_procfile_shaped_text_parses_or_refuses(text: str) -> None:
    _parses_or_refuses(text)


@settings(deadline=None)
@given(st.lists(st.tuples(names, commands), min_size=1, unique_by=lambda t: t[0]))
def test_valid_procfiles_round_trip(pairs: list[tuple[str, str]]) -> None:
    p = Procfile(tuple(ProcessType(n, c) for n, c in pairs))
    assert parse_procfile(render_procfile(p)) == p
