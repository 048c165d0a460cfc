"""Any connection the router drops on an unexpected exception fails the test that caused it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_router_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING, logger="router")
    yield
    errors = [
        r for r in caplog.records if r.name.startswith("router") and r.levelno >= logging.ERROR
    ]
    assert not errors, [r.getMessage() for r in errors]
