"""What a command runs with: the environment and directory it was started in, where its output
goes, the API client, and which app it acts on. One-shot `dyno` builds one per command; the
interactive shell makes one per command line, with its `current_app` (`use APP`)."""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

import attrs

from shell import git
from shell.api import Api
from shell.errors import UsageError
from shell.grammar import Parsed
from shell.local import LocalRun, find_local_run
from shell.output import to_json


@attrs.define
class Context:
    env: Mapping[str, str]
    cwd: Path
    out: TextIO
    err: TextIO
    current_app: str | None = None
    clock: Callable[[], float] = time.time
    # Where `logs --tail` sends its stream URL instead of following it here (the interactive
    # shell follows it in the background, above its prompt); None: follow it until Ctrl-C.
    follow: Callable[[str], None] | None = None
    _api: Api | None = None
    local: LocalRun | None = None  # the running `dynod start` this command steers (see `aim`)

    @property
    def api(self) -> Api:
        if self.local is not None:
            return self.local.api()
        if self._api is None:
            self._api = Api.from_env(self.env)
        return self._api

    def aim(self, parsed: Parsed | None = None) -> None:
        """Before each command (and before the shell reads the API between commands, without
        `parsed`): a running `dynod start` at or above the current directory is the one to
        talk to, unless the command names an app (`-a`, the shell's `use APP`, `DYNO_APP`) or
        an API (`DYNOD_API_URL`): those reach dynod serve."""
        named = (
            (parsed.value("app") if parsed is not None else None)
            or self.current_app
            or self.env.get("DYNO_APP")
            or self.env.get("DYNOD_API_URL")
        )
        self.local = None if named else find_local_run(self.cwd)

    def app(self, parsed: Parsed) -> str:
        """`-a/--app`, else the shell's current app, else `DYNO_APP`, else the running
        `dynod start`'s app (`aim`), else the git remote named `dynod` in the current
        directory."""
        name = (
            parsed.value("app")
            or self.current_app
            or self.env.get("DYNO_APP")
            or (self.local.app if self.local is not None else None)
            or git.remote_app(self.cwd)
        )
        if not name:
            raise UsageError(
                "no app given: pass -a APP, set DYNO_APP, or add the git remote `dynod` "
                "(`dyno git:remote -a APP`)"
            )
        return name

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            print(line, file=self.out)
        self.out.flush()

    def json(self, data: Any) -> None:
        self.say(to_json(data))

    def note(self, text: str) -> None:
        """Progress that is not the command's result (so `--json` output stays clean)."""
        print(text, file=self.err, flush=True)

    def copy_stream(self, chunks: Iterable[bytes]) -> None:
        """Show a stream's text as it arrives (build output, logs); a UTF-8 character split
        across chunks stays whole, and a last line without a newline gets one."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        last = ""
        for chunk in chunks:
            last = self._write(decoder.decode(chunk)) or last
        last = self._write(decoder.decode(b"", final=True)) or last
        if last and not last.endswith("\n"):
            self._write("\n")

    def _write(self, text: str) -> str:
        if text:
            self.out.write(text)
            self.out.flush()
        return text
