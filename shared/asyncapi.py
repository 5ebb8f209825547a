"""The published Kafka contract of a service as an AsyncAPI 3 document (``/asyncapi.json``).

Built from the event catalogue (``shared.contracts``): the channel a service publishes to with
every event it publishes (envelope + payload JSON Schema), the channels it consumes with the
events on them and the ones it handles, the Kafka servers, and the message key (the account id:
an account's events stay in order). Nested models (pydantic's ``$defs``) are hoisted into
``components.schemas`` so that every ``$ref`` resolves from the document's root; the document
is checked by the reference parser (tests/unit/test_asyncapi.py, tools/asyncapi).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from pydantic import BaseModel

from shared.contracts import CATALOGUE, PRODUCER_OF, Envelope
from shared.topics import Topics

VERSION = "3.1.0"
KAFKA_BINDING = "0.5.0"
REF_TEMPLATE = "#/components/schemas/{model}"


def _schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON Schema with its nested models moved into ``schemas`` (refs rewritten);
    two different models of one name would make one of the refs lie, so that is refused."""
    schema = model.model_json_schema(mode="serialization", ref_template=REF_TEMPLATE)
    for name, nested in schema.pop("$defs", {}).items():
        if schemas.setdefault(name, nested) != nested:
            raise ValueError(f"two different schemas named {name!r} (one in {model.__name__})")
    return schema


def _key() -> dict[str, Any]:
    return {
        "type": "string",
        "format": "uuid",
        "description": "The account id: an account's events are on one partition, in order.",
    }


def _message(event_type: str, version: int, schemas: dict[str, Any]) -> dict[str, Any]:
    model = CATALOGUE[(event_type, version)]
    envelope = _schema(Envelope, schemas)
    envelope["properties"]["payload"] = _schema(model, schemas)
    envelope["properties"]["event_type"] = {"const": event_type}
    envelope["properties"]["schema_version"] = {"const": version}
    return {
        "name": event_type,
        "title": f"{event_type} v{version}",
        "summary": (model.__doc__ or "").strip().split("\n")[0],
        "contentType": "application/json",
        "headers": {"type": "object", "properties": {"event_type": {"const": event_type}}},
        "payload": envelope,
        "bindings": {"kafka": {"key": _key(), "bindingVersion": KAFKA_BINDING}},
    }


def _published_by(producer: str) -> list[tuple[str, int]]:
    return sorted((e, v) for (e, v) in CATALOGUE if PRODUCER_OF[e] == producer)


def _refs(keys: list[str]) -> dict[str, Any]:
    return {key: {"$ref": f"#/components/messages/{key}"} for key in keys}


def document(
    service: str,
    topics: Topics,
    consumes: list[str],
    *,
    handles: Collection[str] = (),
    servers: Sequence[str] = ("127.0.0.1:9092",),
    group: str | None = None,
) -> dict[str, Any]:
    """``consumes``: the producers whose channels the service reads; ``handles``: the event
    types it acts on (empty: every event of those channels); ``servers``: Kafka's bootstrap
    addresses (``Settings.kafka_servers``); ``group``: the consumer group."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for name, producer in [("published", service), *((f"consumed-{p}", p) for p in consumes)]:
        keys = []
        for event_type, version in _published_by(producer):
            key = f"{event_type}.v{version}"
            messages[key] = _message(event_type, version, schemas)
            keys.append(key)
        address = topics.events(producer)
        channels[name] = {
            "address": address,
            "description": f"The events {producer} publishes. Key: the account id.",
            "messages": _refs(keys),
            "bindings": {"kafka": {"topic": address, "bindingVersion": KAFKA_BINDING}},
        }
        if producer == service:
            operations["publish"] = {
                "action": "send",
                "channel": {"$ref": "#/channels/published"},
                "messages": [{"$ref": f"#/channels/published/messages/{k}"} for k in keys],
            }
            continue
        received = [k for k in keys if not handles or k.split(".v")[0] in handles]
        operation: dict[str, Any] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": f"{service} handles these events of {producer}; it skips the others.",
            "messages": [{"$ref": f"#/channels/{name}/messages/{k}"} for k in received],
        }
        if group:
            operation["bindings"] = {
                "kafka": {
                    "groupId": {"type": "string", "enum": [group]},
                    "bindingVersion": KAFKA_BINDING,
                }
            }
        operations[f"consume-{producer}"] = operation
    return {
        "asyncapi": VERSION,
        "info": {
            "title": f"{service} events",
            "version": "1",
            "description": "Every message is one JSON envelope; a published field never changes "
            "meaning: a new meaning is a new schema_version.",
        },
        "defaultContentType": "application/json",
        "servers": {
            f"kafka-{i}" if len(servers) > 1 else "kafka": {
                "host": host,
                "protocol": "kafka",
                "description": "A Kafka bootstrap server (KAFKA_BOOTSTRAP_SERVERS).",
            }
            for i, host in enumerate(servers, start=1)
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }
