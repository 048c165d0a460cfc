"""`.env` parsing, rendering and layering: every quoting rule by example, then hypothesis over
arbitrary and .env-shaped text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynod.core.dotenv import load_env_files, parse_dotenv, render_dotenv
from dynod.errors import DynodError, ParseError


def test_plain_lines_comments_blank_lines_and_order() -> None:
    text = "# comment\n\nA=1\n   # indented comment\nB=two words\n\t\nC=\n"
    env = parse_dotenv(text)
    assert env == {"A": "1", "B": "two words", "C": ""}
    assert list(env) == ["A", "B", "C"]


def test_export_prefix() -> None:
    assert parse_dotenv("export A=1\nexport\tB=2\n  export   C = 3") == {
        "A": "1",
        "B": "2",
        "C": "3",
    }
    # `export` is also an ordinary key name.
    assert parse_dotenv("export=1\nexportX=2\n") == {"export": "1", "exportX": "2"}


def test_whitespace_around_equals() -> None:
    assert parse_dotenv("A = 1\nB\t=\t2 \nC= ' x '") == {"A": "1", "B": "2", "C": " x "}


def test_crlf() -> None:
    assert parse_dotenv("A=1\r\nB='2'\r\nC=\"3\"\r\n# c\r\n\r\n") == {"A": "1", "B": "2", "C": "3"}


def test_unquoted_values() -> None:
    env = parse_dotenv(
        "A=x #comment\nB=x#not-a-comment\nC=  padded  \nD= #only a comment\nE=a=b\n"
        "F=it's\nG=$HOME ${X:-y} `cmd`\nH=x\t# tab before the hash\n"
    )
    assert env == {
        "A": "x",
        "B": "x#not-a-comment",
        "C": "padded",
        "D": "",
        "E": "a=b",
        "F": "it's",
        "G": "$HOME ${X:-y} `cmd`",
        "H": "x",
    }


def test_single_quotes_are_literal() -> None:
    env = parse_dotenv(r"""A='a \n "b" \\ $X #c'
B=''
C='x' # comment
D='x'   """)
    assert env == {"A": r'a \n "b" \\ $X #c', "B": "", "C": "x", "D": "x"}


def test_double_quote_escapes() -> None:
    env = parse_dotenv(r"""A="line1\nline2"
B="say \"hi\""
C="back\\slash"
D="cr\r tab\t"
E="other \x \$X \' stay"
F="a #b" # comment
G=""
H="trailing\\"
""")
    assert env == {
        "A": "line1\nline2",
        "B": 'say "hi"',
        "C": "back\\slash",
        "D": "cr\r tab\t",
        "E": r"other \x \$X \' stay",
        "F": "a #b",
        "G": "",
        "H": "trailing\\",
    }


def test_later_duplicate_wins() -> None:
    assert parse_dotenv("A=1\nB=2\nA=3\n") == {"A": "3", "B": "2"}


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("A=1\n\nnot a line\n", 3, "expected KEY=value"),
        ("A=1\nexport B\n", 2, "expected KEY=value"),
        ("1A=x\n", 1, "bad key '1A'"),
        ("A-B=x\n", 1, "bad key"),
        ("MY KEY=x\n", 1, "bad key"),
        ("=x\n", 1, "bad key ''"),
        ("# c\nA='open\n", 2, "unterminated single quote"),
        ('A="open\n', 1, "unterminated double quote"),
        ('A="open\\"\n', 1, "unterminated double quote"),
        ("A='x'y\n", 1, "after the closing quote"),
        ("A='x'#y\n", 1, "after the closing quote"),
        ('A="x" y\n', 1, "after the closing quote"),
        ("A=1\r\nB=a\0b\r\n", 2, "NUL"),
        ("A='a\0b'\n", 1, "NUL"),
    ],
)
def test_bad_lines_name_their_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ParseError, match=re.escape(fragment)) as info:
        parse_dotenv(text, source="app/.env")
    assert info.value.line == line
    assert str(info.value).startswith(f"app/.env line {line}: ")
    assert "\n" not in str(info.value)


def test_render() -> None:
    env = {
        "BARE": "postgres://u:p@h:5432/db",
        "EMPTY": "",
        "SPACES": " two words ",
        "HASH": "a #b",
        "QUOTE": 'it\'s "x"',
        "NEWLINE": "a\nb\\n",
    }
    text = render_dotenv(env)
    assert text.splitlines() == [
        "BARE=postgres://u:p@h:5432/db",
        "EMPTY=",
        "SPACES=' two words '",
        "HASH='a #b'",
        'QUOTE="it\'s \\"x\\""',
        'NEWLINE="a\\nb\\\\n"',
    ]
    assert parse_dotenv(text) == env


@pytest.mark.parametrize("env", [{"1A": "x"}, {"A B": "x"}, {"A": "x\0"}])
def test_render_refuses_what_would_not_parse_back(env: dict[str, str]) -> None:
    with pytest.raises(DynodError, match="cannot write .env"):
        render_dotenv(env)


def test_load_env_files_later_wins(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text("A=1\nB=1\n")
    (tmp_path / "b.env").write_bytes(b"\xef\xbb\xbfB=2\r\nC=2\r\n")
    env = load_env_files([tmp_path / "a.env", str(tmp_path / "b.env")])
    assert env == {"A": "1", "B": "2", "C": "2"}
    assert load_env_files([]) == {}


def test_load_env_files_missing(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text("A=1\n")
    missing = tmp_path / "b.env"
    with pytest.raises(DynodError, match=re.escape(f"no env file at {missing}")):
        load_env_files([tmp_path / "a.env", missing])


def test_load_env_files_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.env"
    path.write_bytes(b"A=1\nB=\xff\n")
    with pytest.raises(ParseError, match="UTF-8") as info:
        load_env_files([path])
    assert (info.value.source, info.value.line) == (str(path), 2)
    path.write_text("A=1\nB\n")
    with pytest.raises(ParseError, match="^" + re.escape(f"{path} line 2: ")):
        load_env_files([path])


# Property tests ---------------------------------------------------------------------------

DOTENV_ALPHABET = st.sampled_from(
    list("=#'\"\\ \t\n\r:\0abAZ_1$é") + ["export ", "\\n", '\\"', "\\\\", "\r\n", " #"]
)
dotenv_text = st.lists(DOTENV_ALPHABET, max_size=60).map("".join)
keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]*", fullmatch=True)
values = st.text().filter(lambda v: "\0" not in v)


def _parses_or_refuses(text: str) -> None:
    try:
        env = parse_dotenv(text)
    except ParseError as err:
        assert "\n" not in str(err)
        return
    assert parse_dotenv(render_dotenv(env)) == env


@settings(deadline=None)
@given(st.text())
def test_arbitrary_text_parses_or_refuses(text: str) -> None:
    _parses_or_refuses(text)


@settings(deadline=None)
@given(dotenv_text)
def test_dotenv_shaped_text_parses_or_refuses(text: str) -> None:
    _parses_or_refuses(text)


@settings(deadline=None)
@given(st.dictionaries(keys, values))
def test_valid_mappings_round_trip(env: dict[str, str]) -> None:
    assert parse_dotenv(render_dotenv(env)) == env
