"""Errors of control requests (start, stop, signal...), shared by runtime and API.

A request that cannot be carried out raises `ControlError` with the HTTP-like
status the API answers with and one sentence for the user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def refuse_while_stopping(stopping: asyncio.Event) -> None:
    """Nothing is started, reloaded or re-executed once the daemon stops everything."""
    if stopping.is_set():
        raise ControlError(409, "herdsman is shutting down")
