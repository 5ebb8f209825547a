"""Structured logs: one JSON object per line, from every service and from its HTTP server.

Every line carries ``time``, ``level``, ``service``, ``logger`` and ``message``; where they
apply, the ids of what is being done: ``request_id`` (an incoming ``X-Request-ID``, echoed, or
a new one), ``event_id``, ``event_type``, ``correlation_id``, ``causation_id``,
``account_id``. They are bound for the duration of a request or a consumed event with
``bound(...)`` (context variables, so concurrent tasks keep their own).

No personal data: messages name ids, never addresses, names or mail bodies. Tracebacks are kept
(``exc_info``), as a field.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "log_context", default=None
)


def _fields() -> dict[str, str]:
    return _context.get() or {}


@contextlib.contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Add ``fields`` (None values left out) to every log line written inside the block."""
    added = {k: str(v) for k, v in fields.items() if v is not None}
    token = _context.set({**_fields(), **added})
    try:
        yield
    finally:
        _context.reset(token)


def current(field: str) -> str | None:
    return _fields().get(field)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(service: str, level: str) -> None:
    """Every logger of the process (uvicorn's and the libraries' included) writes JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


class RequestId:
    """ASGI middleware: the request's id (``X-Request-ID`` if a sane one came, else a new one)
    is bound to the request's log lines and echoed in the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if given.isprintable() and 0 < len(given) <= 64 else str(uuid.uuid4())

        async def echo(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        with bound(request_id=request_id):
            await self.app(scope, receive, echo)
