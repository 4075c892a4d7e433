"""`herdsman check`'s look at the programs the commands name.

A program missing from the PATH is a warning, not an error: the PATH, or the
program, may be there when the service runs (another user, a later install). The
warning names the key, and the nearest program that is there.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path

from herdsman.config.models import Config


def missing_programs(config: Config, environ: Mapping[str, str]) -> list[str]:
    """One sentence per service whose command's program cannot be found now."""
    warnings = []
    for name, svc in config.services.items():
        if svc.shell:
            continue  # /bin/sh finds the program, if any: the string is not ours to read
        program = svc.command[0]
        path = svc.env.get("PATH", environ.get("PATH", os.defpath))
        where = f"services.{name}.command"
        if "/" in program:
            full = svc.cwd / program
            if not full.is_file():
                warnings.append(f"{where}: {program} does not exist (looked for {full})")
            elif not os.access(full, os.X_OK):
                warnings.append(f"{where}: {program} is not executable")
            continue
        if _on_path(program, path):
            continue
        close = difflib.get_close_matches(program, _programs(path), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        warnings.append(f"{where}: {program!r} is not on the PATH{hint}")
    return warnings


def _on_path(program: str, path: str) -> bool:
    for directory in path.split(os.pathsep):
        candidate = Path(directory or ".") / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return True
    return False


def _programs(path: str) -> list[str]:
    """Every executable on `path`, for a "did you mean"."""
    names: dict[str, None] = {}
    for directory in path.split(os.pathsep):
        try:
            entries = os.scandir(directory or ".")
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_file() and os.access(entry.path, os.X_OK):
                        names.setdefault(entry.name)
                except OSError:
                    continue
    return list(names)
