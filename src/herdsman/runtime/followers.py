"""Followers of the daemon's streams (log lines, events) for the API.

A follower is subscribed from the moment it is created, not from its first read,
so the API can take a backlog right after and no item slips in between; the
daemon ends a stream by queueing None, and `aclose()` unsubscribes at any time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
QUEUE_LIMIT = 10_000  # a follower that falls this far behind is dropped


class Follower(Generic[T]):
    """An async iterator over a queue the daemon feeds; subscribed while it exists.

    `aclose()` unsubscribes whether or not iteration ever started; the daemon ends
    the stream by queueing None.
    """

    def __init__(self, followers: set[asyncio.Queue[T | None]]) -> None:
        self._followers = followers
        self._queue: asyncio.Queue[T | None] = asyncio.Queue(QUEUE_LIMIT)
        followers.add(self._queue)

    def __aiter__(self) -> Follower[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if item is None:
            await self.aclose()
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        self._followers.discard(self._queue)


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
    """Items handed to every follower at once; one too slow to keep up is dropped
    (its stream ends) rather than let its queue grow without bound."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[T | None]] = set()

    @property
    def followed(self) -> bool:
        return bool(self._queues)

    def follow(self) -> Follower[T]:
        """A follower subscribed from now on."""
        return Follower(self._queues)

    def publish(self, item: T) -> None:
        for queue in list(self._queues):
            self._offer(queue, item)

    def end(self) -> None:
        """End every follower's stream (None is the end marker)."""
        for queue in list(self._queues):
            self._offer(queue, None)

    def _offer(self, queue: asyncio.Queue[T | None], item: T | None) -> None:
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            self._queues.discard(queue)
            queue._queue.clear()  # type: ignore[attr-defined]
            queue.put_nowait(None)
