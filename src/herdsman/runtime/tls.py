"""TLS only when an https URL asks for it.

asyncio imports ssl whether a program speaks TLS or not, and OpenSSL's libraries
with the module's objects are 4.3 MB of an idle daemon's 26 MB: only an https
probe or webhook needs them. Imported before asyncio (cli/up.py imports it first
of all), this module has asyncio load as on a Python built without ssl;
`ssl_module()` loads ssl on first use and reloads asyncio's sslproto, which
builds TLS connections from the ssl it found when it was imported. (The rest of
asyncio consults ssl only for what the daemon never does: TLS servers,
`start_tls`, ssl sockets handed to the `sock_*` methods.)
"""

from __future__ import annotations

import sys
from types import ModuleType

if "asyncio" not in sys.modules and "ssl" not in sys.modules:
    sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` fails: asyncio goes without
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]


def ssl_module() -> ModuleType:
    """The ssl module, with asyncio able to use it."""
    import asyncio.sslproto
    import importlib
    import ssl

    if getattr(asyncio.sslproto, "ssl", None) is None:
        importlib.reload(asyncio.sslproto)
    return ssl
