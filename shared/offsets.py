"""Consumer offsets committed at most once per interval, whatever the load (issue 17).

A consumer used to commit its offsets after every batch: at low load a batch is one record,
so every event consumed cost an offset commit (one record per assigned partition written to
the broker's ``__consumer_offsets``): about 10 commit requests and 69 partition offsets per
order at 2 orders/s. Here the handled records' offsets are remembered and committed **at
most once per ``interval`` seconds** (the first batch after a quiet spell at once, later ones
together when the interval is over; a timer makes sure the last ones are committed even if no
more records come).

Why this is safe: only offsets of records already handled are committed (explicit offsets per
partition, never the consumer's position, which runs ahead to the records being handled), so a
commit never passes an unhandled record. What is lost by committing later is only work to be
redone: after a crash or a partition moving to another replica, up to ``interval`` seconds of
handled records are delivered again, and the inbox (``shared/messaging.py``) finds each of them
handled already (outcome "duplicate"). A partition no longer assigned is dropped from the commit
(its new owner starts from the last committed offset; same argument). The service's shutdown
commits what is pending.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter

log = logging.getLogger(__name__)

OFFSET_COMMITS = Counter(
    "platform_offset_commits_total",
    "Offset commit requests sent by a consumer, by consumer and outcome (done, failed).",
    ["consumer", "outcome"],
)


class Committer(Protocol):
    """The part of ``AIOKafkaConsumer`` used here."""

    def assignment(self) -> set[TopicPartition]: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...


class OffsetCommits:
    """Handled records' offsets, committed at most once per ``interval`` seconds."""

    def __init__(self, consumer_name: str, interval: float) -> None:
        self.consumer_name = consumer_name
        self.interval = interval
        self._pending: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._committer: Committer | None = None
        self._last = -float("inf")
        self._timer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> dict[TopicPartition, int]:
        return dict(self._pending)

    async def handled(self, committer: Committer, records: Iterable[Any]) -> None:
        """Records (``topic``, ``partition``, ``offset``) handled and their effects committed:
        their offsets are committed now if the interval is over, else by the timer."""
        self._committer = committer
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            after = record.offset + 1
            if after > max(self._pending.get(tp, 0), self._committed.get(tp, 0)):
                self._pending[tp] = after  # never backwards (a batch handled again)
        wait = self._last + self.interval - time.monotonic()
        if wait <= 0:
            await self.flush()
        elif self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._later(wait), name="offset-commit")

    async def _later(self, wait: float) -> None:
        # Records handled while this timer's commit was under way are pending again, and
        # ``handled`` saw a timer still running: this one commits them too, one interval later.
        while True:
            await asyncio.sleep(wait)
            await self.flush()
            if not self._pending:
                return
            wait = max(0.0, self._last + self.interval - time.monotonic())

    async def flush(self) -> None:
        """Commit what is pending (the timer, the next batch after the interval, shutdown)."""
        async with self._lock:
            committer, pending = self._committer, self._pending
            if committer is None or not pending:
                return
            self._pending = {}
            self._last = time.monotonic()
            assigned = committer.assignment()
            offsets = {tp: offset for tp, offset in pending.items() if tp in assigned}
            self._committed = {tp: o for tp, o in self._committed.items() if tp in assigned}
            if not offsets:
                return
            try:
                await committer.commit(offsets)
            except KafkaError as error:
                # A rebalance took the partitions meanwhile, or the broker is away: the
                # records come again to whoever owns them, and the inbox finds them handled.
                OFFSET_COMMITS.labels(self.consumer_name, "failed").inc()
                log.warning("%s: offset commit failed: %r", self.consumer_name, error)
                return
            self._committed.update(offsets)
            OFFSET_COMMITS.labels(self.consumer_name, "done").inc()

    async def close(self) -> None:
        """Stop the timer and commit what is pending."""
        if self._timer is not None and not self._timer.done():
            self._timer.cancel()
        await self.flush()
