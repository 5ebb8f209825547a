"""Replication of the platform's topics comes from configuration (``PLATFORM_TOPIC_*``)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.config import Settings


def test_replication_defaults_to_one_replica_for_the_single_local_broker() -> None:
    settings = Settings()
    assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (1, 1)


def test_replication_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_TOPIC_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("PLATFORM_TOPIC_MIN_INSYNC_REPLICAS", "2")
    settings = Settings()
    assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (3, 2)


@pytest.mark.parametrize(("replicas", "in_sync"), [(1, 2), (3, 4), (0, 0), (3, 0)])
def test_impossible_replication_is_refused_at_start(replicas: int, in_sync: int) -> None:
    with pytest.raises(ValidationError):
        Settings(topic_replication_factor=replicas, topic_min_insync_replicas=in_sync)


def test_a_list_of_bootstrap_servers_reaches_every_client_as_a_list() -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9192, 127.0.0.1:9193,127.0.0.1:9194,")
    assert settings.kafka_servers == ["127.0.0.1:9192", "127.0.0.1:9193", "127.0.0.1:9194"]
