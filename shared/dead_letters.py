"""Replay dead letters: ``python -m shared.dead_letters <consumer> [--limit N]``.

Reads the consumer's dead-letter topic with its own consumer group and republishes each message,
unchanged, to the topic it came from (``x-original-topic``), with ``x-replayed-from`` added and
addressed to that one consumer (``x-replay-for``): every other consumer of the topic skips it, so
replaying one service's dead letters never reaches, or dead-letters again in, the others.
Safe to repeat: the inbox drops an event that was already handled. Fix the cause first (a
deployment, a price), then replay.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.config import Settings
from shared.messaging import REPLAY_FOR_HEADER, make_producer
from shared.topics import Topics


async def partitions_of(settings: Settings, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
        return sorted(TopicPartition(topic, p["partition"]) for p in description["partitions"])
    finally:
        await admin.close()


async def replay(settings: Settings, consumer_name: str, limit: int | None = None) -> int:
    topics = Topics(settings.topic_prefix)
    source = topics.dead_letters(consumer_name)
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=topics.group(f"{consumer_name}-dlq-replay"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = make_producer(settings)
    await reader.start()
    await producer.start()
    replayed = 0
    try:
        # Only what is there now: a record that fails again is dead-lettered again behind
        # these, and must wait for the next replay instead of looping for ever.
        partitions = await partitions_of(settings, source)
        if not partitions:
            return 0
        reader.assign(partitions)
        ends = await reader.end_offsets(partitions)
        while limit is None or replayed < limit:
            remaining = [p for p in partitions if await reader.position(p) < ends[p]]
            if not remaining:
                break
            batch = await reader.getmany(*remaining, timeout_ms=2000, max_records=100)
            for partition, records in batch.items():
                for record in records:
                    if record.offset >= ends[partition]:
                        continue
                    headers = dict(record.headers)
                    target = headers.get("x-original-topic", b"").decode()
                    if not target:
                        print(f"skipping {partition.partition}@{record.offset}: no original topic")
                        continue
                    await producer.send_and_wait(
                        target,
                        value=record.value,
                        key=record.key,
                        headers=[
                            ("x-replayed-from", source.encode()),
                            (REPLAY_FOR_HEADER, consumer_name.encode()),
                        ],
                    )
                    replayed += 1
                    await reader.commit(
                        {TopicPartition(record.topic, record.partition): record.offset + 1}
                    )
                    if limit is not None and replayed >= limit:
                        return replayed
    finally:
        await producer.stop()
        await reader.stop()
    return replayed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("consumer", help="the service whose dead letters to replay")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    count = asyncio.run(replay(Settings(service=args.consumer), args.consumer, args.limit))
    print(f"replayed {count} dead letter(s) from {args.consumer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
