"""One purchase is one trace (issue 14, tracing): the POST /orders server span in ordering, the
outbox row and Kafka headers carrying its context, the OrderPlaced consumers of invoicing,
lifecycle and notifications as its children, and below them the gateway charge and the SMTP
hand-over as CLIENT spans. The four services run in-process on real Kafka, PostgreSQL and SMTP;
spans go to an in-memory exporter."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import tracing
from shared.db import create_pool, migrate
from shared.outbox import Outbox
from shared.time.clock import FrozenClock
from shared.timers import TimerContext, TimerLoop, schedule
from shared.topics import Topics
from tests.integration.conftest import in_process
from tests.integration.ordering_helpers import Ordering, SettableClock
from tests.support import (
    Backing,
    Deployment,
    create_database,
    deployment,
    drop_database,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

SERVICES = ("ordering", "invoicing", "lifecycle", "notifications")


@pytest.fixture(scope="module")
def exported() -> InMemorySpanExporter:
    """Every span this process records, kept in memory (an SDK provider, installed once)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@contextlib.asynccontextmanager
async def platform(dep: Deployment) -> AsyncIterator[dict[str, FastAPI]]:
    async with contextlib.AsyncExitStack() as stack:
        apps = {s: await stack.enter_async_context(in_process(dep, s)) for s in SERVICES}
        yield apps


def service_of(span: ReadableSpan) -> str:
    scope = span.instrumentation_scope
    assert scope is not None
    return scope.name.removeprefix("platform.")


