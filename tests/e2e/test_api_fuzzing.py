"""API fuzzing (issue 12): schemathesis over every service's published OpenAPI, against the four
services running as processes, with valid tokens.

Each operation gets a bounded number of generated requests, valid ones and hostile ones
(schemathesis's positive and negative modes), sent with a buyer's token from a real sign-up or
an operator's token; path ids are half of the time the buyer's own account, order and
subscription, so requests get past the access check into the rules. Every answer must be
below 500, and every 4xx an RFC 9457 problem document (``application/problem+json``).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from shared.auth import issue_token
from shared.time.clock import SystemClock
from tests.e2e.journeys import SERVICES
from tests.support import Deployment

pytestmark = pytest.mark.e2e

EXAMPLES_PER_OPERATION = 8  # about 600 requests in all: the whole module stays near a minute
NOT_FUZZED = {"/metrics"}  # Prometheus text, no request input


@schemathesis.check
def client_errors_are_problem_documents(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    if 400 <= response.status_code < 500:
        media_type = response.headers.get("content-type", [""])[0].split(";")[0]
        assert media_type == "application/problem+json", (
            f"{case.operation.label} answered {response.status_code} as {media_type!r}:"
            f" {response.text[:300]}"
        )
    return None


@pytest.fixture(scope="module")
async def callers(clocked_platform: Deployment) -> dict[str, Any]:
    """A buyer from a real sign-up (with an order), and an operator's token."""
    dep = clocked_platform
    async with httpx.AsyncClient(base_url=dep.url("ordering"), timeout=15) as client:
        opened = await client.post(
            "/v1/accounts",
            headers={"Idempotency-Key": str(uuid.uuid4())},
            json={
                "name": "Fuzz AS",
                "country": "NO",
                "currency": "NOK",
                "language": "en",
                "time_zone": "Europe/Oslo",
                "buyer": {"email": f"fuzz-{uuid.uuid4().hex[:8]}@example.com", "name": "Kari"},
            },
        )
        assert opened.status_code == 201, opened.text
        account = opened.json()
        buyer = {"Authorization": f"Bearer {account['token']}"}
        ordered = await client.post(
            f"/v1/accounts/{account['id']}/orders",
            headers={**buyer, "Idempotency-Key": str(uuid.uuid4())},
            json={"offering": "autocad", "term": "annual", "seats": 1, "payment_method": "card"},
        )
        assert ordered.status_code == 201, ordered.text
        order = ordered.json()
    operator = issue_token(
        dep.settings("ordering"), SystemClock(), subject=uuid.uuid4(), kind="operator"
    )
    return {
        "tokens": [account["token"], operator],
        "ids": {
            "account_id": account["id"],
            "user_id": account["buyer"]["user_id"],
            "order_id": order["id"],
            "subscription_id": order["subscription_id"],
        },
    }


@pytest.mark.parametrize("service", SERVICES)
def test_no_operation_answers_5xx_and_every_4xx_is_a_problem_document(
    service: str, clocked_platform: Deployment, callers: dict[str, Any]
) -> None:
    base_url = clocked_platform.url(service)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    known_ids: dict[str, str] = callers["ids"]
    session = requests.Session()
    started, statuses = time.monotonic(), Counter[int]()

    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"{service}'s OpenAPI has an invalid operation: {result}"
        if result.ok().path not in NOT_FUZZED:
            operations.append(result.ok())
    assert operations, f"{service} publishes no operations"
    for operation in operations:
        cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
            GenerationMode.NEGATIVE
        )

        @given(case=cases, token=st.sampled_from(callers["tokens"]), own_ids=st.booleans())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case[Any], token: str, own_ids: bool) -> None:
            if own_ids and case.path_parameters:
                for name in case.path_parameters:
                    if name in known_ids:
                        case.path_parameters[name] = known_ids[name]
            response = case.call_and_validate(
                base_url=base_url,
                session=session,
                headers={"Authorization": f"Bearer {token}"},
                checks=[not_a_server_error, client_errors_are_problem_documents],
                timeout=15,
            )
            statuses[response.status_code] += 1

        fuzz()
    print(
        f"\n  {service}: {len(operations)} operations, {statuses.total()} requests"
        f" in {time.monotonic() - started:.1f} s; answers: {dict(sorted(statuses.items()))}"
    )
    assert any(400 <= status < 500 for status in statuses), "no hostile request was refused"
