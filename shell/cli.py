"""The `dyno` entry point: `dyno COMMAND …` runs one command of the table and exits with its
status (0 done, 1 refused or failed, 2 usage). `dyno` alone is the interactive shell
(shell/interactive.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from shell.commands import TABLE, run
from shell.context import Context
from shell.grammar import overview


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words in (["--help"], ["-h"]):
        print(overview(TABLE))
        return 0
    if not words:
        from shell import interactive  # prompt_toolkit only where it is used

        return interactive.main(os.environ, Path.cwd())
    ctx = Context(env=os.environ, cwd=Path.cwd(), out=sys.stdout, err=sys.stderr)
    try:
        return run(ctx, words)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`dyno logs | head`): stop quietly, without a second error
        # when Python flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
