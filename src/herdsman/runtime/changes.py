"""The change feed: every change of an instance, once, in order, to every subscriber.

The runner (supervisor.py) publishes `(managed, old, new, event)` once per change
the herd reports, after the actions of the events that caused it have been carried
out (so a spawn's change shows its process). Everything that watches the herd
subscribes here, in one place (daemon.py): state.json, hooks, the daemon's log lines
and its status to systemd, `/v1/events`, the console of `up`. A subscriber runs on
the loop's thread and must not wait; what takes time (a hook) it queues.

`/v1/events` is served by `EventStream`: a follower is subscribed at once, so the
API can take a snapshot of every instance right after, in the same loop turn, and
no change falls between the snapshot and the stream or shows in both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from herdsman.core.lifecycle import Event
from herdsman.core.states import State
from herdsman.runtime.documents import EventDocument, InstanceDocument, event_document
from herdsman.runtime.followers import Broadcast, Follower

if TYPE_CHECKING:
    from herdsman.runtime.supervisor import Managed

# (instance, the state it left, the state it entered, the event): `old is new` when
# only its process or its readiness changed.
Subscriber = Callable[["Managed", State, State, Event], None]


class ChangeFeed:
    """The subscribers of the herd's changes, called in the order they subscribed."""

    __slots__ = ("_subscribers",)

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, managed: Managed, old: State, new: State, event: Event) -> None:
        for subscriber in self._subscribers:
            subscriber(managed, old, new, event)


class EventStream:
    """`/v1/events`: each change as a document, to every follower of the stream."""

    def __init__(self, document: Callable[[Managed], InstanceDocument]) -> None:
        self._document = document
        self._followers: Broadcast[EventDocument] = Broadcast()

    def changed(self, managed: Managed, old: State, new: State, event: Event) -> None:
        if self._followers.followed:
            # The instance's whole state as `status` shows it (but the resource samples,
            # which no change makes fresh), so a follower (`top`) never asks after one.
            doc = event_document(self._document(managed), old, new, time.time())
            self._followers.publish(doc)

    def follow(self) -> Follower[EventDocument]:
        """A follower of every change from now on (subscribed at the call)."""
        return self._followers.follow()

    def end(self) -> None:
        self._followers.end()
