"""The interactive shell, `dyno` alone: the command table's commands without `dyno`, a current
app (`use APP`, in the prompt), completion, history kept across sessions, the current app's
formation live in a bottom toolbar, and `logs --tail` followed above the prompt. Each command
runs after the prompt has returned, with the terminal to itself (as `run bash` needs); what
runs in the background only fills caches, or prints above the prompt once it is back."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import ThreadedCompleter
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.styles import Style

from shell import git
from shell.api import Api, data_dir
from shell.apps import app_path
from shell.commands import TABLE, run
from shell.completion import ShellCompleter
from shell.context import Context
from shell.errors import Failure
from shell.live import Live
from shell.local import find_local_run
from shell.tail import Above, Tail, above_prompt
from shell.toolbar import toolbar

HISTORY = "shell-history"  # in the data directory, beside api-url and api-token
REDRAW = 1.0  # seconds between toolbar redraws (each reads the cache, which fetches when old)
STOP_WAIT = 1.0  # seconds a stopped tail's thread is given to end (its socket is shut at once)
BUILTINS = (
    ("use", "pick the app commands act on (shown in the prompt)"),
    ("exit", "leave the shell (Ctrl-D too)"),
)
BUILTIN_HELP = {
    "use": "Usage: use APP\n\nMake APP the app every command acts on (`-a` still wins); "
    "`use` alone shows it.",
    "exit": "Usage: exit\n\nLeave the shell (Ctrl-D on an empty line too), with status 0.",
}
STYLE = Style.from_dict({"app": "bold ansicyan", "bottom-toolbar": "noreverse bg:#303030 #d0d0d0"})


def history(env: Mapping[str, str]) -> tuple[History, str | None]:
    """The history file, private to its user (a typed `config:set` may hold a secret); kept in
    memory, with a note saying why, when it cannot be written."""
    path = data_dir(env) / HISTORY
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
    except OSError as error:
        return InMemoryHistory(), f"dyno: history is not kept ({path}: {error.strerror})"
    return FileHistory(str(path)), None


def keys() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        """Ctrl-C clears the line; typed ahead just after Enter, it finds the prompt done
        (prompt_toolkit's own binding would then fail) and is let go."""
        if not event.app.is_done:
            event.app.exit(exception=KeyboardInterrupt(), style="class:aborting")

    return bindings


def shell_help() -> str:
    rows = [(c.name, c.summary) for c in TABLE] + list(BUILTINS)
    width = max(len(name) for name, _ in rows)
    lines = ["Type a command without `dyno`; Tab completes, Up recalls history.", "", "Commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, text in rows]
    lines += [
        "",
        "`help COMMAND` shows a command's arguments and flags. `logs --tail` follows the logs",
        "above the prompt; Ctrl-C ends it (and clears the line). Ctrl-D or `exit` leaves.",
    ]
    return "\n".join(lines)


class Shell:
    def __init__(self, env: Mapping[str, str], cwd: Path, out: TextIO, err: TextIO) -> None:
        self.env = env
        self.cwd = cwd
        self.out = out
        self.err = err
        self.app: str | None = env.get("DYNO_APP")  # `use APP`: on dynod serve
        self.above = Above()
        self.tail: Tail | None = None
        self.session: PromptSession[str] | None = None
        self.live = Live(self.background_api, self.above.line, self.redraw)

    def context(self) -> Context:
        """A fresh one per command line: the API's address is read again (dynod may have come
        back on another port), and the current app is this shell's."""
        ctx = Context(
            env=self.env,
            cwd=self.cwd,
            out=self.out,
            err=self.err,
            current_app=self.app,
            follow=self.follow if self.session is not None else None,
        )
        ctx.aim()  # a running `dynod start` here, unless `use APP` named one
        return ctx

    def shown(self) -> str | None:
        """The app the commands act on without -a: `use APP`'s, else a running `dynod start`'s
        here, else the git remote `dynod`'s (as one-shot `dyno` picks it)."""
        if self.app is not None:
            return self.app
        local = find_local_run(self.cwd)
        return local.app if local is not None else git.remote_app(self.cwd)

    def background_api(self) -> Api:
        return self.context().api

    def redraw(self) -> None:
        if self.session is not None:
            self.session.app.invalidate()  # thread-safe; nothing while no prompt shows

    # ----- the loop

    def interact(self) -> int:
        kept, note = history(self.env)
        self.session = PromptSession(
            history=kept,
            completer=ThreadedCompleter(ShellCompleter(TABLE, BUILTINS, self.live, self.shown)),
            complete_while_typing=False,  # Tab completes, as in bash and psql
            auto_suggest=AutoSuggestFromHistory(),
            bottom_toolbar=toolbar(self.live, self.shown),
            refresh_interval=REDRAW,
            style=STYLE,
            key_bindings=keys(),
        )
        print("dyno shell: `help` lists the commands, Ctrl-D leaves.", file=self.out, flush=True)
        if note:
            print(note, file=self.err, flush=True)
        self.live.start()
        self.live.get(("apps",))  # the first Tab finds them already here
        try:
            while True:
                try:
                    with above_prompt(self.above):
                        text = self.session.prompt(self.prompt())
                    if not self.line(text):
                        return 0
                except KeyboardInterrupt:  # Ctrl-C: the line is cleared, a tail ends
                    self.stop_tail(say=True)
                except EOFError:  # Ctrl-D
                    return 0
        finally:
            self.stop_tail()
            self.live.close()

    def script(self, lines: TextIO) -> int:
        """Standard input is not a terminal: run its lines in order (`use` carries over);
        the status is the last command's."""
        status = 0
        for text in lines:
            status = self.execute(text)
            if status < 0:
                return 0
        return status

    def prompt(self) -> StyleAndTextTuples:
        app = self.shown()
        if app is None:
            return [("", "dyno> ")]
        return [("", "dyno "), ("class:app", app), ("", "> ")]

    def line(self, text: str) -> bool:
        """Run one line; False when it says to leave."""
        try:
            return self.execute(text) >= 0
        except KeyboardInterrupt:  # Ctrl-C during a command: back to the prompt, a tail ends
            print(file=self.out, flush=True)
            raise
        finally:
            self.live.expire(self.shown())

    def execute(self, text: str) -> int:
        """A command line's status (0, 1, 2, as one-shot `dyno` exits), or -1 for `exit`."""
        try:
            words = shlex.split(text)
        except ValueError as error:
            return self.usage(f"cannot read that line: {error}")
        if words[:1] == ["dyno"]:
            words = words[1:]  # `dyno ps` typed out of habit
        if not words:
            return 0
        name, args = words[0], words[1:]
        if name in ("exit", "quit"):
            return -1 if not args else self.usage("`exit` takes no arguments")
        if name == "use":
            return self.use(args)
        if name == "help" and args and args[0] in BUILTIN_HELP:
            print(BUILTIN_HELP[args[0]], file=self.out, flush=True)
            return 0
        if name == "help" and not args:
            print(shell_help(), file=self.out, flush=True)
            return 0
        return run(self.context(), words)

    def usage(self, message: str) -> int:
        print(f"dyno: {message}", file=self.err, flush=True)
        return 2

    def use(self, args: list[str]) -> int:
        if len(args) > 1 or args[:1] and args[0].startswith("-"):
            return self.usage("usage: use APP")
        if not args:
            which = self.shown() or "none: `use APP` picks one (`apps` lists them)"
            print(f"Current app: {which}", file=self.out, flush=True)
            return 0
        try:
            found = self.context().api.get(app_path(args[0]))
        except Failure as error:
            print(f"dyno: {error}", file=self.err, flush=True)
            return 1
        self.app = str(found.get("name") or args[0]) if isinstance(found, dict) else args[0]
        return 0

    # ----- following logs

    def follow(self, url: str) -> None:
        """`logs --tail` at the prompt: the stream goes on above the prompt until Ctrl-C."""
        self.stop_tail()
        self.tail = Tail(self.context().api, url, self.above)
        self.tail.start()
        print("Following the logs above the prompt; Ctrl-C ends it.", file=self.err, flush=True)

    def stop_tail(self, say: bool = False) -> None:
        if self.tail is None:
            return
        self.tail.stop()
        self.tail.join(STOP_WAIT)  # no line of it comes after this
        self.tail = None
        if say:
            print("Stopped following the logs.", file=self.err, flush=True)


def main(env: Mapping[str, str], cwd: Path) -> int:
    shell = Shell(env, cwd, sys.stdout, sys.stderr)
    if not sys.stdin.isatty():
        return shell.script(sys.stdin)
    return shell.interact()
