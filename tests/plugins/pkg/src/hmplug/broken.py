"""A plugin module that cannot even be imported."""

from __future__ import annotations

RATIO = 1 / 0


def hook(event: object) -> None:
    pass
