"""Followers of the daemon's streams for the API: log lines (tails.py) and events.

A follower is subscribed from the moment it is created, not from its first read,
so the API can take a backlog (or a snapshot) right after and no item slips in
between; the daemon ends a stream by queueing None, and `aclose()` unsubscribes
at any time. A follower that falls too far behind is dropped: its stream ends, and
the client subscribes again (`logs -f` reads what it missed from the log files).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from herdsman.core.lifecycle import Event
from herdsman.core.states import State
from herdsman.runtime.documents import EventDocument, InstanceDocument, event_document

if TYPE_CHECKING:
    from herdsman.runtime.supervisor import Managed

T = TypeVar("T")
QUEUE_LIMIT = 10_000  # items a follower may hold (each costs 1 unless said otherwise)


def _one(_item: object) -> int:
    return 1


class Follower(Generic[T]):
    """An async iterator over the items a Broadcast hands it; subscribed while it exists.

    `aclose()` unsubscribes whether or not iteration ever started; the daemon ends
    the stream by queueing None.
    """

    def __init__(self, followers: set[Follower[T]], cost: Callable[[T], int]) -> None:
        self._followers = followers
        self._cost = cost
        self._queue: asyncio.Queue[T | None] = asyncio.Queue()
        self._held = 0  # the cost of the items queued
        followers.add(self)

    def __aiter__(self) -> Follower[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if item is None:
            await self.aclose()
            raise StopAsyncIteration
        self._held -= self._cost(item)
        return item

    async def aclose(self) -> None:
        self._followers.discard(self)

    def offer(self, item: T, limit: int) -> None:
        """Queue `item`, or drop this follower if it would then hold more than `limit`:
        what it holds is let go, and its stream ends."""
        cost = self._cost(item)
        if self._held + cost > limit:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._held = 0
            self.end()
            return
        self._held += cost
        self._queue.put_nowait(item)

    def end(self) -> None:
        self._followers.discard(self)
        self._queue.put_nowait(None)


class Closing(Generic[T]):
    """`iterator`, whose `aclose()` also unsubscribes `follower` (even if never iterated)."""

    def __init__(self, iterator: AsyncIterator[T], follower: Follower[Any]) -> None:
        self._iterator = iterator
        self._follower = follower

    def __aiter__(self) -> Closing[T]:
        return self

    async def __anext__(self) -> T:
        return await anext(self._iterator)

    async def aclose(self) -> None:
        await self._follower.aclose()
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await aclose()


class Broadcast(Generic[T]):
    """Items handed to every follower at once; one that falls `limit` behind (counted
    by `cost`: items by default, bytes for log lines) is dropped rather than let
    what it holds grow without bound."""

    def __init__(self, limit: int = QUEUE_LIMIT, cost: Callable[[T], int] = _one) -> None:
        self._limit = limit
        self._cost = cost
        self._followers: set[Follower[T]] = set()

    @property
    def followed(self) -> bool:
        return bool(self._followers)

    def follow(self) -> Follower[T]:
        """A follower subscribed from now on."""
        return Follower(self._followers, self._cost)

    def publish(self, item: T, skip: Collection[Follower[T]] = ()) -> None:
        for follower in list(self._followers):
            if follower not in skip:
                follower.offer(item, self._limit)

    def end(self) -> None:
        """End every follower's stream."""
        for follower in list(self._followers):
            follower.end()


Unpublished = Callable[[], Iterable[tuple["Managed", State, State, Event]]]


class EventStream:
    """`/v1/events`: a subscriber of the change feed (supervisor.ChangeFeed) that hands
    each change, as a document, to every follower of the stream."""

    def __init__(
        self, document: Callable[[Managed], InstanceDocument], unpublished: Unpublished
    ) -> None:
        self._document = document
        self._unpublished = unpublished
        self._followers: Broadcast[EventDocument] = Broadcast()
        # Per follower, the changes a snapshot taken as it subscribed already shows
        # (made, but held until a spawn lands): (id of the instance, id of the event).
        self._shown: dict[Follower[EventDocument], set[tuple[int, int]]] = {}

    def changed(self, managed: Managed, old: State, new: State, event: Event) -> None:
        if not self._followers.followed:
            self._shown.clear()  # of followers gone
            return
        skip = []
        if self._shown:
            key = (id(managed), id(event))
            for follower, shown in list(self._shown.items()):
                if key in shown:
                    skip.append(follower)
                    shown.discard(key)
                    if not shown:
                        del self._shown[follower]
        # The instance's whole state as `status` shows it (but the resource samples,
        # which no change makes fresh), so a follower (`top`) never asks after one.
        doc = event_document(self._document(managed), old, new, time.time())
        self._followers.publish(doc, skip)

    def follow(self) -> Follower[EventDocument]:
        """A follower of every change from now on (subscribed at the call, so the API
        can take a snapshot right after, in the same loop turn: no change falls
        between the two or shows in both; those made and not yet published, which the
        snapshot shows, it is not sent)."""
        follower = self._followers.follow()
        shown = {(id(m), id(event)) for m, _old, _new, event in self._unpublished()}
        if shown:
            self._shown[follower] = shown
        return follower

    def end(self) -> None:
        self._followers.end()
