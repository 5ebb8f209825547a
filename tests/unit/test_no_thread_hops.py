"""Issue 17: no HTTP request hops to a worker thread. FastAPI runs a plain ``def`` dependency
or endpoint in its thread pool (a hand-over to another thread and back, under the GIL, for
every request); everything the services do per request is async or pure and fast."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from shared.config import SERVICE_NAMES, Settings
from shared.runtime import create_app, load_spec


def runs_in_a_thread(call: Any) -> bool:
    if inspect.isclass(call):
        return False  # a model or a class dependency: constructed, nothing awaited
    target = call if inspect.isroutine(call) else getattr(call, "__call__", call)  # noqa: B004
    return not inspect.iscoroutinefunction(target)


def sync_calls(dependant: Dependant) -> list[str]:
    found = []
    if dependant.call is not None and runs_in_a_thread(dependant.call):
        found.append(getattr(dependant.call, "__qualname__", repr(dependant.call)))
    for sub in dependant.dependencies:
        found += sync_calls(sub)
    return found


def offenders_in(routes: list[Any]) -> dict[str, list[str]]:
    """Every endpoint, including those of included routers (and their own dependencies)."""
    found: dict[str, list[str]] = {}
    for route in routes:
        if isinstance(route, APIRoute):
            if calls := sync_calls(route.dependant):
                found[route.path] = calls
        elif (router := getattr(route, "original_router", None)) is not None:
            context = getattr(route, "include_context", None)
            for dependency in getattr(context, "dependencies", None) or []:
                if dependency.dependency is not None and runs_in_a_thread(dependency.dependency):
                    found[f"include {router}"] = [dependency.dependency.__qualname__]
            found |= offenders_in(router.routes)
    return found


def endpoints(routes: list[Any]) -> int:
    return sum(
        1 if isinstance(r, APIRoute) else endpoints(getattr(r, "original_router").routes)  # noqa: B009
        for r in routes
        if isinstance(r, APIRoute) or hasattr(r, "original_router")
    )


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_no_endpoint_or_dependency_of_a_service_runs_in_a_thread(service: str) -> None:
    app = create_app(load_spec(service), Settings(service=service))
    assert endpoints(app.routes) > 5, "the walk must reach the service's endpoints"
    assert offenders_in(app.routes) == {}


def test_no_page_or_dependency_of_the_portal_runs_in_a_thread() -> None:
    from services.portal.app import create_app as create_portal

    app = create_portal()
    assert endpoints(app.routes) > 5, "the walk must reach the portal's pages"
    assert offenders_in(app.routes) == {}
