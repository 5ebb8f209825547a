"""The shared mechanisms' pure parts: envelope, tokens, problems, idempotency, topics, roles."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr, ValidationError

from shared.auth import issue_token, verify_token
from shared.config import Settings
from shared.contracts import AccountOpened, Envelope, Person, RolesChanged, new_envelope
from shared.idempotency import check_key, request_fingerprint
from shared.people import roles_by_person
from shared.problems import Problem
from shared.time.clock import FrozenClock
from shared.topics import Topics

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_envelope_round_trips_and_a_caused_event_keeps_the_correlation() -> None:
    account = uuid.uuid4()
    event = AccountOpened(
        name="A", country="NO", currency="NOK", language="nb", time_zone="Europe/Oslo"
    )
    first = new_envelope(
        event=event, producer="ordering", account_id=account, occurred_at=T0, recorded_at=T0
    )
    assert Envelope.model_validate_json(first.model_dump_json()) == first
    caused = new_envelope(
        event=event,
        producer="ordering",
        account_id=account,
        occurred_at=T0,
        recorded_at=T0,
        causation=first,
    )
    assert caused.correlation_id == first.correlation_id == first.event_id
    assert caused.causation_id == first.event_id


def test_envelope_refuses_naive_times_and_unknown_fields() -> None:
    good = new_envelope(
        event=AccountOpened(name="A", country="NO", currency="NOK", language="en", time_zone="UTC"),
        producer="ordering",
        account_id=uuid.uuid4(),
        occurred_at=T0,
        recorded_at=T0,
    ).model_dump(mode="json")
    with pytest.raises(ValidationError):
        Envelope.model_validate({**good, "occurred_at": "2026-01-01T12:00:00"})
    with pytest.raises(ValidationError):
        Envelope.model_validate({**good, "surprise": 1})


def settings(secret: str = "k" * 40) -> Settings:
    return Settings(jwt_secret=SecretStr(secret))


def test_token_names_its_user_and_expires_by_the_clock() -> None:
    clock = FrozenClock(T0)
    user, account = uuid.uuid4(), uuid.uuid4()
    token = issue_token(
        settings(), clock, subject=user, account_id=account, ttl=timedelta(minutes=5)
    )
    who = verify_token(settings(), clock, f"Bearer {token}")
    assert (who.subject, who.account_id, who.kind) == (user, account, "user")
    clock.advance(timedelta(minutes=5))
    with pytest.raises(Problem) as expired:
        verify_token(settings(), clock, f"Bearer {token}")
    assert expired.value.status == 401 and "expired" in expired.value.detail


def test_token_signed_with_another_key_or_missing_is_401() -> None:
    clock = FrozenClock(T0)
    token = issue_token(settings("a" * 40), clock, subject=uuid.uuid4())
    for header in (f"Bearer {token}", None, "Basic abc", "Bearer not.a.jwt"):
        with pytest.raises(Problem) as refused:
            verify_token(settings("b" * 40), clock, header)
        assert refused.value.status == 401


def test_problem_document_names_its_rule() -> None:
    doc = Problem(422, "payer-limit", "Too many payers", "At most five (R6).").document("/x")
    assert doc["type"].endswith(":payer-limit") and doc["status"] == 422
    assert doc["instance"] == "/x"


def test_idempotency_fingerprint_ignores_key_order_but_not_values() -> None:
    a = request_fingerprint("POST", "/v1/x", {"a": 1, "b": 2})
    assert a == request_fingerprint("POST", "/v1/x", {"b": 2, "a": 1})
    assert a != request_fingerprint("POST", "/v1/x", {"a": 1, "b": 3})
    with pytest.raises(Problem):
        check_key(None)
    with pytest.raises(Problem):
        check_key("bad\nkey")


def test_topics_carry_the_deployment_prefix() -> None:
    topics = Topics("staging.")
    assert topics.events("invoicing") == "staging.invoicing.events"
    assert topics.dead_letters("notifications") == "staging.notifications.dlq"
    with pytest.raises(ValueError):
        topics.events("billing")


def test_r1_r3_roles_snapshot_merges_the_roles_of_one_person() -> None:
    kari = Person(user_id=uuid.uuid4(), email="kari@example.com", name="Kari", language="nb")
    ola = Person(user_id=uuid.uuid4(), email="ola@example.com", name="Ola", language="nb")
    held = roles_by_person(
        RolesChanged(buyer=kari, primary_admin=ola, secondary_admins=[kari], payers=[kari])
    )
    assert held[kari.user_id][1] == {"buyer", "secondary_admin", "payer"}
    assert held[ola.user_id][1] == {"primary_admin"}


def test_frozen_clock_only_moves_forward() -> None:
    clock = FrozenClock(T0)
    with pytest.raises(ValueError):
        clock.advance(timedelta(seconds=-1))
    with pytest.raises(ValueError):
        FrozenClock(datetime(2026, 1, 1))


async def test_a_background_loop_that_dies_is_started_again() -> None:
    from shared.runtime import supervised

    runs: list[int] = []

    async def flaky_loop() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise ConnectionResetError("lost the database")

    await supervised("flaky", flaky_loop, first_delay=0.001)
    assert runs == [0, 1, 2]
