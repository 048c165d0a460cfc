"""The command grammar shared by one-shot `dyno COMMAND …` and the interactive shell: a command's
positional arguments and flags as data, one parser for all of them, and help text made from the
same data. Heroku CLI conventions: `-n 5`, `-n5`, `--num 5`, `--num=5`, `--` ends the flags."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from shell.errors import UsageError

if TYPE_CHECKING:
    from shell.context import Context

Handler = Callable[["Context", "Parsed"], "int | None"]  # None: exit 0


@attrs.frozen
class Flag:
    """`--long`/`-s`; `value` is its placeholder (`N`) when it takes one, None for a switch."""

    long: str
    help: str
    short: str | None = None
    value: str | None = None
    repeat: bool = False

    def usage(self) -> str:
        name = f"-{self.short}" if self.short else f"--{self.long}"
        text = f"{name} {self.value}" if self.value else name
        return f"[{text}]…" if self.repeat else f"[{text}]"


@attrs.frozen
class Arg:
    """A positional argument; `many` takes every remaining word (at least one if required);
    `literal` also stops flag parsing at the first word (a command line to run elsewhere),
    except for `-a/--app APP`, which Heroku users put anywhere (`run rake db:migrate -a x`)."""

    name: str
    required: bool = True
    many: bool = False
    literal: bool = False

    def usage(self) -> str:
        text = f"{self.name} …" if self.many else self.name
        return text if self.required else f"[{text}]"


APP_FLAG = Flag("app", "the app to act on (else DYNO_APP, else the `dynod` git remote)", "a", "APP")
JSON_FLAG = Flag("json", "print the API's own JSON")
HELP_FLAG = Flag("help", "show this command's help", "h")


@attrs.frozen
class Command:
    name: str
    summary: str
    handler: Handler
    args: tuple[Arg, ...] = ()
    flags: tuple[Flag, ...] = ()
    app: bool = True  # takes -a/--app and acts on one app
    json: bool = False  # takes --json
    details: str = ""

    def all_flags(self) -> tuple[Flag, ...]:
        extra: tuple[Flag, ...] = (APP_FLAG,) if self.app else ()
        extra += (JSON_FLAG,) if self.json else ()
        return (*self.flags, *extra, HELP_FLAG)

    def usage(self) -> str:
        words = [f"dyno {self.name}", *(a.usage() for a in self.args)]
        words += [f.usage() for f in self.all_flags() if f is not HELP_FLAG]
        return " ".join(words)

    def help(self) -> str:
        lines = [f"Usage: {self.usage()}", "", self.summary]
        if self.details:
            lines += ["", self.details]
        lines += ["", "Flags:"]
        rows = []
        for flag in self.all_flags():
            name = (f"-{flag.short}, " if flag.short else "    ") + f"--{flag.long}"
            rows.append((name + (f" {flag.value}" if flag.value else ""), flag.help))
        width = max(len(name) for name, _ in rows)
        lines += [f"  {name.ljust(width)}  {text}" for name, text in rows]
        return "\n".join(lines)


@attrs.frozen
class Parsed:
    """What the user typed, by argument name and flag long name."""

    command: Command
    positional: dict[str, list[str]] = attrs.field(factory=dict)
    options: dict[str, list[str]] = attrs.field(factory=dict)
    switches: frozenset[str] = frozenset()

    def arg(self, name: str) -> str | None:
        values = self.positional.get(name)
        return values[0] if values else None

    def args(self, name: str) -> list[str]:
        return list(self.positional.get(name, []))

    def value(self, flag: str) -> str | None:
        values = self.options.get(flag)
        return values[-1] if values else None

    def values(self, flag: str) -> list[str]:
        return list(self.options.get(flag, []))

    def on(self, flag: str) -> bool:
        return flag in self.switches


def find(table: Sequence[Command], name: str) -> Command:
    for command in table:
        if command.name == name:
            return command
    raise UsageError(f"unknown command `{name}`: run `dyno help` for the list")


def parse(command: Command, words: Sequence[str]) -> Parsed:
    """Match the words after the command name against its arguments and flags."""
    flags = command.all_flags()
    by_long = {f.long: f for f in flags}
    by_short = {f.short: f for f in flags if f.short}
    hint = f"see `dyno help {command.name}`"
    positional: list[str] = []
    options: dict[str, list[str]] = {}
    switches: set[str] = set()
    literal_from = next((i for i, a in enumerate(command.args) if a.literal), None)
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            positional += words[i:]
            break
        if not word.startswith("-") or word == "-":
            if literal_from is not None and len(positional) >= literal_from:
                literal, app = _literal_rest(words[i - 1 :], command.app)
                positional += literal
                if app is not None:
                    options["app"] = [app]
                break
            positional.append(word)
            continue
        if word.startswith("--"):
            name, eq, inline = word[2:].partition("=")
            flag = by_long.get(name)
            if flag is None:
                raise UsageError(f"unknown flag --{name} for `dyno {command.name}`: {hint}")
            value: str | None = inline if eq else None
        else:
            flag = by_short.get(word[1:2])
            if flag is None:
                raise UsageError(f"unknown flag {word[:2]} for `dyno {command.name}`: {hint}")
            value = word[2:] or None
            if value is not None and flag.value is None:
                raise UsageError(f"flag -{flag.short} takes no value (in `{word}`): {hint}")
            eq = ""
        if flag.value is None:
            if eq:
                raise UsageError(f"flag --{flag.long} takes no value: {hint}")
            switches.add(flag.long)
            continue
        if value is None:
            if i >= len(words):
                raise UsageError(f"flag --{flag.long} needs a value ({flag.value}): {hint}")
            value = words[i]
            i += 1
        if flag.repeat:
            options.setdefault(flag.long, []).append(value)
        else:
            options[flag.long] = [value]
    if "help" in switches:
        return Parsed(command, {}, options, frozenset(switches))
    return Parsed(command, _bind(command, positional), options, frozenset(switches))


def _literal_rest(words: Sequence[str], takes_app: bool) -> tuple[list[str], str | None]:
    """A command line for the dyno, its flags and all, minus an `-a/--app APP` (which `--`
    protects: after it, every word is the command's)."""
    literal: list[str] = []
    app: str | None = None
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            literal += words[i:]
            break
        if takes_app and word in ("-a", "--app") and i < len(words):
            app = words[i]
            i += 1
        elif takes_app and word.startswith("--app="):
            app = word.partition("=")[2]
        else:
            literal.append(word)
    return literal, app


def _bind(command: Command, words: list[str]) -> dict[str, list[str]]:
    bound: dict[str, list[str]] = {}
    rest = list(words)
    for arg in command.args:
        if arg.many:
            taken, rest = rest, []
        else:
            taken, rest = rest[:1], rest[1:]
        if arg.required and not taken:
            raise UsageError(f"missing {arg.name}: usage: {command.usage()}")
        bound[arg.name] = taken
    if rest:
        raise UsageError(
            f"unexpected argument `{rest[0]}` for `dyno {command.name}`: usage: {command.usage()}"
        )
    return bound


def overview(table: Sequence[Command]) -> str:
    """`dyno help`: every command with its summary."""
    width = max(len(c.name) for c in table)
    lines = ["Usage: dyno COMMAND [ARGS] [FLAGS]", "", "Commands:"]
    lines += [f"  {c.name.ljust(width)}  {c.summary}" for c in table]
    lines += ["", "Run `dyno help COMMAND` for a command's arguments and flags."]
    return "\n".join(lines)
