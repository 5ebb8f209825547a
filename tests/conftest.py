from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import Backing, find_backing


@pytest.fixture(scope="session")
def backing() -> Iterator[Backing]:
    """The real Kafka, PostgreSQL and mail catcher (found as DESIGN.md says)."""
    found, release = find_backing()
    try:
        yield found
    finally:
        release()
