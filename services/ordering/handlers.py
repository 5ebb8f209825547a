"""Ordering consumes nothing yet: it is the source of accounts, roles and orders."""

from __future__ import annotations

from shared.messaging import EventConsumer

consumer = EventConsumer("ordering")