def tree(spans: Sequence[ReadableSpan]) -> str:
    """The trace as text: one line per span (service, name, kind), indented by parentage."""
    ids = {s.context.span_id for s in spans if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for s in sorted(spans, key=lambda s: s.start_time or 0):
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        children.setdefault(parent, []).append(s)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for s in children.get(parent, []):
            kind = s.kind.name.lower()
            lines.append(f"{'  ' * depth}{service_of(s)}: {s.name} [{kind}]")
            assert s.context is not None
            walk(s.context.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)


async def test_one_purchase_is_one_trace_across_the_four_services(
    backing: Backing, exported: InMemorySpanExporter
) -> None:
    async with deployment(backing, SERVICES) as dep, platform(dep) as apps:
        ordering_app = apps["ordering"]
        runtime = ordering_app.state.runtime
        transport = httpx.ASGITransport(app=ordering_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ordering") as client:
            ordering = Ordering(
                client, runtime.pool, runtime.settings, SettableClock(), runtime.producer
            )
            account, buyer, _ = await ordering.open_account()
            order = await ordering.order(account, buyer, payment_method="card")

        # The server span ends with the response, before the client gets it.
        (root,) = [
            s
            for s in exported.get_finished_spans()
            if s.kind is SpanKind.SERVER
            and s.name == "POST /v1/accounts/{account_id}/orders"
            and s.attributes is not None
            and s.attributes["http.response.status_code"] == 201
        ]
        assert root.context is not None
        trace_id = root.context.trace_id

        def purchase() -> list[ReadableSpan]:
            return [
                s
                for s in exported.get_finished_spans()
                if s.context is not None and s.context.trace_id == trace_id
            ]

        async def complete() -> list[ReadableSpan] | None:
            spans = purchase()
            names = {(service_of(s), s.name) for s in spans}
            wanted = {
                ("invoicing", "gateway charge"),
                ("notifications", "smtp send"),
                ("invoicing", "OrderPlaced process"),
                ("lifecycle", "OrderPlaced process"),
                ("notifications", "OrderPlaced process"),
            }
            return spans if wanted <= names else None

        spans = await wait_for(complete, timeout=90, what="the purchase's spans")
    print(f"\ntrace {trace_id:032x} (order {order['id']}):\n{tree(spans)}")

    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    assert service_of(root) == "ordering"
    assert root.parent is None  # the request started the trace
    assert root.attributes is not None and root.attributes["http.response.status_code"] == 201

    # Parent links intact: every span but the root has its parent in this same trace.
    for s in spans:
        if s is not root:
            assert s.parent is not None and s.parent.span_id in by_id, s.name

    def ancestors(span: ReadableSpan) -> list[ReadableSpan]:
        chain = []
        while span.parent is not None:
            span = by_id[span.parent.span_id]
            chain.append(span)
        return chain

    # Each OrderPlaced consumer is a CONSUMER span, a direct child of the request's span (the
    # context went request -> outbox row -> Kafka header -> consumer).
    placed = [s for s in spans if s.name == "OrderPlaced process"]
    assert sorted(service_of(s) for s in placed) == ["invoicing", "lifecycle", "notifications"]
    for s in placed:
        assert s.kind is SpanKind.CONSUMER
        assert s.parent is not None and s.parent.span_id == by_id_of(root)

    # The gateway charge and the SMTP hand-over are CLIENT spans below the purchase's request,
    # each under a consumer span of its own service.
    (charge,) = [s for s in spans if s.name == "gateway charge"]
    assert charge.kind is SpanKind.CLIENT and service_of(charge) == "invoicing"
    assert charge.attributes is not None and charge.attributes["platform.outcome"] == "succeeded"
    assert root in ancestors(charge)
    assert any(
        a.kind is SpanKind.CONSUMER and service_of(a) == "invoicing" for a in ancestors(charge)
    )

    mails = [s for s in spans if s.name == "smtp send"]
    assert mails and all(s.kind is SpanKind.CLIENT for s in mails)
    for mail in mails:
        assert service_of(mail) == "notifications"
        assert mail.attributes is not None and mail.attributes["platform.outcome"] == "sent"
        assert root in ancestors(mail)
        assert ancestors(mail)[0].kind is SpanKind.CONSUMER  # the handler that queued it
    confirmations = [
        m
        for m in mails
        if m.attributes is not None and m.attributes["platform.template"] == "order_confirmation"
    ]
    assert confirmations and ancestors(confirmations[0])[0] in placed


def by_id_of(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def test_context_survives_a_stored_traceparent_and_tracing_is_off_without_one() -> None:
    """The helpers the chain relies on: a stored traceparent continues its trace; nothing
    stored starts none."""
    assert tracing.context_from(None) is None
    assert tracing.context_from("not-a-traceparent") is None
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracing.span("ordering", "child", parent=parent):
        current = tracing.current_traceparent()
    assert current is not None and current.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert tracing.traceparent_of(tracing.kafka_headers(parent)) == parent
    assert tracing.kafka_headers(None) == []


async def test_a_timer_starts_its_own_trace_linked_to_the_work_that_scheduled_it(
    backing: Backing, exported: InMemorySpanExporter, tmp_path: Path
) -> None:
    name = unique("test_tracing_timers_")
    pool = await create_pool(await create_database(backing.postgres_dsn, name), size=2)
    try:
        await migrate(pool, tmp_path)  # the shared migrations only
        now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        key = str(uuid.uuid4())
        with tracing.span("lifecycle", "OrderPlaced process", parent="") as scheduling:
            async with pool.acquire() as conn:
                await schedule(conn, kind="expire", key=key, due_at=now - timedelta(seconds=1))
        inside: list[str | None] = []

        async def expire(ctx: TimerContext) -> None:
            inside.append(tracing.current_traceparent())  # what its events would carry

        loop = TimerLoop(
            pool,
            {"expire": expire},
            outbox=Outbox("lifecycle", Topics("unused."), FrozenClock(now)),
            clock=FrozenClock(now),
        )
        assert await loop.fire_due() == 1
    finally:
        await pool.close()
        await drop_database(backing.postgres_dsn, name)

    (fired,) = [s for s in exported.get_finished_spans() if s.name == "timer expire"]
    assert fired.parent is None and fired.context is not None  # a trace of its own
    cause = scheduling.get_span_context()
    assert fired.context.trace_id != cause.trace_id
    assert [(link.context.trace_id, link.context.span_id) for link in fired.links] == [
        (cause.trace_id, cause.span_id)
    ]
    assert service_of(fired) == "lifecycle"
    assert inside and inside[0] is not None
    assert inside[0].split("-")[1] == f"{fired.context.trace_id:032x}"
