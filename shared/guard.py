"""The HTTP guard, in front of every service: size and authentication before parsing.

A request body is parsed (JSON, pydantic) only after
1. its declared size is within the route's limit (``Content-Length``, else 413 at once),
2. the caller is authenticated, when the route needs a caller (401 before a byte is read), and
3. the body, read in chunks, stayed within the limit (413 as soon as it does not).

So a stranger cannot make a service hold a 100 MiB body in memory. The limit is 16 KiB unless a
route declares more with ``openapi_extra={"x-max-body-bytes": N}`` (it shows in the contract).
A route needs a caller when it depends on ``shared.auth.authenticated``; the principal found
here is handed to that dependency (``request.state.principal``), so a token is checked once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import authenticated, verify_token
from shared.problems import Problem, problem_response

DEFAULT_MAX_BODY_BYTES = 16 * 1024
LIMIT_KEY = "x-max-body-bytes"
ROUTE_KEY = "platform.route"
_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def too_large(limit: int) -> Problem:
    return Problem(
        413,
        "body-too-large",
        "Request body too large",
        f"A request body may have at most {limit} bytes.",
        limit_bytes=limit,
    )


def _needs_caller(dependant: Dependant) -> bool:
    return any(d.call is authenticated or _needs_caller(d) for d in dependant.dependencies)


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also inside included routers (newer FastAPI includes them lazily; the
    routers here carry their prefix themselves, so a route's path is its full path)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)


class Guard:
    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._routes: dict[int, tuple[int, bool]] = {}
        self._flat: list[APIRoute] | None = None

    def _route_of(self, scope: Scope) -> APIRoute | None:
        if self._flat is None:
            self._flat = list(_api_routes(self.api.router.routes))
        for route in self._flat:
            if route.matches(scope)[0] == Match.FULL:
                return route
        return None

    def _policy(self, route: APIRoute) -> tuple[int, bool]:
        """(body limit, needs a caller) of a route, worked out once."""
        known = self._routes.get(id(route))
        if known is None:
            limit = int((route.openapi_extra or {}).get(LIMIT_KEY, DEFAULT_MAX_BODY_BYTES))
            known = (limit, _needs_caller(route.dependant))
            self._routes[id(route)] = known
        return known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route_of(scope)
        if route is None:
            await self.app(scope, receive, send)  # 404/405 answered by the app
            return
        scope[ROUTE_KEY] = route.path  # for the metrics, also of what the guard refuses
        limit, needs_caller = self._policy(route)
        path = scope.get("path")
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get("content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > limit:
            await problem_response(too_large(limit), path)(scope, receive, send)
            return
        if needs_caller:
            runtime = getattr(self.api.state, "runtime", None)
            if runtime is not None:
                authorization = headers.get("authorization", b"").decode("latin-1") or None
                try:
                    principal = verify_token(runtime.settings, runtime.clock, authorization)
                except Problem as refused:
                    await problem_response(refused, path)(scope, receive, send)
                    return
                scope.setdefault("state", {})["principal"] = principal
        if scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await problem_response(too_large(limit), path)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # a disconnect, in time

    return replay


def install(app: FastAPI) -> None:
    app.add_middleware(Guard, api=app)
