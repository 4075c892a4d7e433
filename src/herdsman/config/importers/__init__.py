"""Importers: a Procfile or a supervisord.conf in, an equivalent herdsman.toml out.

Each importer returns the TOML text (with comments where herdsman has no exact
equivalent) and the warnings to show on stderr; problems that make the input
unusable raise ConfigError with one sentence naming the file and where in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Imported:
    """What an importer produced: herdsman.toml text and one sentence per warning."""

    toml: str
    warnings: list[str] = field(default_factory=list)
