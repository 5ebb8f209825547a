"""Notifications' pure rules: routing by role (R9, R10, R12), templates in two languages (R13)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.notifications import domain
from services.notifications.domain import Member
from services.notifications.mailer import compose


def member(email: str, *roles: str, language: str = "en") -> Member:
    return Member(email, email.split("@")[0], language, frozenset(roles))


def test_r9_order_confirmation_goes_to_the_buyer_only() -> None:
    route = domain.routing()["OrderPlaced"]
    people = [
        member("buyer@example.com", "buyer"),
        member("admin@example.com", "primary_admin"),  # R10: admins get no billing mail
        member("payer@example.com", "payer"),
    ]
    assert [r.email for r in domain.recipients(route, people)] == ["buyer@example.com"]


def test_r12_a_person_with_several_roles_gets_one_mail() -> None:
    route = domain.Route("any", frozenset({"buyer", "primary_admin", "payer"}))
    people = [member("kari@example.com", "buyer", "primary_admin", "payer")]
    [recipient] = domain.recipients(route, people)
    assert recipient.roles == ("buyer", "payer", "primary_admin")


def test_r12_the_same_address_twice_is_one_recipient() -> None:
    route = domain.Route("any", frozenset({"buyer", "payer"}))
    people = [member("Kari@example.com", "buyer"), member("kari@example.com", "payer")]
    assert len(domain.recipients(route, people)) == 1


@pytest.mark.parametrize(
    ("language", "subject"), [("en", "Order confirmation ORD-1"), ("nb", "Ordrebekreftelse ORD-1")]
)
def test_r13_order_confirmation_renders_in_both_languages(language: str, subject: str) -> None:
    mail = domain.render("order_confirmation", language, context("Kari"))
    assert mail.subject == subject
    assert "ORD-1" in mail.text and "ORD-1" in mail.html


def test_html_is_escaped_and_subjects_stay_one_line() -> None:
    mail = domain.render("order_confirmation", "en", context("<script>x</script>"))
    assert "<script>" not in mail.html and "&lt;script&gt;" in mail.html
    evil = domain.render(
        "order_confirmation", "en", {**context("x"), "order_number": "1\r\nBcc: a@b.c"}
    )
    assert "\n" not in evil.subject and "\r" not in evil.subject


def test_a_recipient_with_cr_lf_cannot_inject_headers() -> None:
    with pytest.raises(ValueError):
        compose(
            sender="a@example.com",
            recipient="x@example.com\r\nBcc: evil@example.com",
            subject="s",
            text="t",
            html="h",
            message_key="k",
        )


def test_r13_dates_are_shown_in_the_account_time_zone() -> None:
    shown = domain.local_time(datetime(2025, 6, 9, 22, 0, tzinfo=UTC), "Europe/Oslo")
    assert shown == "2025-06-10 00:00 CEST"


def context(name: str) -> dict[str, object]:
    return {
        "recipient_name": name,
        "order_number": "ORD-1",
        "placed_at": "2025-01-01 10:00 CET",
        "offering": "autocad",
        "term": "annual",
        "seats": 1,
        "payment_method": "card",
        "auto_renew": True,
    }
