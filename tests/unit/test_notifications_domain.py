"""Notifications' pure rules: routing by role (R9-R12), exhaustively."""

from __future__ import annotations

from itertools import combinations

import pytest

from services.notifications import domain
from services.notifications.domain import Member, RoutingError
from shared.contracts import CATALOGUE

ROLES = ("buyer", "primary_admin", "secondary_admin", "payer")
ADMINS = {"primary_admin": "", "secondary_admin": ""}

# Written out by hand from R9-R11 (not derived from routing.json): event type -> the template
# each role receives. A role that is absent receives nothing for that event.
EXPECTED: dict[str, dict[str, str]] = {
    "OrderPlaced": {"buyer": "order_confirmation"},
    "QuoteIssued": {"buyer": "quote_issued"},
    "InvoiceIssued": {"buyer": "invoice_issued", "payer": "invoice_issued"},
    "InvoiceDueSoon": {"buyer": "invoice_due_soon", "payer": "invoice_due_soon"},  # R9, R11
    "InvoiceOverdue": {"buyer": "invoice_overdue", "payer": "invoice_overdue"},  # R9, R11
    "PaymentFailed": {"buyer": "payment_failed"},
    "InvoicePaid": {"buyer": "payment_receipt"},
    "RefundProcessed": {"buyer": "refund_confirmation"},
    "RenewalWindowOpened": {"buyer": "renewal_window_opened"},
    "RenewalReminderDue": {"buyer": "renewal_reminder"},
    "SubscriptionRenewed": {"buyer": "renewal_confirmation"},
    "TermChangeScheduled": {"buyer": "term_change_confirmation"},
    "AutoRenewChanged": {"buyer": "auto_renew_confirmation"},
    "SeatsAdded": {"buyer": "coterm_confirmation"},
    "TrialConverted": {"buyer": "trial_converted"},
    "StageChanged": {
        "buyer": "stage_changed",
        "primary_admin": "product_access_changed",
        "secondary_admin": "product_access_changed",
    },
    "SubscriptionReactivated": {"buyer": "subscription_reactivated"},
    "SubscriptionActivated": {
        "primary_admin": "product_access_granted",
        "secondary_admin": "product_access_granted",
    },
    "RolesChanged": {"primary_admin": "admin_appointed", "secondary_admin": "admin_appointed"},
    # Issue 16 [ours]: personal mail, any role; only the address that asked (plan_mails).
    "SignInLinkRequested": {role: "sign_in_link" for role in ROLES},
}
ROLE_SETS = [frozenset(c) for n in range(1, 5) for c in combinations(ROLES, n)]


def member(email: str, *roles: str, language: str = "en") -> Member:
    return Member(email, email.split("@")[0], language, frozenset(roles))


def expected_template(event_type: str, roles: frozenset[str]) -> str | None:
    """R12: one mail; the buyer's mail wins over an admin's, an admin's over a payer's."""
    for role in ROLES:
        if role in roles and role in EXPECTED[event_type]:
            return EXPECTED[event_type][role]
    return None


def test_the_routing_table_covers_exactly_the_events_r9_to_r11_name() -> None:
    assert set(domain.routing()) == set(EXPECTED)
    assert all((event_type, 1) in CATALOGUE for event_type in EXPECTED)


@pytest.mark.parametrize("event_type", sorted(EXPECTED))
@pytest.mark.parametrize("roles", ROLE_SETS, ids=lambda r: "+".join(sorted(r)))
def test_r9_r10_r11_r12_every_event_for_every_role_combination(
    event_type: str, roles: frozenset[str]
) -> None:
    """One person holding ``roles`` gets exactly the expected mail, once (R12)."""
    found = domain.recipients(domain.routing()[event_type], [member("p@example.com", *roles)])
    template = expected_template(event_type, roles)
    if template is None:
        assert found == []
    else:
        [recipient] = found
        assert recipient.template == template
        assert set(recipient.roles) == roles & set(EXPECTED[event_type])


@pytest.mark.parametrize("event_type", sorted(EXPECTED))
def test_r12_buyer_primary_admin_and_payer_in_one_person_plus_others(event_type: str) -> None:
    """Kari is buyer + primary admin + payer; Ola secondary admin; Per a payer only."""
    people = [
        member("kari@example.com", "buyer", "primary_admin", "payer"),
        member("ola@example.com", "secondary_admin"),
        member("per@example.com", "payer"),
    ]
    found = {r.email: r.template for r in domain.recipients(domain.routing()[event_type], people)}
    wanted = {
        p.email: expected_template(event_type, p.roles)
        for p in people
        if expected_template(event_type, p.roles)
    }
    assert found == wanted


