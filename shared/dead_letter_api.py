"""Dead letters over HTTP, for operators (issue 16: the portal's dead-letter page).

Every service answers, for its own consumer:

- ``GET /v1/operator/dead-letters``: what its dead-letter topic holds (newest last, at most
  ``limit``), each with the reason and error from its headers, the event's type and id when the
  body is an envelope, and whether a replay already took it (the replay group's offset).
- ``POST /v1/operator/dead-letters/replay``: ``shared.dead_letters.replay`` (what is there now,
  to this consumer only). No Idempotency-Key: a replay takes only what no replay took before,
  and the inbox drops what was already handled, so a repeat changes nothing.

Operators only (``kind=operator``; anyone else 403, nobody 401): the bodies are events of any
account.
"""

from __future__ import annotations

import json
from typing import Annotated

from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from shared.auth import Caller
from shared.config import Settings
from shared.dead_letters import partitions_of, replay
from shared.errors import Forbidden
from shared.problems import problem_responses
from shared.topics import Topics


class DeadLetter(BaseModel):
    partition: int
    offset: int
    key: str | None
    reason: str
    error: str
    attempts: int | None
    original_topic: str
    event_type: str | None
    event_id: str | None
    replayed: bool


class DeadLetters(BaseModel):
    consumer: str
    topic: str
    items: list[DeadLetter]


class Replayed(BaseModel):
    consumer: str
    replayed: int


def _header(headers: dict[str, bytes], name: str) -> str:
    return headers.get(name, b"").decode("utf-8", "replace")


def _envelope_ids(body: bytes | None) -> tuple[str | None, str | None]:
    try:
        envelope = json.loads(body or b"")
    except ValueError:
        return None, None
    if not isinstance(envelope, dict):
        return None, None
    return envelope.get("event_type"), envelope.get("event_id")


async def inspect(settings: Settings, consumer_name: str, limit: int = 100) -> DeadLetters:
    """The dead-letter topic as it is now, read without moving any group's offsets."""
    topics = Topics(settings.topic_prefix)
    topic = topics.dead_letters(consumer_name)
    found = DeadLetters(consumer=consumer_name, topic=topic, items=[])
    try:
        partitions = await partitions_of(settings, topic)
    except Exception:  # no such topic yet: nothing was ever dead-lettered
        return found
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=topics.group(f"{consumer_name}-dlq-replay"),  # only to read its offsets
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        if not partitions:
            return found
        reader.assign(partitions)
        ends = await reader.end_offsets(partitions)
        replayed_to = {p: (await reader.committed(p)) or 0 for p in partitions}
        await reader.seek_to_beginning(*partitions)
        items: list[DeadLetter] = []
        while [p for p in partitions if await reader.position(p) < ends[p]]:
            batch = await reader.getmany(*partitions, timeout_ms=2000, max_records=500)
            if not batch:
                break
            for partition, records in batch.items():
                items.extend(
                    _item(partition, r, replayed_to[partition])
                    for r in records
                    if r.offset < ends[partition]
                )
        found.items = sorted(items, key=lambda i: (i.partition, i.offset))[-limit:]
        return found
    finally:
        await reader.stop()


def _item(partition: TopicPartition, record: object, replayed_to: int) -> DeadLetter:
    headers = dict(getattr(record, "headers", None) or ())
    key = getattr(record, "key", None)
    offset = int(getattr(record, "offset", 0))
    event_type, event_id = _envelope_ids(getattr(record, "value", None))
    attempts = _header(headers, "x-dlq-attempts")
    return DeadLetter(
        partition=partition.partition,
        offset=offset,
        key=key.decode("utf-8", "replace") if isinstance(key, bytes) else None,
        reason=_header(headers, "x-dlq-reason"),
        error=_header(headers, "x-dlq-error"),
        attempts=int(attempts) if attempts.isdigit() else None,
        original_topic=_header(headers, "x-original-topic"),
        event_type=event_type if isinstance(event_type, str) else None,
        event_id=event_id if isinstance(event_id, str) else None,
        replayed=offset < replayed_to,
    )


def _operators_only(caller: Caller) -> None:
    if caller.kind != "operator":
        raise Forbidden("operator-only", "Operators only", "Dead letters are for operators.")


def dead_letter_router(consumer_name: str, settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/v1/operator/dead-letters", tags=["dead letters"])

    @router.get(
        "",
        response_model=DeadLetters,
        responses=problem_responses(401, 403, 422),
        summary="See this service's dead letters (operators)",
    )
    async def list_dead_letters(
        caller: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 100
    ) -> DeadLetters:
        _operators_only(caller)
        return await inspect(settings, consumer_name, limit)

    @router.post(
        "/replay",
        response_model=Replayed,
        responses=problem_responses(401, 403),
        summary="Replay this service's dead letters to it (operators)",
    )
    async def replay_dead_letters(caller: Caller, request: Request) -> Replayed:
        _operators_only(caller)
        return Replayed(consumer=consumer_name, replayed=await replay(settings, consumer_name))

    return router
