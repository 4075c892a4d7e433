"""Fixtures for the control API tests: a fake controller and a running server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.harness import TOKEN, FakeController, ServerThread, running


@pytest.fixture
def fake() -> FakeController:
    return FakeController()


@pytest.fixture
def api(fake: FakeController, tmp: Path) -> Iterator[ServerThread]:
    """The server on `tmp/api.sock` and on a free TCP port of 127.0.0.1, with TOKEN."""
    with running(fake, tmp / "api.sock", tcp=("127.0.0.1", 0), token=TOKEN) as server:
        yield server
