"""The control API: HTTP/1.1 + JSON on the daemon's Unix socket (and optional TCP).

Import the pieces from their modules (`herdsman.api.server.ApiServer`,
`herdsman.api.controller.Controller`); this package imports nothing on its own so
that importing the protocol never pulls in the HTTP stack.
"""
