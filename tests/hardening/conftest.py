"""Fixtures of the hostile-client tests (issue 16)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Fails the test if anything logged a warning, an error or a traceback while it ran: what
    a client sends is answered, not logged as the server's problem (defect 16)."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    noisy = [r for r in caplog.get_records("call") if r.levelno >= logging.WARNING or r.exc_info]
    assert not noisy, [f"{r.name}: {r.getMessage()}" for r in noisy]
