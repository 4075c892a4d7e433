"""What the API server needs from the daemon: the `Controller` protocol and `ControlError`.

The API layer holds no supervision logic; every route is one call on a Controller.
The runtime's daemon satisfies this protocol structurally; of runtime, api imports
only the ControlError it raises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

# A refused request: the API answers `status` (400 bad value, 404 nothing matches,
# 409 conflicting state) with `{"error": message}`. It lives in runtime because the
# runtime raises it and must not import api; this module only re-exports it.
from herdsman.runtime.control import ControlError

if TYPE_CHECKING:
    from herdsman.runtime.documents import (
        EventDocument,
        InstanceDocument,
        LogDocument,
        ResultDocument,
        StatusColumns,
        StatusDocument,
    )

__all__ = ["ControlError", "Controller"]


class Controller(Protocol):
    """The daemon as the API sees it. Instances are the `status --json` objects.

    Every method runs on the event loop thread; the synchronous ones must not block.
    """

    def status(self) -> StatusDocument:
        """`{"daemon": {"pid", "version", "config", "started_at"}, "services": [instance, ...]}`."""
        ...

    def columns(self, keys: list[str]) -> StatusColumns:
        """`{"daemon": {...}, "columns": {key: [value per instance], ...}}` for `keys`,
        each a key of an instance document."""
        ...

    def instances(self) -> list[InstanceDocument]: ...

    def instance(self, name: str) -> InstanceDocument:
        """One instance by exact name; ControlError(404) when there is none."""
        ...

    async def start(self, pattern: str, wait: bool, timeout: float | None) -> ResultDocument:  # noqa: ASYNC109 -- the API's ?timeout=: the answer says timed_out, it does not fail
        """`{"instances": [...], "failed": [names], "timed_out": bool}`; ControlError(404)
        when nothing matches.

        `pattern` is an instance name, a service name or a shell glob, already
        percent-decoded. With `wait`, returns once every matched instance runs, or
        as soon as one cannot get there (it failed, exited, stopped, or is blocked),
        or after `timeout` seconds (None: no limit).
        """
        ...

    async def stop(self, pattern: str, wait: bool, timeout: float | None) -> ResultDocument:  # noqa: ASYNC109 -- the API's ?timeout=: the answer says timed_out, it does not fail
        """As `start`: with `wait`, once none has a process."""
        ...

    async def restart(self, pattern: str, wait: bool, timeout: float | None) -> ResultDocument:  # noqa: ASYNC109 -- the API's ?timeout=: the answer says timed_out, it does not fail
        """As `start`."""
        ...

    def signal(self, pattern: str, signal: str | int) -> ResultDocument:
        """As `start` (`failed` empty); ControlError(400) for an unknown signal.

        Names come as the client wrote them (`HUP`, `SIGHUP`); numbers are already
        checked to lie in 1..NSIG-1.
        """
        ...

    def logs(self, instance: str | None, n: int) -> list[LogDocument]:
        """The last `n` lines, oldest first: `{"time", "instance", "stream", "line"}`."""
        ...

    def follow_logs(self, instance: str | None) -> AsyncIterator[LogDocument]:
        """Lines written from now on, as they come, until the iterator is closed.

        The API calls `follow_logs` and then `logs` in one step and closes the
        iterator with `aclose()` (when it has one) once the client is gone. Only a
        subscription made when called (not at the first iteration, as an `async def`
        generator does) guarantees no line falls between the backlog and the stream;
        such an iterator must then unsubscribe in `aclose()` even if never iterated.
        """
        ...

    def events(self) -> AsyncIterator[EventDocument]:
        """One JSON-serialisable dict per state change, until closed (as `follow_logs`)."""
        ...

    async def shutdown(self) -> None:
        """Begin a graceful stop of everything; return once it has begun."""
        ...

    async def reload(self) -> dict[str, Any]:
        """Re-read the config and apply the difference: `{"added", "removed", "changed",
        "unchanged", "not_applied", "warnings"}`; ControlError(400) with every error when invalid
        (nothing changes), 409 while another reload runs."""
        ...

    async def reexec(self) -> dict[str, Any]:
        """Check that the code on disk imports and validates the config: `{"pid",
        "reexecs"}`; ControlError (400 invalid config, 500 broken code, 409 busy)
        and nothing changes otherwise. The exec itself waits for `begin_reexec`."""
        ...

    async def begin_reexec(self) -> None:
        """Runs once the reply to `reexec` has been sent: the daemon execs."""
        ...

    def metrics(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        ...
