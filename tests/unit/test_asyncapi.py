"""The published event contract (DESIGN.md: the AsyncAPI document is the contract)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from fastapi.testclient import TestClient

from shared.asyncapi import document
from shared.config import SERVICE_NAMES, Settings
from shared.contracts import CATALOGUE, PRODUCER_OF
from shared.runtime import create_app, load_spec
from shared.topics import Topics


def test_each_service_documents_every_event_it_publishes_with_its_payload_schema() -> None:
    for service in ("ordering", "invoicing", "lifecycle", "notifications"):
        doc = document(service, Topics("prod."), consumes=["ordering"])
        published = {name for name, producer in PRODUCER_OF.items() if producer == service}
        on_channel = doc["channels"]["published"]["messages"].values()
        messages = {
            m["$ref"]: doc["components"]["messages"][m["$ref"].rsplit("/", 1)[1]]
            for m in on_channel
        }
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


# --- The documents as the services serve them, checked by the reference AsyncAPI parser ---

VALIDATOR = Path(__file__).resolve().parents[2] / "tools" / "asyncapi" / "validate.mjs"


def served(service: str, settings: Settings) -> dict[str, Any]:
    """``/asyncapi.json`` of the service's app (no lifespan: the route needs no broker)."""
    response = TestClient(create_app(load_spec(service), settings)).get("/asyncapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def parse(document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    if shutil.which("node") is None or not (VALIDATOR.parent / "node_modules").is_dir():
        pytest.fail("the AsyncAPI parser is not installed: run scripts/bootstrap")
    return subprocess.run(
        ["node", str(VALIDATOR)],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_the_served_document_passes_the_asyncapi_parser_without_a_diagnostic(
    service: str,
) -> None:
    result = parse(served(service, Settings(service=service)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("valid: AsyncAPI 3."), result.stdout  # nor any warning


def test_the_parser_rejects_a_reference_to_a_nested_schema_left_in_place() -> None:
    """The defect this guards against: pydantic's ``#/$defs/...`` refs inside a message."""
    document = served("invoicing", Settings(service="invoicing"))
    line = document["components"]["schemas"]["InvoiceLine"]
    payload = document["components"]["messages"]["InvoiceIssued.v1"]["payload"]
    payload["properties"]["payload"]["$defs"] = {"InvoiceLine": line}
    payload["properties"]["payload"]["properties"]["lines"]["items"] = {
        "$ref": "#/$defs/InvoiceLine"
    }
    result = parse(document)
    assert result.returncode == 1
    assert "invalid-ref" in result.stdout and "#/$defs/InvoiceLine" in result.stdout


def test_nested_models_are_components_and_every_ref_points_there() -> None:
    document = served("ordering", Settings(service="ordering"))
    text = json.dumps(document)
    assert "$defs" not in text
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text)
    assert {"Person", "PricedLine"} <= set(refs)
    assert set(refs) <= set(document["components"]["schemas"])


def test_servers_come_from_the_settings_and_the_message_key_is_the_account_id() -> None:
    settings = Settings(service="lifecycle", kafka_bootstrap_servers="k1:9092, k2:9094")
    document = served("lifecycle", settings)
    assert document["servers"] == {
        "kafka-1": {"host": "k1:9092", "protocol": "kafka", "description": ANY},
        "kafka-2": {"host": "k2:9094", "protocol": "kafka", "description": ANY},
    }
    for message in document["components"]["messages"].values():
        key = message["bindings"]["kafka"]["key"]
        assert (key["type"], key["format"]) == ("string", "uuid")
        assert "account id" in key["description"]


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_consumed_channels_list_their_messages_and_the_receiver_names_what_it_handles(
    service: str,
) -> None:
    settings = Settings(service=service, topic_prefix="prod.")
    document = served(service, settings)
    consumer = load_spec(service).consumer
    handled: set[str] = set()
    for producer in consumer.producers():
        channel = document["channels"][f"consumed-{producer}"]
        assert channel["address"] == f"prod.{producer}.events"
        on_channel = {m["$ref"].rsplit("/", 1)[1] for m in channel["messages"].values()}
        assert on_channel == {f"{e}.v{v}" for e, v in CATALOGUE if PRODUCER_OF[e] == producer}, (
            producer
        )
        operation = document["operations"][f"consume-{producer}"]
        assert operation["action"] == "receive"
        assert operation["bindings"]["kafka"]["groupId"]["enum"] == [f"prod.{consumer.name}"]
        received = {m["$ref"].rsplit("/", 1)[1].split(".v")[0] for m in operation["messages"]}
        assert received <= {key.split(".v")[0] for key in on_channel}
        handled |= received
    assert handled == set(consumer.handlers)
