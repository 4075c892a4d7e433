"""Export: the services of a validated config as systemd units or Kubernetes manifests.

This layer reads the config models and never the runtime. Each exporter returns an
`Export` (file names and texts, plus warnings for what has no equivalent); the CLI
prints or writes them.
"""

from herdsman.export.common import Export, ExportError

__all__ = ["Export", "ExportError"]
