"""The metrics an operator pages on (issue 14), scraped from a running service."""

from __future__ import annotations

import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.topics import Topics
from tests.integration.conftest import in_process, read_topic
from tests.integration.test_consumer import order_placed, send
from tests.support import Backing, deployment

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_scrape_reports_http_lag_outbox_timers_dead_letters_and_gateway_calls(
    backing: Backing,
) -> None:
    async with deployment(backing, ("invoicing",)) as dep, in_process(dep, "invoicing") as app:
        topics = Topics(dep.prefix)
        account = uuid.uuid4()
        await send(backing, topics.events("ordering"), account, b"{poison", order_placed(account))
        await read_topic(backing.kafka, topics.dead_letters("invoicing"), 1)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://invoicing") as client:
            refused = await client.get(f"/v1/accounts/{account}/invoices")
            assert refused.status_code == 401
            scraped = await client.get("/metrics")
        assert scraped.status_code == 200
        found = samples(scraped.text)
        names = {name for name, _ in found}

    route = "/v1/accounts/{account_id}/invoices"  # the template: no ids in label values
    http = ("method", "GET"), ("route", route), ("status", "401")
    assert found[("platform_http_request_duration_seconds_count", tuple(sorted(http)))] >= 1
    dead = (("consumer", "invoicing"), ("reason", "unparseable"))
    assert found[("platform_dead_letters_total", dead)] >= 1
    charged = (("method", "card"), ("operation", "charge"), ("outcome", "succeeded"))
    assert found[("platform_gateway_calls_total", charged)] >= 1
    lag = [labels for name, labels in found if name == "platform_consumer_lag"]
    assert any(("group", topics.group("invoicing")) in labels for labels in lag)
    for gauge in (
        "platform_outbox_unpublished",
        "platform_outbox_oldest_unpublished_age_seconds",
        "platform_timers",
        "platform_events_waiting",
    ):
        assert gauge in names, gauge
    assert found[("platform_timers", (("state", "failed"),))] == 0
