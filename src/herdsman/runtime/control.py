"""Errors of control requests (start, stop, signal...), shared by runtime and API.

A request that cannot be carried out raises `ControlError` with the HTTP-like
status the API answers with and one sentence for the user.
"""

from __future__ import annotations


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
