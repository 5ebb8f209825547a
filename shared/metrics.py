"""The metrics an operator pages on (``/metrics``, Prometheus text format).

Counted as they happen (in the code that does them): events consumed by outcome, published by
topic, deferred and released (``shared.messaging``, ``shared.outbox``), dead letters by reason,
HTTP requests by route and status (``HttpMetrics``, a histogram of their duration), payment
gateway calls by outcome (invoicing), mails by outcome (notifications).

Read at scrape time from the service's own database and Kafka (``Observer``), so every replica
reports the same truth and nothing is lost at a restart: the outbox backlog and the age of its
oldest unpublished row; timers due, late (due over a minute ago) and failed; events waiting for
their cause; the consumer group's lag per topic and partition; and whatever the service adds
(``ServiceSpec.gauges``, e.g. mails pending or unconfirmed). A scrape never waits long: each read
is bounded, and one that fails is counted, not raised.

Alert rules on these live in ``deploy/prometheus/alerts.yml`` (tested with ``promtool``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.guard import ROUTE_KEY
from shared.time.test_clocks import LagMeter

log = logging.getLogger(__name__)

HTTP_DURATION = Histogram(
    "platform_http_request_duration_seconds",
    "HTTP requests by route (the path template), method and status, with their duration.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DEAD_LETTERS = Counter(
    "platform_dead_letters_total",
    "Records sent to the dead-letter topic, by consumer and reason.",
    ["consumer", "reason"],
)
OUTBOX_UNPUBLISHED = Gauge("platform_outbox_unpublished", "Outbox rows not yet published.")
OUTBOX_OLDEST_AGE = Gauge(
    "platform_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest unpublished outbox row (0 when none).",
)
TIMERS = Gauge(
    "platform_timers",
    "Real-time timers by state: due (unfired, due now), late (due over a minute ago), failed.",
    ["state"],
)
EVENTS_WAITING = Gauge(
    "platform_events_waiting",
    "Events kept until their cause is handled, by consumer.",
    ["consumer"],
)
CONSUMER_LAG = Gauge(
    "platform_consumer_lag",
    "Records the consumer group has not committed yet, by group, topic and partition.",
    ["group", "topic", "partition"],
)
SCRAPE_FAILURES = Counter(
    "platform_metrics_read_failures_total",
    "Scrape-time reads that failed or took too long, by what was read.",
    ["read"],
)
READ_TIMEOUT_SECONDS = 2.0
LATE_AFTER = "1 minute"

ServiceGauges = Callable[[asyncpg.Pool], Awaitable[None]]


class HttpMetrics:
    """ASGI middleware: every answer timed and counted by its route template, not its path (no
    ids in label values, so the series stay few)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = scope.get(ROUTE_KEY) or "unmatched"
            HTTP_DURATION.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )


class Observer:
    """Reads the scrape-time gauges for one service process."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        consumer: str,
        group: str,
        topics: list[str],
        bootstrap_servers: str,
        gauges: ServiceGauges | None = None,
    ) -> None:
        self.pool = pool
        self.consumer = consumer
        self.group = group
        self.topics = topics
        self.gauges = gauges
        self.lag = LagMeter(bootstrap_servers)
        self._lag_started = False

    async def close(self) -> None:
        if self._lag_started:
            await self.lag.stop()

    async def collect(self) -> None:
        await asyncio.gather(
            self._bounded("database", self._database()),
            self._bounded("consumer-lag", self._consumer_lag()),
            *([self._bounded("service", self.gauges(self.pool))] if self.gauges else []),
        )

    async def _bounded(self, read: str, work: Awaitable[None]) -> None:
        try:
            await asyncio.wait_for(work, READ_TIMEOUT_SECONDS)
        except Exception as error:  # a scrape reports what it can
            SCRAPE_FAILURES.labels(read).inc()
            log.warning("metrics: reading %s failed (%s)", read, type(error).__name__)

    async def _database(self) -> None:
        row = await self.pool.fetchrow(
            f"""SELECT
                 (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS unpublished,
                 (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)
                    FROM outbox WHERE published_at IS NULL) AS oldest,
                 (SELECT count(*) FROM timers WHERE status = 'pending' AND clock_id IS NULL
                    AND due_at <= now()) AS due,
                 (SELECT count(*) FROM timers WHERE status = 'pending' AND clock_id IS NULL
                    AND due_at <= now() - interval '{LATE_AFTER}') AS late,
                 (SELECT count(*) FROM timers WHERE status = 'failed') AS failed,
                 (SELECT count(*) FROM deferred_events WHERE consumer = $1) AS waiting""",  # noqa: S608 - a constant
            self.consumer,
        )
        if row is None:
            return
        OUTBOX_UNPUBLISHED.set(row["unpublished"])
        OUTBOX_OLDEST_AGE.set(float(row["oldest"]))
        for state in ("due", "late", "failed"):
            TIMERS.labels(state).set(row[state])
        EVENTS_WAITING.labels(self.consumer).set(row["waiting"])

    async def _consumer_lag(self) -> None:
        if not self.topics:
            return
        if not self._lag_started:
            await self.lag.start()
            self._lag_started = True
        lags = await self.lag.lag_by_partition({self.group: self.topics})
        for (group, partition), lag in lags.items():
            CONSUMER_LAG.labels(group, partition.topic, str(partition.partition)).set(lag)
