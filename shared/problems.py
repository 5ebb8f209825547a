"""RFC 9457 problem documents: every error a client sees names its rule or its field.

One place maps every kind of failure to a problem document:
- ``Problem``: raised by the HTTP plumbing itself (authentication, idempotency keys, limits);
- ``shared.errors.DomainError``: raised by domain rules and use cases, which know nothing of
  HTTP; its class decides the status;
- request validation: 422 naming each field;
- an unreachable database: 503 with ``Retry-After`` (nothing was stored; try again);
- anything else: 500 with a ``correlation_id`` that the log line of the traceback carries too,
  never a plain-text answer.

``problem_responses`` declares these answers in the OpenAPI document, each with an example.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import DomainError
from shared.logs import current

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "urn:subscription-platform:problem:"
MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = 5

# The database (or the way to it) failed, not the request: answer 503, the client retries.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,  # the server is shutting down (a restart)
    asyncpg.exceptions.InternalClientError,  # a connection that died mid-query
)


class Problem(Exception):
    """Raise to answer with a problem document; ``slug`` is stable per business rule."""

    def __init__(
        self, status: int, slug: str, title: str, detail: str = "", **extensions: Any
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.extensions = extensions

    @classmethod
    def of(cls, error: DomainError) -> Problem:
        extensions = dict(error.extensions)
        if error.rule:
            extensions.setdefault("rule", error.rule)
        return cls(error.status, error.slug, error.title, error.detail, **extensions)

    def document(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body


def problem_response(
    problem: Problem, instance: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    headers = dict(headers or {})
    if problem.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(
        problem.document(instance),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=headers or None,
    )


def not_found(what: str) -> Problem:
    return Problem(404, "not-found", "Not found", f"No {what} with that id is visible to you.")


def _field_name(location: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in location if p not in ("body",)]
    return ".".join(parts) or "body"


def unavailable() -> Problem:
    return Problem(
        503,
        "service-unavailable",
        "Temporarily unavailable",
        f"The database is not reachable; nothing was stored. Try again in "
        f"{RETRY_AFTER_SECONDS} s with the same Idempotency-Key.",
    )


def unexpected(correlation_id: str) -> Problem:
    return Problem(
        500,
        "internal-error",
        "Something went wrong on our side",
        "Nothing you sent caused this. Try again; if it persists, report the correlation id.",
        correlation_id=correlation_id,
    )


class CatchAll:
    """ASGI middleware: an error nothing else handled becomes a problem document (503 for an
    unreachable database, 500 otherwise), logged once with its correlation id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as error:
            if started:
                raise
            correlation_id = current("request_id") or str(uuid.uuid4())
            if isinstance(error, INFRASTRUCTURE_ERRORS):
                log.warning("%s: database unreachable (%r)", scope.get("path"), error)
                response = problem_response(
                    unavailable(), scope.get("path"), {"Retry-After": str(RETRY_AFTER_SECONDS)}
                )
            else:
                log.exception("unexpected error, correlation_id=%s", correlation_id)
                response = problem_response(unexpected(correlation_id), scope.get("path"))
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Turn every error into a problem document."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, Problem):  # pragma: no cover - registered for Problem only
            raise exc
        return problem_response(exc, request.url.path)

    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, DomainError):  # pragma: no cover
            raise exc
        return problem_response(Problem.of(exc), request.url.path)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, RequestValidationError):  # pragma: no cover
            raise exc
        errors = [
            {"field": _field_name(e.get("loc", ())), "message": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        fields = ", ".join(sorted({e["field"] for e in errors}))
        problem = Problem(
            422, "validation", "The request is not valid", f"Invalid: {fields}", errors=errors
        )
        return problem_response(problem, request.url.path)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, StarletteHTTPException):  # pragma: no cover
            raise exc
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        problem = Problem(exc.status_code, slug, str(exc.detail))
        return problem_response(problem, request.url.path)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(DomainError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_middleware(CatchAll)


# --- the contract: problem answers declared in OpenAPI ----------------------------------------


class FieldError(BaseModel):
    field: str = Field(examples=["seats"])
    message: str = Field(examples=["Input should be greater than 0"])


class ProblemDocument(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="Names the rule or the kind of error; stable for clients.")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = Field(None, description="The fields that are wrong.")
    rule: str | None = Field(None, description="The business rule that refused, e.g. R15.")


_EXAMPLES: dict[int, tuple[str, str, str]] = {
    400: (
        "idempotency-key-required",
        "Idempotency-Key header required",
        "Every write takes an Idempotency-Key header (for example a UUID).",
    ),
    401: ("unauthorized", "Authentication required", "Send 'Authorization: Bearer <token>'."),
    402: ("payment-declined", "The payment was declined", "card_declined: nothing was paid."),
    403: ("buyer-only", "Your role does not allow this", "Only the buyer may do this (R8)."),
    404: ("not-found", "Not found", "No account with that id is visible to you."),
    409: ("conflict", "Not possible in the current state", "The subscription is Cancelled."),
    410: ("gone", "No longer available", "That link has expired."),
    413: (
        "body-too-large",
        "Request body too large",
        "A request body may have at most 16384 bytes.",
    ),
    422: ("validation", "The request is not valid", "Invalid: seats"),
    503: (
        "service-unavailable",
        "Temporarily unavailable",
        "The database is not reachable; nothing was stored.",
    ),
}
_DESCRIPTIONS = {
    400: "A required header is missing or malformed",
    401: "No valid bearer token",
    402: "The payment was declined; nothing was paid",
    403: "Your role does not allow this",
    404: "Not found, or not visible to you",
    409: "Not possible in the current state",
    410: "No longer available",
    413: "The request body is too large",
    422: "The request breaks a rule or a field is invalid",
    503: "Temporarily unavailable; retry",
}

READ = (401, 403, 404)
WRITE = (400, 401, 403, 404, 409, 413, 422)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given problem statuses, each with an example document."""
    declared: dict[int | str, dict[str, Any]] = {}
    for status in sorted(set(statuses)):
        slug, title, detail = _EXAMPLES[status]
        example: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + slug,
            "title": title,
            "status": status,
            "detail": detail,
        }
        if status == 422:
            example["errors"] = [{"field": "seats", "message": "Input should be greater than 0"}]
        declared[status] = {
            "model": ProblemDocument,
            "description": _DESCRIPTIONS[status],
            "content": {MEDIA_TYPE: {"example": example}},
        }
    return declared


def contract(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document with every error answer as ``application/problem+json``
    (FastAPI files declared models under ``application/json`` and adds its own 422 shape)."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    problem_ref = {"$ref": "#/components/schemas/ProblemDocument"}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            if "operations" in operation.get("tags", []):
                continue  # /health, /ready, /metrics answer their own shapes
            for status, response in operation.get("responses", {}).items():
                if not str(status).startswith(("4", "5")):
                    continue
                content = response.setdefault("content", {})
                content.pop("application/json", None)
                problem = content.setdefault(MEDIA_TYPE, {})
                problem["schema"] = problem_ref
                if str(status) == "422" and "example" not in problem:
                    slug, title, detail = _EXAMPLES[422]
                    problem["example"] = {
                        "type": PROBLEM_TYPE_BASE + slug,
                        "title": title,
                        "status": 422,
                        "detail": detail,
                    }
                    response["description"] = _DESCRIPTIONS[422]
    if "ProblemDocument" not in components:
        components["ProblemDocument"] = ProblemDocument.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for name, definition in components["ProblemDocument"].pop("$defs", {}).items():
            components.setdefault(name, definition)
    app.openapi_schema = schema
    return schema
