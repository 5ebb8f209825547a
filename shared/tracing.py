"""Tracing (OpenTelemetry): one purchase is one trace across the four services.

The context travels with the work, in W3C ``traceparent`` form:

- an HTTP request gets a SERVER span (``TraceMiddleware``), child of an incoming
  ``traceparent`` header if there is one;
- ``Outbox.emit_many`` stores the current context with each outbox row; the relay puts it in
  the Kafka message's ``traceparent`` header (``kafka_headers``);
- ``ConsumerRuntime`` starts a CONSUMER span per record, child of the context in its headers,
  so the handler's own emitted events (outbox again) carry it on;
- the payment gateway and the SMTP hand-over are CLIENT spans (the mail's context is stored
  with its delivery row, since a worker sends it later);
- a timer firing or a test-clock step starts a trace of its own (``root_span``), linked to
  the context that caused it when one is at hand.

Off unless configured: ``configure`` installs an SDK tracer provider exporting over OTLP/HTTP
only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set.
Otherwise the API's no-op tracer is used: spans are not recorded, a context that came in is
still passed on (cheap: a header in, a header out).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

SERVER, CONSUMER, CLIENT = SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.CLIENT

TRACEPARENT = "traceparent"
_PROPAGATOR = TraceContextTextMapPropagator()


def tracer(service: str) -> trace.Tracer:
    """The tracer of one service; its instrumentation scope names the service (several services
    can share one process in tests)."""
    return trace.get_tracer(f"platform.{service}")


def configure(service: str) -> bool:
    """Install an exporting tracer provider if an OTLP endpoint is configured; True if so."""
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing: exporting spans over OTLP")
    return True


def shutdown() -> None:
    """Flush and stop an installed SDK provider (no-op otherwise)."""
    stop = getattr(trace.get_tracer_provider(), "shutdown", None)
    if callable(stop):
        stop()


# --- propagation ----------------------------------------------------------------------------


def current_traceparent() -> str | None:
    """The current context as a W3C ``traceparent`` value, or None if there is none."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def context_from(traceparent: str | None) -> otel_context.Context | None:
    """The context a stored or received ``traceparent`` names (None if absent or invalid)."""
    if not traceparent:
        return None
    ctx = _PROPAGATOR.extract({TRACEPARENT: traceparent})
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def kafka_headers(traceparent: str | None) -> list[tuple[str, bytes]]:
    return [(TRACEPARENT, traceparent.encode())] if traceparent else []


def traceparent_of(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    """The ``traceparent`` of a Kafka record's headers."""
    for name, value in headers or ():
        if name == TRACEPARENT and value:
            return value.decode(errors="replace")
    return None


# --- spans ----------------------------------------------------------------------------------


@contextlib.contextmanager
def span(
    service: str,
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span of ``service``; with ``parent`` given (a traceparent, possibly empty), child of
    that context or the start of a new trace if it names none; else child of the current
    context. An exception is recorded and marks the span as an error."""
    ctx = None if parent is None else (context_from(parent) or otel_context.Context())
    with tracer(service).start_as_current_span(
        name, context=ctx, kind=kind, attributes=dict(attributes or {})
    ) as current:
        yield current


@contextlib.contextmanager
def continuing(traceparent: str | None) -> Iterator[None]:
    """Make the context ``traceparent`` names current again (no new span), e.g. to emit an
    event, later and in a batch, in the trace of the span it belongs to. Nothing if None."""
    ctx = context_from(traceparent)
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def root_span(
    service: str,
    name: str,
    *,
    causes: Sequence[str | None] = (),
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span starting a trace of its own (a timer, a test-clock step), linked to each of
    ``causes`` (traceparents, e.g. of the work that scheduled the timer) that is known."""
    links = []
    for cause in dict.fromkeys(causes):  # once each, in order
        caused_by = context_from(cause)
        if caused_by is not None:
            links.append(Link(trace.get_current_span(caused_by).get_span_context()))
    with tracer(service).start_as_current_span(
        name,
        context=otel_context.Context(),  # no parent: a new trace
        links=links,
        attributes=dict(attributes or {}),
    ) as current:
        yield current


class TraceMiddleware:
    """ASGI middleware: one SERVER span per HTTP request, named by method and route template
    (known once routing has run), child of the request's ``traceparent`` header if any."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        from shared.guard import ROUTE_KEY  # the matched route template (here: no cycle)

        self.app = app
        self.service = service
        self.route_key = ROUTE_KEY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope.get("headers") or ():
            if name == b"traceparent":
                incoming = value.decode("latin-1")
        method = scope.get("method", "GET")
        with span(
            self.service,
            method,
            kind=SpanKind.SERVER,
            parent=incoming,
            attributes={"http.request.method": method},
        ) as current:
            status = 500

            async def watch(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await self.app(scope, receive, watch)
            finally:
                route = scope.get(self.route_key)
                if route:
                    current.update_name(f"{method} {route}")
                    current.set_attribute("http.route", route)
                current.set_attribute("http.response.status_code", status)
                if status >= 500:
                    current.set_status(Status(StatusCode.ERROR))
