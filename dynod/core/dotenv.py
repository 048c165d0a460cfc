"""`.env` files: KEY=value lines parsed into config vars, rendered back, and layered from disk.

Rules: `#` comment lines and blank lines are ignored; an optional `export ` prefix; keys are
`[A-Za-z_][A-Za-z0-9_]*`; whitespace around `=` is tolerated. Single quotes are literal. Double
quotes understand `\\n`, `\\r`, `\\t`, `\\"` and `\\\\`; any other backslash stays as written. An
unquoted value ends at whitespace followed by `#` and is trimmed. After a closing quote only
whitespace or a ` #` comment may follow. A value is one line (use `\\n` for more); no shell
expansion; NUL is refused (environment variables cannot hold it). A later duplicate key wins.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from dynod.core.names import CONFIG_KEY
from dynod.core.procfile import decode_utf8
from dynod.errors import DynodError, ParseError

_EXPORT = re.compile(r"^export\s+")
_COMMENT = re.compile(r"\s#")
_AFTER_QUOTE = re.compile(r"\s*|\s+#.*")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
_RENDER_ESCAPES = {v: "\\" + k for k, v in _ESCAPES.items()}
# Values made only of these are written bare; anything else is quoted.
_BARE = re.compile(r"[A-Za-z0-9_./:@%+,=~-]*")


def parse_dotenv(text: str, source: str = ".env") -> dict[str, str]:
    env: dict[str, str] = {}
    # Split on "\n" only: str.splitlines() would also break values at \v, \f or U+2028.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        head, equals, rest = line.partition("=")
        if not equals:
            raise ParseError(
                f"expected KEY=value, got {_shown(stripped)}: "
                "add `=` and a value, or start the line with # to comment it out",
                source=source,
                line=number,
            )
        key = _EXPORT.sub("", head.strip(), count=1)
        if not CONFIG_KEY.fullmatch(key):
            raise ParseError(
                f"bad key {_shown(key)}: use letters, digits and _, not starting with a digit",
                source=source,
                line=number,
            )
        try:
            value = _value(rest)
        except ValueError as err:
            raise ParseError(str(err), source=source, line=number) from None
        if "\0" in value:
            raise ParseError(
                f"{key} contains a NUL character, which environment variables cannot hold: "
                "remove it",
                source=source,
                line=number,
            )
        env[key] = value
    return env


def render_dotenv(env: Mapping[str, str]) -> str:
    """Text that parse_dotenv reads back as `env`: bare when safe, else quoted."""
    lines = []
    for key, value in env.items():
        if not CONFIG_KEY.fullmatch(key):
            raise DynodError(f"cannot write .env: bad key {_shown(key)}")
        if "\0" in value:
            raise DynodError(f"cannot write .env: {key} contains a NUL character")
        lines.append(f"{key}={_quoted(value)}\n")
    return "".join(lines)


def load_env_files(paths: Sequence[str | os.PathLike[str]]) -> dict[str, str]:
    """Every file's variables, later files winning."""
    env: dict[str, str] = {}
    for path in paths:
        source = os.fspath(path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise DynodError(f"no env file at {source}: create it or leave it out of -e") from None
        except OSError as err:
            raise DynodError(f"cannot read env file {source}: {err.strerror}") from None
        env.update(parse_dotenv(decode_utf8(data, source), source))
    return env


def _value(rest: str) -> str:
    """The value after `=`; raises ValueError with the user-facing message."""
    body = rest.lstrip()
    quote = body[:1]
    if quote == "'":
        end = body.find("'", 1)
        if end < 0:
            raise ValueError("unterminated single quote: end the value with '")
        value, tail = body[1:end], body[end + 1 :]
    elif quote == '"':
        value, tail = _double_quoted(body)
    else:
        cut = _COMMENT.search(rest)
        return (rest[: cut.start()] if cut else rest).strip()
    if not _AFTER_QUOTE.fullmatch(tail):
        raise ValueError(
            f"unexpected {_shown(tail.strip())} after the closing quote: "
            "put the whole value inside the quotes, comments after ' #'"
        )
    return value


def _double_quoted(body: str) -> tuple[str, str]:
    """(value, text after the closing quote) for a value starting with `"`."""
    out: list[str] = []
    i = 1
    while i < len(body):
        char = body[i]
        if char == '"':
            return "".join(out), body[i + 1 :]
        if char == "\\" and body[i + 1 : i + 2] in _ESCAPES:
            out.append(_ESCAPES[body[i + 1]])
            i += 2
            continue
        out.append(char)
        i += 1
    raise ValueError(
        'unterminated double quote: end the value with " (write \\" for a quote inside)'
    )


def _quoted(value: str) -> str:
    if _BARE.fullmatch(value):
        return value
    if "'" not in value and value.isprintable():
        return f"'{value}'"
    return '"' + "".join(_RENDER_ESCAPES.get(c, c) for c in value) + '"'


def _shown(text: str, limit: int = 40) -> str:
    """A quoted excerpt that keeps error messages on one short line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
