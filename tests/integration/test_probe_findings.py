"""What an outside probe found (issue 12, findings 2-4), on the real services."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from shared.runtime import create_app, load_spec
from tests.integration.ordering_helpers import Ordering, running_ordering
from tests.support import Backing, deployment

pytestmark = pytest.mark.integration
PROBLEM = "urn:subscription-platform:problem:"
ACCOUNT = {
    "name": "Fjord AS",
    "country": "NO",
    "currency": "NOK",
    "time_zone": "Europe/Oslo",
    "buyer": {"email": "kari@example.com", "name": "Kari"},
}


@pytest.fixture(scope="module")
async def ordering(backing: Backing) -> AsyncIterator[Ordering]:
    async with running_ordering(backing) as service:
        yield service


async def test_replaying_sign_up_never_hands_out_a_credential(ordering: Ordering) -> None:
    """Finding 2: the same Idempotency-Key and body, without any credential, answers the same
    account, but only the first answer carries the buyer's token."""
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    first = await ordering.client.post("/v1/accounts", json=ACCOUNT, headers=headers)
    again = await ordering.client.post("/v1/accounts", json=ACCOUNT, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["token"]
    assert again.json()["id"] == first.json()["id"]
    assert again.json().get("token") is None
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers


@pytest.mark.parametrize(
    "name",
    ["a\u0000b", "Fjord\u0085AS", "Fjord\u2028AS", "Fjord\u2029AS", "Fjord\u202eSA", "a\x1bb"],
    ids=["NUL", "NEL", "LINE SEPARATOR", "PARAGRAPH SEPARATOR", "RLO", "ESC"],
)
async def test_text_fields_refuse_control_characters_with_a_422(
    ordering: Ordering, name: str
) -> None:
    """Finding 4: every text field goes through one shared type (shared.schemas.Text)."""
    before = await ordering.state()
    response = await ordering.call("POST", "/v1/accounts", body={**ACCOUNT, "name": name})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == ["name"]
    assert await ordering.state() == before


@pytest.mark.parametrize("service", ["invoicing", "lifecycle"])
async def test_a_huge_body_is_refused_before_it_is_read_or_the_caller_known(
    backing: Backing, service: str
) -> None:
    """Finding 3: size and authentication come before parsing, in shared/, on every service.
    A 100 MiB body without a token is answered 401 after at most one chunk was read; with a
    declared size over the limit, 413 without reading any."""
    async with deployment(backing, (service,)) as dep:
        app = create_app(load_spec(service), dep.settings(service))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
                path = {
                    "lifecycle": "/v1/test-clocks",
                    "invoicing": f"/v1/operator/invoices/{uuid.uuid4()}/bank-payments",
                }[service]
                chunks_read = 0

                async def hundred_mib() -> AsyncIterator[bytes]:
                    nonlocal chunks_read
                    for _ in range(100 * 16):
                        chunks_read += 1
                        yield b" " * 65536

                unauthenticated = await client.post(path, content=hundred_mib())
                assert unauthenticated.status_code == 401
                assert unauthenticated.json()["type"] == PROBLEM + "unauthorized"
                assert chunks_read <= 1

                declared = await client.post(
                    path,
                    content=b"{}",
                    headers={"Content-Length": str(100 * 1024 * 1024)},
                )
                assert declared.status_code == 413
                assert declared.json()["type"] == PROBLEM + "body-too-large"
