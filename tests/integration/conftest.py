from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI

from shared.runtime import create_app, load_spec
from tests.support import Deployment


@contextlib.asynccontextmanager
async def in_process(dep: Deployment, service: str) -> AsyncIterator[FastAPI]:
    """A service inside the test's event loop: real Kafka, real PostgreSQL, no HTTP server."""
    app = create_app(load_spec(service), dep.settings(service))
    async with app.router.lifespan_context(app):
        yield app


async def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[Any]:
    """Read ``topic`` from the beginning until ``expected`` records arrived (or time runs out)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    try:
        import time

        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for partition_records in batch.values():
                records.extend(partition_records)
    finally:
        await consumer.stop()
    return records
