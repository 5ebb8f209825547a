"""Replaying one consumer's dead letters reaches that consumer only (issue 12, finding 8)."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from shared.config import Settings
from shared.dead_letters import partitions_of, replay
from shared.topics import Topics
from tests.integration.conftest import in_process, read_topic
from tests.integration.test_consumer import order_placed, send
from tests.support import Backing, deployment, wait_for

pytestmark = pytest.mark.integration


async def topic_size(bootstrap: str, topic: str) -> int:
    """How many records ``topic`` holds (end offsets; nothing waited for)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await partitions_of(Settings(kafka_bootstrap_servers=bootstrap), topic)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        return sum(ends[p] - starts[p] for p in partitions)
    finally:
        await consumer.stop()


async def inbox_has(pool: asyncpg.Pool, consumer: str, event: bytes) -> bool:
    event_id = uuid.UUID(json.loads(event)["event_id"])
    query = "SELECT true FROM inbox WHERE consumer = $1 AND event_id = $2"
    return bool(await pool.fetchval(query, consumer, event_id))


async def test_a_replay_reaches_only_the_consumer_that_dead_lettered(backing: Backing) -> None:
    services = ("invoicing", "lifecycle")
    async with (
        deployment(backing, services) as dep,
        in_process(dep, "invoicing"),
        in_process(dep, "lifecycle") as lifecycle,
    ):
        topics = Topics(dep.prefix)
        account = uuid.uuid4()
        poison = b"{not json"
        await send(backing, topics.events("ordering"), account, poison)
        # Both consumers of ordering's topic dead-letter it.
        await read_topic(backing.kafka, topics.dead_letters("invoicing"), 1)
        await read_topic(backing.kafka, topics.dead_letters("lifecycle"), 1)

        assert await replay(dep.settings("invoicing"), "invoicing") == 1
        replayed = await read_topic(backing.kafka, topics.dead_letters("invoicing"), 2)
        assert len(replayed) == 2  # invoicing saw it again (still poison) ...
        # ... and a second replay takes only that one: a replay never loops on its own output.
        assert await replay(dep.settings("invoicing"), "invoicing") == 1
        await read_topic(backing.kafka, topics.dead_letters("invoicing"), 3)

        # ... and lifecycle skipped it: once lifecycle has handled a later event on the same
        # key (same partition, so after the replayed record), its dead letters are still one.
        sentinel = order_placed(account)
        await send(backing, topics.events("ordering"), account, sentinel)
        pool = lifecycle.state.runtime.pool
        await wait_for(lambda: inbox_has(pool, "lifecycle", sentinel), what="lifecycle's sentinel")
        assert await topic_size(backing.kafka, topics.dead_letters("lifecycle")) == 1
        assert await topic_size(backing.kafka, topics.dead_letters("invoicing")) == 3
