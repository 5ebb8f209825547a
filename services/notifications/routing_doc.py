"""Writes docs/notifications-routing.md from the routing table: ``python -m
services.notifications.routing_doc``."""

from __future__ import annotations

from pathlib import Path

from .domain import routing_document

DOC = Path(__file__).resolve().parents[2] / "docs" / "notifications-routing.md"

if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(routing_document())
    print(f"wrote {DOC}")
