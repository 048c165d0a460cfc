"""Completion for the interactive shell, made from the command table: command names, each
command's flags, and the values its arguments and flags take (app names, process types, dyno
names, config keys, release versions, directories), read from shell/live.py's cache. It runs in
prompt_toolkit's completion thread (ThreadedCompleter), so a first fetch may be waited for there
without ever holding up a keystroke."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from shell.grammar import Command, Flag
from shell.live import Live

WAIT = 0.5  # seconds the completion thread waits for a first answer from dynod
LOG_SOURCES = ("app", "heroku")


def split_line(text: str) -> list[str]:
    """The words before the cursor, the last one being completed ("" after a blank)."""
    try:
        words = shlex.split(text)
    except ValueError:  # an open quote: complete the plain words
        words = text.split()
    if not text or text[-1].isspace():
        words.append("")
    if words[:1] == ["dyno"] and len(words) > 1:  # `dyno ps` typed out of habit
        words = words[1:]
    return words


class ShellCompleter(Completer):
    def __init__(
        self,
        table: Sequence[Command],
        builtins: Sequence[tuple[str, str]],
        live: Live,
        current_app: Callable[[], str | None],
    ) -> None:
        self.table = {c.name: c for c in table}
        self.builtins = dict(builtins)
        self.live = live
        self.current_app = current_app
        self.paths = PathCompleter(only_directories=True, expanduser=True)

    def get_completions(self, document: Document, event: CompleteEvent) -> Iterator[Completion]:
        words = split_line(document.text_before_cursor)
        word, before = words[-1], words[:-1]
        if not before:
            summaries = {c.name: c.summary for c in self.table.values()} | self.builtins
            yield from _matches(word, summaries, summaries.get)
            return
        name, rest = before[0], before[1:]
        if name == "use":
            yield from _matches(word, self._apps() if not rest else [])
            return
        if name == "help":
            names = [*self.table, *self.builtins]
            yield from _matches(word, names if not rest else [])
            return
        command = self.table.get(name)
        if command is None:
            return
        yield from self._for_command(command, rest, word, event)

    def _for_command(
        self, command: Command, rest: list[str], word: str, event: CompleteEvent
    ) -> Iterator[Completion]:
        flags = command.all_flags()
        app = _app_in(rest, flags) or self.current_app()
        if rest:
            flag = _flag_named(rest[-1], flags)
            if flag is not None and flag.value is not None and "=" not in rest[-1]:
                yield from _matches(word, self._flag_values(flag, app))
                return
        position, literal = _position(command, rest, flags)
        if literal:
            return
        if word.startswith("-"):
            names = [f"--{f.long}" for f in flags]
            if not word.startswith("--"):
                names += [f"-{f.short}" for f in flags if f.short]
            helps = {f"--{f.long}": f.help for f in flags} | {
                f"-{f.short}": f.help for f in flags if f.short
            }
            yield from _matches(word, names, helps.get)
            return
        if not command.args:
            return
        arg = command.args[min(position, len(command.args) - 1)]
        if position >= len(command.args) and not arg.many:
            return
        if arg.name == "DIR":
            sub = Document(word, len(word))
            yield from self.paths.get_completions(sub, event)
        elif arg.literal:
            if position == next(i for i, a in enumerate(command.args) if a.literal):
                yield from _matches(word, self._types(app))
        else:
            yield from _matches(word, self._arg_values(arg.name, app))

    def _arg_values(self, name: str, app: str | None) -> list[str]:
        if name == "APP":
            return self._apps()
        if name == "TARGET":
            return self._types(app) + self._dynos(app)
        if name == "TYPE=N":
            return [f"{kind}=" for kind in self._types(app)]
        if name == "KEY":
            return self._keys(app)
        if name == "KEY=VALUE":
            return [f"{key}=" for key in self._keys(app)]
        if name == "VERSION":
            releases = self._get("releases", app) or []
            return [f"v{r.get('version')}" for r in releases if isinstance(r, dict)]
        return []

    def _flag_values(self, flag: Flag, app: str | None) -> list[str]:
        if flag.value in ("APP", "NAME"):
            return self._apps()
        if flag.value == "DYNO":
            return self._dynos(app)
        if flag.value == "TYPE":
            return self._types(app)
        if flag.value == "SOURCE":
            return list(LOG_SOURCES)
        return []

    def _get(self, kind: str, app: str | None) -> list[Any] | None:
        if app is None:
            return None
        value = self.live.get((kind, app), wait=WAIT)
        return value if isinstance(value, list) else None

    def _apps(self) -> list[str]:
        names = self.live.get(("apps",), wait=WAIT)
        return list(names) if isinstance(names, list) else []

    def _types(self, app: str | None) -> list[str]:
        formation = self._get("formation", app) or []
        return sorted({str(e.get("type")) for e in formation if isinstance(e, dict)})

    def _dynos(self, app: str | None) -> list[str]:
        dynos = self._get("dynos", app) or []
        return sorted(str(d.get("name")) for d in dynos if isinstance(d, dict))

    def _keys(self, app: str | None) -> list[str]:
        return [str(key) for key in self._get("config", app) or []]


def _matches(
    word: str, candidates: Iterable[str], meta: Callable[[str], str | None] | None = None
) -> Iterator[Completion]:
    for candidate in candidates:
        if candidate.startswith(word):
            yield Completion(
                candidate, -len(word), display_meta=(meta(candidate) or "") if meta else ""
            )


def _flag_named(word: str, flags: Sequence[Flag]) -> Flag | None:
    if word.startswith("--"):
        name = word[2:].partition("=")[0]
        return next((f for f in flags if f.long == name), None)
    if word.startswith("-") and len(word) == 2:
        return next((f for f in flags if f.short == word[1]), None)
    return None


def _app_in(words: list[str], flags: Sequence[Flag]) -> str | None:
    """The `-a APP` / `--app=APP` already on the line: its dynos and keys are the ones asked."""
    for i, word in enumerate(words):
        if word.startswith("--app="):
            return word.partition("=")[2] or None
        if word in ("-a", "--app") and i + 1 < len(words) and any(f.long == "app" for f in flags):
            return words[i + 1]
    return None


def _position(command: Command, words: list[str], flags: Sequence[Flag]) -> tuple[int, bool]:
    """How many positional words come before the one being completed, and whether a literal
    argument (a command line for a dyno) has already begun: its words are its own."""
    literal_from = next((i for i, a in enumerate(command.args) if a.literal), None)
    count, skip = 0, False
    for word in words:
        if skip:
            skip = False
            continue
        if word == "--":
            return count, literal_from is not None
        if word.startswith("-") and word != "-":
            flag = _flag_named(word, flags)
            skip = bool(flag and flag.value and "=" not in word)  # `-n5` names no flag here
            continue
        if literal_from is not None and count >= literal_from:
            return count, True
        count += 1
    return count, False
