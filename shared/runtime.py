"""One process of one service: FastAPI for people, FastStream for Kafka, both in one event loop.

Start-up: migrations, topics, the producer, the consumer, the outbox relay and the service's own
background loops. ``/health`` says the process is alive; ``/ready`` that the database and the
broker answer; ``/metrics`` is Prometheus.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import uvicorn
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from shared import asyncapi, docs, guard, logs, metrics, problems, tracing
from shared.background import ShutdownTimeout, cancel_all, within
from shared.config import SERVICE_NAMES, Settings
from shared.db import Conn, create_pool, migrate
from shared.dead_letter_api import dead_letter_router
from shared.messaging import (
    ConsumerRuntime,
    EventConsumer,
    ensure_topics,
    make_broker,
    make_producer,
)
from shared.outbox import Outbox, OutboxRelay
from shared.time.clock import Clock, SystemClock
from shared.time.test_clocks import ClockAgent, PendingProbe, account_clock
from shared.timers import BatchTimerHandler, TimerHandler, TimerLoop
from shared.topics import Topics

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a running service holds; handlers and endpoints reach it via ``app.state.runtime``."""

    settings: Settings
    clock: Clock
    topics: Topics
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    broker: KafkaBroker
    outbox: Outbox
    observer: metrics.Observer | None = None

    async def clock_for(self, conn: Conn, account_id: uuid.UUID | None) -> Clock:
        """The account's clock: its test clock when it follows one, else real time."""
        return await account_clock(conn, self.clock, account_id)


class Readiness(BaseModel):
    ready: bool
    database: str = Field(examples=["ok"])
    broker: str = Field(examples=["ok"])


BackgroundLoop = Callable[[Runtime], Coroutine[Any, Any, None]]


@dataclass
class ServiceSpec:
    name: str
    router: APIRouter
    consumer: EventConsumer
    migrations: Path
    background: list[BackgroundLoop] = field(default_factory=list)
    timers: dict[str, TimerHandler] = field(default_factory=dict)
    batch_timers: dict[str, BatchTimerHandler] = field(default_factory=dict)  # see shared.timers
    pending_probe: PendingProbe | None = None  # work a test-clock step must wait for
    gauges: metrics.ServiceGauges | None = None  # the service's own scrape-time gauges


