"""The OpenAPI 3.1 document served at /openapi.json: the control API's contract.

The bounds the routes enforce (log line count, signal numbers, body size) are
defined here, next to the schema that states them, so the two cannot drift.
"""

from __future__ import annotations

import signal
from typing import Any

from herdsman import __version__
from herdsman.core.states import State

MAX_LOG_LINES = 100_000
MAX_SIGNAL = signal.NSIG - 1  # 64 on Linux: the last real-time signal
MAX_BODY = 64 * 1024
MAX_WAIT = 86_400.0  # seconds a start/stop/restart may be asked to wait


def _any_case(word: str) -> str:
    return "".join(f"[{c}{c.lower()}]" if c.isalpha() else c for c in word)


# `HUP`, `SIGHUP`, `hup`...: this system's signal names, in any case, `SIG` optional.
# Spelled out letter by letter because JSON Schema patterns have no ignore-case flag.
SIGNAL_NAME_PATTERN = "^({})?({})$".format(
    _any_case("SIG"),
    "|".join(_any_case(name[3:]) for name in sorted(signal.Signals.__members__)),
)

STATES = [state.value for state in State]

JSON = "application/json"
NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _response(ref: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{ref}"}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _nullable(type_: str, **extra: Any) -> dict[str, Any]:
    return {"type": [type_, "null"], **extra}


# Every operation can also answer 401 (TCP without the token), 405, 413 (body over
# MAX_BODY), 400 for malformed HTTP and 500; `default` covers those with Error.
_COMMON_ERRORS = {"401": _response("Unauthorized"), "default": _response("Error")}

_PATTERN = {
    "name": "pattern",
    "in": "path",
    "required": True,
    "description": "An instance name, a service name (all its replicas) or a shell glob; "
    "percent-decoded, so `web.*` and `web%2A` are the same.",
    "schema": {"type": "string", "minLength": 1},
}

_WAIT_BODY = {
    "required": False,
    "description": "Optional; without a body `wait` is false.",
    "content": {JSON: {"schema": _ref("ActionRequest")}},
}


def _action(verb: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"{verb}Instances",
            "summary": summary,
            "parameters": [_PATTERN],
            "requestBody": _WAIT_BODY,
            "responses": {
                "200": _json(
                    "The matched instances as they are now, and the names that failed.",
                    _ref("ActionResult"),
                ),
                "400": _response("BadRequest"),
                "404": _response("NotFound"),
                "409": _response("Conflict"),
                **_COMMON_ERRORS,
            },
        }
    }


_INSTANCE = {
    "type": "object",
    "required": [
        "name",
        "service",
        "replica",
        "state",
        "pid",
        "ready",
        "health",
        "restarts",
        "exit_code",
        "exit_signal",
        "uptime",
        "cpu_percent",
        "rss_bytes",
        "message",
    ],
    "properties": {
        "name": {"type": "string", "description": "`service` or `service.replica`."},
        "service": {"type": "string"},
        "replica": {"type": "integer", "minimum": 0},
        "state": {"type": "string", "enum": STATES},
        "pid": _nullable("integer", minimum=1),
        "ready": {"type": "boolean"},
        "health": {
            "type": ["string", "null"],
            "enum": ["healthy", "unhealthy", "unknown", None],
            "description": "null when the service has no health check.",
        },
        "restarts": {"type": "integer", "minimum": 0},
        "exit_code": _nullable("integer"),
        "exit_signal": _nullable("string", description="A name such as `SIGKILL`."),
        "uptime": _nullable("number", minimum=0, description="Seconds."),
        "cpu_percent": _nullable("number", minimum=0),
        "rss_bytes": _nullable("integer", minimum=0),
        "message": _nullable("string", description="The last error or reason, one sentence."),
        "processes": _nullable("integer", minimum=0, description="In its process tree."),
        "open_fds": _nullable("integer", minimum=0),
        "blocked": _nullable(
            "string",
            description="Why this instance, waiting for its dependencies, can no longer "
            "start without someone asking again: `depends on db, which failed (...)`.",
        ),
        "since": _nullable("string", description="When it entered its state (ISO-8601 UTC)."),
        "command": {"type": "array", "items": {"type": "string"}, "description": "Its argv."},
        "checks": {
            "type": "object",
            "description": "The last result of its readiness probe (`ready`) and health "
            "check (`health`) on its current process: `passed`, or why not.",
            "additionalProperties": {"type": "string"},
        },
    },
}
# The keys `GET /v1/status?columns=` can ask for: every key of an Instance.
INSTANCE_KEYS = tuple(_INSTANCE["properties"])

