"""Where an export goes: files in a directory, or one stream on stdout.

Warnings go to stderr either way, one `herdsman: warning:` line each, so a pipe
into `kubectl apply -f -` or a file carries only the units or manifests.
"""

from __future__ import annotations

import sys
from pathlib import Path

from herdsman.export.common import Export, ExportError


def write_export(result: Export, directory: str | None, target: str) -> None:
    for warning in result.warnings:
        print(f"herdsman: warning: {warning}", file=sys.stderr)
    if directory is None:
        sys.stdout.write(stream(result, target))
        return
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in result.files:
            (out / name).write_text(text, encoding="utf-8")
    except OSError as err:
        raise ExportError(f"cannot write to {out}: {err.strerror or err}") from None
    for name, _ in result.files:
        print(out / name)


def stream(result: Export, target: str) -> str:
    """All files in one text: a YAML multi-document stream for Kubernetes, units
    each under a `# --- file: NAME` line for systemd.
    """
    if target == "kubernetes":
        return "".join(f"---\n{text}" for _, text in result.files)
    return "\n".join(f"# --- file: {name}\n{text}" for name, text in result.files)
