"""Widget tests fail when a widget callback lets an exception escape (the page would show a traceback)."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def no_escaped_callback_errors(caplog):
    caplog.set_level(logging.WARNING)
    yield
    escaped = [r.getMessage() for r in caplog.records if "Exception in callback" in r.getMessage()]
    assert not escaped, f"a widget callback raised: {escaped[0]}"