# What an Event carries of an Instance: all but its name and the resource samples
# (no state change makes them fresh).
_NOT_IN_EVENTS = ("name", "cpu_percent", "rss_bytes", "processes", "open_fds")
_EVENT_FIELDS = [key for key in _INSTANCE["properties"] if key not in _NOT_IN_EVENTS]

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "herdsman control API",
        "version": __version__,
        "description": "Served on the daemon's Unix socket (guarded by its file mode) and, "
        "when configured, on TCP, where every request needs `Authorization: Bearer <token>`.",
    },
    "security": [{}, {"bearer": []}],
    "paths": {
        "/v1/status": {
            "get": {
                "operationId": "getStatus",
                "summary": "The daemon and every instance: the `status --json` document.",
                "parameters": [
                    {
                        "name": "columns",
                        "in": "query",
                        "required": False,
                        "description": "Only these keys of each instance, as one list per key"
                        " with a value per instance (StatusColumns), instead of `services`:"
                        " what `herdsman status` draws its table from.",
                        "style": "form",
                        "explode": False,
                        "schema": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "string", "enum": list(INSTANCE_KEYS)},
                        },
                    }
                ],
                "responses": {
                    "200": _json(
                        "Status, or with `columns` StatusColumns.",
                        {"oneOf": [_ref("Status"), _ref("StatusColumns")]},
                    ),
                    "400": _response("BadRequest"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/v1/instances": {
            "get": {
                "operationId": "listInstances",
                "summary": "Every instance.",
                "responses": {
                    "200": _json("Instances.", {"type": "array", "items": _ref("Instance")}),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/v1/instances/{name}": {
            "get": {
                "operationId": "getInstance",
                "summary": "One instance by its exact name.",
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1},
                    }
                ],
                "responses": {
                    "200": _json("The instance.", _ref("Instance")),
                    "404": _response("NotFound"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/v1/instances/{pattern}/start": _action("start", "Start the matching instances."),
        "/v1/instances/{pattern}/stop": _action("stop", "Stop the matching instances."),
        "/v1/instances/{pattern}/restart": _action(
            "restart", "Stop, then start, the matching instances."
        ),
        "/v1/instances/{pattern}/signal": {
            "post": {
                "operationId": "signalInstances",
                "summary": "Send a signal to the process groups of the matching instances.",
                "parameters": [_PATTERN],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("SignalRequest")}},
                },
                "responses": {
                    "200": _json("The instances signalled.", _ref("ActionResult")),
                    "400": _response("BadRequest"),
                    "404": _response("NotFound"),
                    "409": _response("Conflict"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/v1/logs": {
            "get": {
                "operationId": "getLogs",
                "summary": "The last lines of output, oldest first, one JSON object a line.",
                "parameters": [
                    {
                        "name": "instance",
                        "in": "query",
                        "required": False,
                        "description": "Only what this instance name, service name or "
                        "glob names; empty or absent for all.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "n",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": MAX_LOG_LINES,
                            "default": 100,
                        },
                    },
                    {
                        "name": "follow",
                        "in": "query",
                        "required": False,
                        "description": "`true`/`1`: after the last n lines, stream new ones "
                        "(chunked) until the client goes away.",
                        "schema": {
                            "type": "string",
                            "enum": ["true", "false", "1", "0"],
                            "default": "false",
                        },
                    },
                ],
                "responses": {
                    "200": {
                        "description": "Newline-delimited JSON: one LogLine per line.",
                        "content": {NDJSON: {"schema": _ref("LogLine")}},
                    },
                    "400": _response("BadRequest"),
                    "404": _response("NotFound"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/v1/events": {
            "get": {
                "operationId": "getEvents",
                "summary": "Server-sent events, one per state change, until the client goes away.",
                "parameters": [
                    {
                        "name": "snapshot",
                        "in": "query",
                        "required": False,
                        "description": "`true`/`1`: first send `event: snapshot` with the"
                        " status document (`data: ` and a Status as JSON): every instance as it"
                        " is when the stream begins. Every change after it follows, none"
                        " before it: a change is in the snapshot or in the stream, never both.",
                        "schema": {
                            "type": "string",
                            "enum": ["true", "false", "1", "0"],
                            "default": "false",
                        },
                    }
                ],
                "responses": {
                    "200": {
                        "description": "Per event, `data: ` and an Event as JSON, then a "
                        "blank line (with `snapshot`, first `event: snapshot`, `data: ` and a "
                        "Status).",
                        "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
                    },
                    **_COMMON_ERRORS,
                },
            }
        },
        "/v1/shutdown": {
            "post": {
                "operationId": "shutdown",
                "summary": "Stop every service in reverse dependency order, then the daemon exits.",
                "description": "Answers once the shutdown has been asked for, before it begins.",
                "responses": {
                    "202": _json(
                        "Shutdown begins.",
                        {
                            "type": "object",
                            "required": ["shutting_down"],
                            "properties": {"shutting_down": {"const": True}},
                            "additionalProperties": False,
                        },
                    ),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/v1/reload": {
            "post": {
                "operationId": "reload",
                "summary": "Re-read the config and apply the difference.",
                "description": "Added instances start, removed ones stop, changed ones "
                "restart in dependency order, unchanged ones keep running with the same pid. "
                "An invalid config changes nothing: 400 with every error, one per line.",
                "responses": {
                    "200": _json(
                        "What the reload did, by instance name.",
                        {
                            "type": "object",
                            "required": ["added", "removed", "changed", "unchanged", "not_applied"],
                            "properties": {
                                key: {"type": "array", "items": {"type": "string"}}
                                for key in (
                                    "added",
                                    "removed",
                                    "changed",
                                    "unchanged",
                                    "not_applied",
                                    "warnings",
                                )
                            },
                            "additionalProperties": False,
                        },
                    ),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/v1/reexec": {
            "post": {
                "operationId": "reexec",
                "summary": "Replace the daemon's process image with the code now on disk.",
                "description": "The new code must import and validate the config first, "
                "or nothing changes (400/500 with the reason). Answers before the exec; "
                "same pid, every service keeps running with its pid and output. Wait "
                "for `reexecs` in /v1/status to grow to know the new image answers.",
                "responses": {
                    "202": _json(
                        "The re-exec begins.",
                        {
                            "type": "object",
                            "required": ["pid", "reexecs"],
                            "properties": {
                                "pid": {"type": "integer", "minimum": 1},
                                "reexecs": {"type": "integer", "minimum": 1},
                            },
                            "additionalProperties": False,
                        },
                    ),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "Metrics in the Prometheus text exposition format.",
                "responses": {
                    "200": {
                        "description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_COMMON_ERRORS,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document.",
                "responses": {"200": _json("OpenAPI 3.1.", {"type": "object"}), **_COMMON_ERRORS},
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "Required on TCP only; the Unix socket needs none.",
            }
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string", "description": "One sentence."}},
                "additionalProperties": False,
            },
            "Instance": _INSTANCE,
            "Daemon": {
                "type": "object",
                "required": ["pid", "version", "config", "started_at"],
                "properties": {
                    "pid": {"type": "integer", "minimum": 1},
                    "version": {"type": "string"},
                    "config": {"type": "string", "description": "The config file's path."},
                    "started_at": {"type": "string", "format": "date-time"},
                    "shutting_down": {"type": "boolean"},
                    "reexecs": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "How often this daemon replaced its process image.",
                    },
                    "image_started_at": {
                        "type": "string",
                        "format": "date-time",
                        "description": "When the current process image started.",
                    },
                },
            },
            "Status": {
                "type": "object",
                "required": ["daemon", "services"],
                "properties": {
                    "daemon": _ref("Daemon"),
                    "services": {"type": "array", "items": _ref("Instance")},
                },
            },
            "StatusColumns": {
                "type": "object",
                "required": ["daemon", "columns"],
                "properties": {
                    "daemon": _ref("Daemon"),
                    "columns": {
                        "type": "object",
                        "description": "Each key asked for, with a list of its values: one"
                        " per instance, in the same order in every list.",
                        "additionalProperties": {"type": "array", "items": {}},
                    },
                },
            },
            "ActionRequest": {
                "type": "object",
                "properties": {
                    "wait": {
                        "type": "boolean",
                        "default": False,
                        "description": "Answer once every matched instance got there "
                        "(start: running; stop: no process), or one of them cannot "
                        "(it failed, exited, was stopped, or is blocked).",
                    },
                    "timeout": {
                        "type": ["number", "null"],
                        "exclusiveMinimum": 0,
                        "maximum": MAX_WAIT,
                        "description": "With `wait`: answer after this many seconds at the "
                        "latest (`timed_out` is then true). Default: no limit.",
                    },
                },
                "additionalProperties": False,
            },
            "SignalRequest": {
                "type": "object",
                "required": ["signal"],
                "properties": {
                    "signal": {
                        "oneOf": [
                            {
                                "type": "string",
                                "pattern": SIGNAL_NAME_PATTERN,
                                "description": "A name, in any case: `HUP` or `SIGHUP`.",
                            },
                            {"type": "integer", "minimum": 1, "maximum": MAX_SIGNAL},
                        ]
                    }
                },
                "additionalProperties": False,
            },
            "ActionResult": {
                "type": "object",
                "required": ["instances", "failed"],
                "properties": {
                    "instances": {"type": "array", "items": _ref("Instance")},
                    "failed": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Names of the instances that did not reach the goal "
                        "(with `wait`: it ended, it is blocked, or time ran out; each "
                        "instance's `message` says why).",
                    },
                    "timed_out": {
                        "type": "boolean",
                        "description": "The wait ended at its `timeout`, not with an answer.",
                    },
                },
            },
            "Event": {
                "type": "object",
                "description": "An instance changed (sent as server-sent events): the"
                " state it left (`previous`) and the one it entered (`state`), and its other"
                " fields as an Instance shows them (`instance` is its name; the resource"
                " samples are left out).",
                "required": [
                    "time",
                    "instance",
                    "previous",
                    *(key for key in _EVENT_FIELDS if key in _INSTANCE["required"]),
                ],
                "properties": {
                    "time": {"type": "string", "format": "date-time"},
                    "instance": {"type": "string"},
                    "previous": {"type": "string", "enum": STATES},
                    **{key: _INSTANCE["properties"][key] for key in _EVENT_FIELDS},  # type: ignore[index]
                },
            },
            "LogLine": {
                "type": "object",
                "required": ["time", "instance", "stream", "line"],
                "properties": {
                    "time": {"type": "string", "format": "date-time"},
                    "instance": {"type": "string"},
                    "stream": {"type": "string", "enum": ["out", "err"]},
                    "line": {"type": "string"},
                    "partial": {
                        "type": "boolean",
                        "description": "Present (true) on a piece of a line longer than 64 KiB"
                        " that the next line of the instance continues.",
                    },
                },
            },
        },
        "responses": {
            "BadRequest": _json("A parameter or the body is invalid.", _ref("Error")),
            "NotFound": _json("Nothing matches the name or pattern.", _ref("Error")),
            "Conflict": _json("The instances are in a state that forbids this.", _ref("Error")),
            "Unauthorized": {
                "description": "TCP only: the bearer token is missing or wrong.",
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                "content": {JSON: {"schema": _ref("Error")}},
            },
            "Error": _json(
                "Any other error: 400 malformed HTTP, 405 wrong method (with `Allow`), "
                f"413 body over {MAX_BODY} bytes, 500 a fault in the daemon.",
                _ref("Error"),
            ),
        },
    },
}