def test_r10_admins_never_get_billing_or_renewal_mail_unless_buyer() -> None:
    for event_type, routes in domain.routing().items():
        for route in routes:
            if route.roles & domain.ADMIN_ROLES and not route.addressee_only:
                assert route.kind in {"product", "user_management"}, event_type


def test_r10_r11_a_table_breaking_the_rules_is_refused() -> None:
    with pytest.raises(RoutingError, match="R10"):
        domain.parse_routing(
            {"InvoiceIssued": [{"template": "x", "kind": "invoice", "roles": ["primary_admin"]}]}
        )
    with pytest.raises(RoutingError, match="R11"):
        domain.parse_routing(
            {"StageChanged": [{"template": "x", "kind": "renewal", "roles": ["payer"]}]}
        )


def test_r12_the_same_address_twice_is_one_recipient() -> None:
    route = domain.routing()["InvoiceIssued"]
    people = [member("Kari@example.com", "buyer"), member("kari@example.com", "payer")]
    [recipient] = domain.recipients(route, people)
    assert recipient.roles == ("buyer", "payer")


def test_r10_roles_changed_mails_only_whoever_newly_holds_an_admin_role() -> None:
    routes = domain.routing()["RolesChanged"]
    before = [
        member("kari@example.com", "buyer", "primary_admin"),
        member("ola@example.com", "secondary_admin"),
        member("per@example.com", "payer"),
    ]
    after = [
        member("kari@example.com", "buyer", "secondary_admin"),  # demoted: newly secondary
        member("ola@example.com", "primary_admin"),  # promoted: newly primary
        member("per@example.com", "payer", "secondary_admin"),  # newly an admin
        member("liv@example.com", "payer"),  # a new payer: no user-management mail
    ]
    found = {r.email: r.roles for r in domain.recipients(routes, after, before)}
    assert found == {
        "kari@example.com": ("secondary_admin",),
        "ola@example.com": ("primary_admin",),
        "per@example.com": ("secondary_admin",),
    }
    assert domain.recipients(routes, before, before) == []  # the same snapshot again: nothing


def test_r11_invoice_addresses_outside_the_projection_get_the_invoice_as_payers() -> None:
    people = [member("kari@example.com", "buyer")]
    extra = domain.invoice_payers(["KARI@example.com", "ap@example.com"], people)
    assert [m.email for m in extra] == ["ap@example.com"]
    found = domain.recipients(domain.routing()["InvoiceIssued"], people + extra)
    assert [(r.email, r.roles) for r in found] == [
        ("ap@example.com", ("payer",)),
        ("kari@example.com", ("buyer",)),
    ]


def test_r13_the_person_language_first_then_the_account_then_english() -> None:
    assert domain.language_of("nb", "en") == "nb"
    assert domain.language_of("", "nb") == "nb"
    assert domain.language_of("de", None) == "en"


async def test_a_connection_lost_between_envelope_and_data_is_retried_not_failed() -> None:
    """After MAIL/RCPT the connection broke: a new connection has no envelope, so DATA would be
    refused with 503 and be mistaken for a permanent rejection. Nothing was handed over."""
    from services.notifications.mailer import OutgoingMail, SmtpSender, TransientFailure

    class Dropped:
        is_connected = False  # what aiosmtplib reports once the server or network hung up

    sender = SmtpSender("127.0.0.1", 9)
    sender._smtp = Dropped()  # type: ignore[assignment]
    with pytest.raises(TransientFailure, match="before DATA"):
        await sender.finish(OutgoingMail("kari@example.com", "<m@x>", b""))


def test_a_sign_in_link_goes_to_the_address_that_asked_and_nobody_else() -> None:
    """Issue 16 [ours]: personal mail reaches only the addressee, whatever roles others hold."""
    from tests.notifications_samples import AT, LINKS, samples

    people = [
        member("kari@example.com", "payer"),
        member("ola@example.com", "buyer", "primary_admin"),
    ]
    planned = domain.plan_mails(
        "SignInLinkRequested",
        samples()["SignInLinkRequested"],
        members=people,
        account=None,
        offering=None,
        links=LINKS,
        now=AT,
    )
    assert [(p.recipient.email, p.recipient.template) for p in planned] == [
        ("kari@example.com", "sign_in_link")
    ]
    assert "https://portal.example/sign-in/abc" in planned[0].mail.text
    with pytest.raises(RoutingError, match="addressee only"):
        domain.parse_routing(
            {"OrderPlaced": [{"template": "x", "kind": "personal", "roles": ["payer"]}]}
        )
