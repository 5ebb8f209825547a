"""The published event contract (DESIGN.md: the AsyncAPI document is the contract)."""

from __future__ import annotations

from shared.asyncapi import document
from shared.contracts import PRODUCER_OF
from shared.topics import Topics


def test_each_service_documents_every_event_it_publishes_with_its_payload_schema() -> None:
    for service in ("ordering", "invoicing", "lifecycle", "notifications"):
        doc = document(service, Topics("prod."), consumes=["ordering"])
        published = {name for name, producer in PRODUCER_OF.items() if producer == service}
        messages = doc["components"]["messages"]
        assert {m["name"] for m in messages.values()} == published
        assert doc["channels"]["published"]["address"] == f"prod.{service}.events"
        for message in messages.values():
            envelope = message["payload"]["properties"]
            assert envelope["event_type"] == {"const": message["name"]}
            assert envelope["payload"]["type"] == "object"
        assert doc["channels"]["consumed-ordering"]["address"] == "prod.ordering.events"


def test_order_placed_schema_names_its_money_and_time_fields() -> None:
    doc = document("ordering", Topics(), consumes=[])
    payload = doc["components"]["messages"]["OrderPlaced.v1"]["payload"]["properties"]["payload"]
    assert {"order_number", "placed_at", "seats", "payment_method"} <= set(payload["properties"])
    assert payload["properties"]["placed_at"]["format"] == "date-time"
