"""Errors at the API edge: each DynodError answered by its own status hint and id, and damaged
state answered as dynod's own failure, with its traceback in dynod's log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dynod.errors import Conflict, Damaged, DynodError, Invalid, NotFound, ParseError
from dynod.platform.root import Platform
from tests.dynod.api.test_api import Client, with_api


def test_every_error_kind_carries_its_hint_and_id() -> None:
    hints: dict[type[DynodError], tuple[int, str]] = {
        DynodError: (422, "invalid_params"),
        ParseError: (422, "invalid_params"),
        Invalid: (422, "invalid_params"),
        NotFound: (404, "not_found"),
        Conflict: (409, "conflict"),
        Damaged: (500, "internal_error"),
    }
    for kind, (status, id) in hints.items():
        assert (kind.status_hint, kind.id) == (status, id), kind


def test_a_damaged_ledger_is_a_logged_500(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(client: Client, platform: Platform) -> None:
        assert (await client.request("POST", "/apps", {"name": "shop"})).status == 201
        app = platform.apps.find("shop")
        platform.apps._ledgers.pop(app.id, None)  # read the file again, as after a restart
        damaged = b"00000000 2 {}\n" + b"00000000 2 {}\n"  # a bad record before the last
        (platform.apps.dir(app) / "releases.ledger").write_bytes(damaged)

        caplog.clear()
        answer = await client.request("GET", "/apps/shop/releases")
        assert answer.status == 500
        assert answer.json() == {
            "id": "internal_error",
            "message": "dynod failed to handle this request; see its log.",
        }
        [record] = [r for r in caplog.records if r.name.startswith("dynod.api")]
        assert record.levelno == logging.ERROR
        assert "GET /apps/shop/releases failed" in record.getMessage()
        assert record.exc_info is not None and isinstance(record.exc_info[1], Damaged)
        assert "releases.ledger is damaged at byte 0" in caplog.text  # the traceback's last line
        assert "Traceback" in caplog.text

        # Refusals of what was asked keep their own answers.
        missing = await client.request("GET", "/apps/nothing")
        assert (missing.status, missing.json()["id"]) == (404, "not_found")
        taken = await client.request("POST", "/apps", {"name": "shop"})
        assert (taken.status, taken.json()["id"]) == (409, "conflict")

    caplog.set_level(logging.INFO, logger="dynod")
    with_api(tmp_path, scenario)
