"""The benchmark's own parsing (bench/e2e.py): what it counts must be what Kafka wrote."""

from __future__ import annotations

import struct

from bench.e2e import _offset_commit_key


def key(version: int, *fields: str, partition: int | None = None) -> bytes:
    out = struct.pack(">h", version)
    for text in fields:
        raw = text.encode()
        out += struct.pack(">h", len(raw)) + raw
    if partition is not None:
        out += struct.pack(">i", partition)
    return out


def test_an_offset_commit_key_names_group_topic_and_partition() -> None:
    assert _offset_commit_key(key(1, "t1.invoicing", "t1.ordering.events", partition=2)) == (
        "t1.invoicing",
        "t1.ordering.events",
        2,
    )
    assert _offset_commit_key(key(0, "g", "t", partition=0)) == ("g", "t", 0)


def test_group_metadata_records_are_not_offset_commits() -> None:
    assert _offset_commit_key(key(2, "t1.invoicing")) is None
    assert _offset_commit_key(None) is None
    assert _offset_commit_key(b"") is None
