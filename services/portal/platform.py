"""The four services' public HTTP APIs, called with the signed-in person's bearer token.

The portal reads nothing behind the services' backs: every page is what these calls answer,
so what a person sees is exactly what their roles allow (R8; 404 for strangers, 403 for members
without the role). A refusal comes back as ``Refused`` carrying the problem document's title
and detail, which the pages show in words; a service that does not answer is ``Unavailable``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from .config import PortalSettings


@dataclass
class Refused(Exception):
    """A problem document from a service (RFC 9457)."""

    status: int
    title: str
    detail: str = ""
    slug: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, response: httpx.Response) -> Refused:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        kind = str(body.get("type", ""))
        return cls(
            status=response.status_code,
            title=str(body.get("title") or response.reason_phrase),
            detail=str(body.get("detail") or ""),
            slug=kind.rsplit(":", 1)[-1] if kind else "",
            errors=[e for e in body.get("errors") or [] if isinstance(e, dict)],
        )


@dataclass
class Unavailable(Exception):
    service: str


class Platform:
    """One HTTP client for the whole process; each call names the caller's token."""

    def __init__(self, settings: PortalSettings, transport: httpx.AsyncBaseTransport | None = None):
        self.bases = {
            "ordering": settings.ordering_url.rstrip("/"),
            "invoicing": settings.invoicing_url.rstrip("/"),
            "lifecycle": settings.lifecycle_url.rstrip("/"),
            "notifications": settings.notifications_url.rstrip("/"),
        }
        self.http = httpx.AsyncClient(timeout=settings.api_timeout_seconds, transport=transport)

    async def close(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if method != "GET":
            headers["Idempotency-Key"] = key or str(uuid.uuid4())
        try:
            response = await self.http.request(
                method, f"{self.bases[service]}{path}", headers=headers, json=body
            )
        except httpx.HTTPError:
            raise Unavailable(service) from None
        if response.status_code >= 500:
            raise Unavailable(service)
        if response.status_code >= 400:
            raise Refused.of(response)
        return response

    async def get(self, service: str, path: str, token: str | None) -> Any:
        return (await self.call(service, "GET", path, token=token)).json()

    async def send(
        self,
        service: str,
        method: str,
        path: str,
        token: str | None,
        body: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> Any:
        response = await self.call(service, method, path, token=token, body=body, key=key)
        return response.json() if response.content else {}
