"""Offsets committed at most once per interval (issue 17, shared/offsets.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from shared.offsets import OffsetCommits

A0 = TopicPartition("ordering.events", 0)
A1 = TopicPartition("ordering.events", 1)
B0 = TopicPartition("invoicing.events", 0)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int


def records(tp: TopicPartition, *offsets: int) -> list[Record]:
    return [Record(tp.topic, tp.partition, offset) for offset in offsets]


@dataclass
class FakeConsumer:
    assigned: set[TopicPartition] = field(default_factory=lambda: {A0, A1, B0})
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    fail_with: Exception | None = None
    committed: asyncio.Event = field(default_factory=asyncio.Event)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.commits.append(dict(offsets))
        self.committed.set()


async def test_the_first_batch_commits_at_once_the_next_ones_wait_for_the_interval() -> None:
    consumer = FakeConsumer()
    offsets = OffsetCommits("ordering", interval=3600)
    await offsets.handled(consumer, records(A0, 5, 6))
    assert consumer.commits == [{A0: 7}]  # the offset of the next record to read
    await offsets.handled(consumer, records(A0, 7))
    await offsets.handled(consumer, records(A1, 3) + records(B0, 10, 11))
    assert consumer.commits == [{A0: 7}], "a second commit inside the interval"
    assert offsets.pending == {A0: 8, A1: 4, B0: 12}
    await offsets.close()
    assert consumer.commits == [{A0: 7}, {A0: 8, A1: 4, B0: 12}]


async def test_the_timer_commits_the_last_batches_when_no_more_records_come() -> None:
    consumer = FakeConsumer()
    offsets = OffsetCommits("ordering", interval=0.05)
    await offsets.handled(consumer, records(A0, 1))
    consumer.committed.clear()
    await offsets.handled(consumer, records(A0, 2, 3))
    await offsets.handled(consumer, records(A0, 4))
    await asyncio.wait_for(consumer.committed.wait(), timeout=5)
    assert consumer.commits == [{A0: 2}, {A0: 5}], "one commit for both later batches"
    assert offsets.pending == {}


async def test_only_handled_offsets_are_committed_never_past_a_lower_one() -> None:
    consumer = FakeConsumer()
    offsets = OffsetCommits("ordering", interval=3600)
    await offsets.handled(consumer, records(A0, 9))
    # a redelivered earlier batch (after a nack) must not move the offset backwards
    await offsets.handled(consumer, records(A0, 4, 5))
    await offsets.close()
    assert consumer.commits == [{A0: 10}]


async def test_a_partition_no_longer_assigned_is_left_to_its_new_owner() -> None:
    consumer = FakeConsumer()
    offsets = OffsetCommits("ordering", interval=3600)
    await offsets.handled(consumer, records(B0, 0))
    await offsets.handled(consumer, records(A0, 1) + records(B0, 1))
    consumer.assigned = {A0}  # a rebalance took B0
    await offsets.close()
    assert consumer.commits == [{B0: 1}, {A0: 2}]


@pytest.mark.parametrize("error", [CommitFailedError("rebalanced")])
async def test_a_failed_commit_is_counted_and_does_not_stop_the_consumer(error: Exception) -> None:
    consumer = FakeConsumer(fail_with=error)
    offsets = OffsetCommits("ordering", interval=3600)
    await offsets.handled(consumer, records(A0, 1))  # does not raise
    assert consumer.commits == []
    assert offsets.pending == {}, "the records come again; the inbox makes them duplicates"


async def test_records_handled_while_the_timer_commits_are_committed_by_it_later() -> None:
    """A batch handled while the timer's commit is under way finds that timer still running;
    it must not be left uncommitted until some later batch comes (the test clocks' "settled"
    waits for zero lag)."""
    commit_started, commit_may_finish = asyncio.Event(), asyncio.Event()

    @dataclass
    class SlowConsumer(FakeConsumer):
        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            if len(self.commits) == 1:  # the timer's commit, the first after the immediate one
                commit_started.set()
                await commit_may_finish.wait()
            await super().commit(offsets)

    consumer = SlowConsumer()
    offsets = OffsetCommits("ordering", interval=0.05)
    await offsets.handled(consumer, records(A0, 1))  # committed at once
    await offsets.handled(consumer, records(A0, 2))  # pending: the timer commits it
    await asyncio.wait_for(commit_started.wait(), timeout=5)  # the timer's commit waits
    await offsets.handled(consumer, records(A0, 3))  # while the timer's commit waits
    commit_may_finish.set()
    async with asyncio.timeout(5):
        while consumer.commits[-1:] != [{A0: 4}]:
            consumer.committed.clear()
            await consumer.committed.wait()
    assert consumer.commits == [{A0: 2}, {A0: 3}, {A0: 4}]