async def supervised(
    name: str, run: Callable[[], Coroutine[Any, Any, None]], first_delay: float = 1.0
) -> None:
    """Keep a background loop alive: a loop that dies (a lost connection at the wrong moment)
    is logged and started again, instead of leaving the service half-working in silence."""
    delay = first_delay
    while True:
        try:
            await run()
            return  # finished on its own (e.g. disabled by configuration)
        except asyncio.CancelledError:
            raise
        except Exception:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # being stopped: an error while cleaning up must not restart the loop
            log.exception("%s stopped; starting it again in %.0f s", name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


T = TypeVar("T")


async def reachable(what: str, connect: Callable[[], Awaitable[T]], wait_seconds: float) -> T:
    """Start-up waits for a dependency that is restarting (a broker, the database) instead of
    exiting at once: tries again with backoff for ``wait_seconds``, saying so, then gives up
    with the last error."""
    deadline = asyncio.get_running_loop().time() + wait_seconds
    delay = 0.5
    while True:
        try:
            return await connect()
        except (OSError, asyncpg.PostgresError, KafkaError) as error:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise
            log.warning("%s not reachable yet (%s); trying again in %.1f s", what, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def shut_down(
    tasks: list[asyncio.Task[None]],
    broker: KafkaBroker,
    producer: AIOKafkaProducer,
    pool: asyncpg.Pool,
    step_seconds: float,
) -> None:
    """Stop what the lifespan started, in reverse order, each step bounded (shared.background):
    a step that hangs is reported and the later ones still run; a pool that cannot close in
    time is terminated. Raises ``ShutdownTimeout`` naming every step that hung."""
    failures: list[str] = []
    try:
        await cancel_all(tasks, step_seconds)
    except ShutdownTimeout as error:
        failures.append(str(error))
    for what, step in (
        ("the Kafka consumer (broker.stop)", broker.stop),
        ("the Kafka producer (producer.stop)", producer.stop),
        ("the database pool (pool.close)", pool.close),
    ):
        try:
            await within(step_seconds, what, step())
        except ShutdownTimeout as error:
            failures.append(str(error))
    if failures:
        pool.terminate()
        log.error("shutdown: %s", "; ".join(failures))
        raise ShutdownTimeout("; ".join(failures))


def runtime_of(request: Request) -> Runtime:
    runtime = request.app.state.runtime
    if not isinstance(runtime, Runtime):
        raise RuntimeError("the service is not started (no runtime on app.state)")
    return runtime


def create_app(spec: ServiceSpec, settings: Settings, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()
    topics = Topics(settings.topic_prefix)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await reachable(
            "PostgreSQL",
            lambda: create_pool(settings.database_url, settings.database_pool_size),
            settings.startup_wait_seconds,
        )
        await migrate(pool, spec.migrations)
        await reachable(
            "Kafka", lambda: ensure_topics(settings, topics), settings.startup_wait_seconds
        )
        producer = make_producer(settings)
        await reachable("Kafka", producer.start, settings.startup_wait_seconds)
        broker = make_broker(settings)
        outbox = Outbox(spec.name, topics, clock)
        consumer = ConsumerRuntime(
            spec.consumer,
            pool=pool,
            outbox=outbox,
            clock=clock,
            producer=producer,
            topics=topics,
            max_attempts=settings.consumer_max_attempts,
            backoff_seconds=settings.consumer_backoff_seconds,
            batch_size=settings.consumer_batch_size,
            offset_commit_seconds=settings.consumer_offset_commit_seconds,
            batch_transaction=settings.consumer_batch_transaction,
        )
        consumer.subscribe(broker)
        await broker.start()
        observer = metrics.Observer(
            pool,
            consumer=spec.consumer.name,
            group=topics.group(spec.consumer.name),
            topics=[topics.events(p) for p in spec.consumer.producers()],
            bootstrap_servers=settings.kafka_bootstrap_servers,
            gauges=spec.gauges,
        )
        runtime = Runtime(settings, clock, topics, pool, producer, broker, outbox, observer)
        app.state.runtime = runtime
        relay = OutboxRelay(
            pool,
            producer,
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
            linger_seconds=settings.outbox_linger_seconds,
        )
        tasks = [asyncio.create_task(supervised("outbox-relay", relay.run), name="outbox-relay")]
        if spec.timers or spec.batch_timers:
            timer_loop = TimerLoop(
                pool,
                spec.timers,
                batch_handlers=spec.batch_timers,
                outbox=outbox,
                clock=clock,
                poll_seconds=settings.timer_poll_seconds,
                batch_size=settings.timer_batch_size,
            )
            tasks.append(asyncio.create_task(supervised("timers", timer_loop.run), name="timers"))
        if settings.test_clocks_enabled:
            agent = ClockAgent(
                service=spec.name,
                pool=pool,
                producer=producer,
                bootstrap_servers=settings.kafka_bootstrap_servers,
                topic=topics.test_clocks(),
                group_id=topics.group(f"{spec.name}.clock-agent"),
                consumes=[topics.events(p) for p in spec.consumer.producers()],
                probe=spec.pending_probe,
            )
            tasks.append(
                asyncio.create_task(supervised("clock-agent", agent.run), name="clock-agent")
            )
        tasks += [
            asyncio.create_task(
                supervised(loop.__name__, functools.partial(loop, runtime)), name=loop.__name__
            )
            for loop in spec.background
        ]
        log.info("%s ready on port %d", spec.name, settings.port)
        try:
            yield
        finally:
            with contextlib.suppress(ShutdownTimeout):  # only a reader of metrics
                await within(settings.shutdown_step_seconds, "the metrics reader", observer.close())
            with contextlib.suppress(ShutdownTimeout):  # if not, those records come again
                await within(
                    settings.shutdown_step_seconds, "the offset commit", consumer.offsets.close()
                )
            await shut_down(tasks, broker, producer, pool, settings.shutdown_step_seconds)

    app = FastAPI(
        title=f"{spec.name} service",
        version="1",
        lifespan=lifespan,
        description=f"The {spec.name} service of the subscription platform.",
        docs_url=None,  # shared.docs serves /docs and /redoc from installed assets
        redoc_url=None,
        # The server span is shared.tracing's (named by service, W3C context in and out);
        # FastAPI's own would be a second, unnamed-service one.
        telemetry={"tracing": False},
    )
    docs.install(app)
    guard.install(app)  # size and authentication before parsing
    problems.install(app)  # added after the guard, so outside it: it catches what it raises
    app.add_middleware(metrics.HttpMetrics)
    app.add_middleware(logs.RequestId)  # every line of the request carries its id
    app.add_middleware(tracing.TraceMiddleware, service=spec.name)  # outermost: the server span
    app.include_router(spec.router)
    app.include_router(_operations_router(spec, topics, settings))
    app.include_router(dead_letter_router(spec.consumer.name, settings))  # issue 16
    app.openapi = functools.partial(problems.contract, app)  # type: ignore[method-assign]
    return app


def _operations_router(spec: ServiceSpec, topics: Topics, settings: Settings) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/asyncapi.json", summary="The events this service publishes and consumes")
    async def event_contract() -> dict[str, Any]:
        """An AsyncAPI 3.1 document built from the event catalogue."""
        return asyncapi.document(
            spec.name,
            topics,
            spec.consumer.producers(),
            handles=spec.consumer.handlers,
            servers=settings.kafka_servers,
            group=topics.group(spec.consumer.name),
        )

    @router.get("/health", summary="Is the process alive?")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @router.get(
        "/ready",
        summary="Are the database and the broker reachable?",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "The database or broker is down"}},
    )
    async def ready(request: Request) -> Response:
        runtime = runtime_of(request)
        checks: dict[str, str] = {}
        try:
            await runtime.pool.fetchval("SELECT 1")
            checks["database"] = "ok"
        except Exception as error:
            checks["database"] = f"error: {type(error).__name__}"
        try:
            await asyncio.wait_for(runtime.producer.client.fetch_all_metadata(), 5)
            checks["broker"] = "ok"
        except Exception as error:
            checks["broker"] = f"error: {type(error).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def scrape(request: Request) -> Response:
        observer = runtime_of(request).observer
        if observer is not None:
            await observer.collect()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def load_spec(service: str) -> ServiceSpec:
    module = importlib.import_module(f"services.{service}.app")
    spec = module.SPEC
    if not isinstance(spec, ServiceSpec):
        raise TypeError(f"services.{service}.app.SPEC is not a ServiceSpec")
    return spec


def serve(service: str, settings: Settings | None = None) -> None:
    settings = settings or Settings(service=service)
    refusal = settings.refusal()
    if refusal:
        raise SystemExit(f"{service}: refusing to start. {refusal}")
    logs.configure(service, settings.log_level)
    tracing.configure(service)  # exports over OTLP only when an endpoint is configured
    app = create_app(load_spec(service), settings)
    try:
        uvicorn.run(
            app,
            host=settings.http_host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            log_config=None,  # uvicorn's loggers write through shared.logs (JSON lines)
        )
    finally:
        tracing.shutdown()  # flush the spans still buffered


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one service of the platform.")
    parser.add_argument("service", choices=SERVICE_NAMES)
    args = parser.parse_args(argv)
    serve(args.service)


def as_json(value: Any) -> Any:
    """Database rows to JSON-friendly dicts (uuids, decimals and datetimes as strings)."""
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(value)
