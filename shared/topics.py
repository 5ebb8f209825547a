"""The topic registry: one topic per producing service, a dead-letter topic per consumer."""

from __future__ import annotations

from dataclasses import dataclass

PRODUCERS = ("ordering", "invoicing", "lifecycle", "notifications")


@dataclass(frozen=True)
class Topics:
    """Topic and group names for one deployment; ``prefix`` isolates tenants of a shared cluster."""

    prefix: str = ""

    def events(self, producer: str) -> str:
        if producer not in PRODUCERS:
            raise ValueError(f"unknown producer {producer!r}")
        return f"{self.prefix}{producer}.events"

    def dead_letters(self, consumer: str) -> str:
        return f"{self.prefix}{consumer}.dlq"

    def test_clocks(self) -> str:
        """The test-clock protocol topic (one partition: its messages stay in order)."""
        return f"{self.prefix}test-clocks"

    def group(self, consumer: str) -> str:
        return f"{self.prefix}{consumer}"

    def all_event_topics(self) -> list[str]:
        return [self.events(p) for p in PRODUCERS]

    def all_topics(self) -> list[str]:
        return self.all_event_topics() + [self.dead_letters(p) for p in PRODUCERS]
