"""Logging is configured once, by the command line: records reach stderr as the lines dynod
prints there do, with their tracebacks; libraries' chatter below WARNING does not."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_the_cli_sends_records_and_tracebacks_to_stderr() -> None:
    program = textwrap.dedent(
        """
        import logging
        from dynod.cli import configure_logging
        configure_logging()
        configure_logging()  # once is what counts: a second call adds nothing
        logging.getLogger("dynod.platform").info("dynod serve: something worth knowing")
        logging.getLogger("trio").info("chatter")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("dynod.api").exception("dynod API: GET /apps failed")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stderr.splitlines()
    assert lines[:3] == [
        "dynod serve: something worth knowing",
        "dynod API: GET /apps failed",
        "Traceback (most recent call last):",
    ], done.stderr
    assert lines[-1] == "RuntimeError: boom" and "chatter" not in done.stderr
    assert done.stdout == ""
