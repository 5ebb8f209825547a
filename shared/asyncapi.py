"""The published Kafka contract of a service as an AsyncAPI 3.0 document (``/asyncapi.json``).

Built from the event catalogue (``shared.contracts``): the channel a service publishes to with
every event it publishes (envelope + payload JSON Schema), and the channels it consumes.
"""

from __future__ import annotations

from typing import Any

from shared.contracts import CATALOGUE, PRODUCER_OF, Envelope
from shared.topics import Topics


def _message(event_type: str, version: int) -> dict[str, Any]:
    payload = CATALOGUE[(event_type, version)].model_json_schema(mode="serialization")
    envelope = Envelope.model_json_schema(mode="serialization")
    envelope["properties"]["payload"] = payload
    envelope["properties"]["event_type"] = {"const": event_type}
    envelope["properties"]["schema_version"] = {"const": version}
    return {
        "name": event_type,
        "title": f"{event_type} v{version}",
        "summary": (CATALOGUE[(event_type, version)].__doc__ or "").strip().split("\n")[0],
        "contentType": "application/json",
        "headers": {"type": "object", "properties": {"event_type": {"const": event_type}}},
        "payload": envelope,
    }


def document(service: str, topics: Topics, consumes: list[str]) -> dict[str, Any]:
    published = sorted(
        (event_type, version)
        for (event_type, version) in CATALOGUE
        if PRODUCER_OF[event_type] == service
    )
    channel = topics.events(service)
    messages = {f"{e}.v{v}": _message(e, v) for e, v in published}
    channels: dict[str, Any] = {
        "published": {
            "address": channel,
            "description": "Key: the account id (an account's events stay in order).",
            "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in messages},
        }
    }
    for producer in consumes:
        channels[f"consumed-{producer}"] = {"address": topics.events(producer)}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": f"{service} events",
            "version": "1",
            "description": "Every message is one JSON envelope; a published field never changes "
            "meaning: a new meaning is a new schema_version.",
        },
        "channels": channels,
        "operations": {
            "publish": {"action": "send", "channel": {"$ref": "#/channels/published"}},
            **{
                f"consume-{p}": {
                    "action": "receive",
                    "channel": {"$ref": f"#/channels/consumed-{p}"},
                }
                for p in consumes
            },
        },
        "components": {"messages": messages},
    }
