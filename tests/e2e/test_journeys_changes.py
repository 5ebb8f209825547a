"""Journeys 6-10 (issue 7): refunds, product switches, monthly lapses, no-grace offerings and a
primary admin handed over. The four services run as OS processes on the real stack; each journey
has its own test clock and accounts. Rule ids name what each step proves."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.lifecycle.domain import NO_GRACE_OFFERINGS
from services.ordering.domain import catalogue
from shared.auth import issue_token
from shared.time.clock import SystemClock
from tests.e2e.journeys import (
    ACTIVE,
    CANCELLED,
    EXPIRED,
    SUSPENDED,
    Account,
    Journey,
    local,
)

pytestmark = pytest.mark.e2e


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def order(
    j: Journey, account: Account, offering: str, term: str, *, auto_renew: bool, seats: int = 1
) -> dict[str, Any]:
    return await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/orders",
        account.auth,
        {
            "offering": offering,
            "term": term,
            "seats": seats,
            "payment_method": "card",
            "auto_renew": auto_renew,
        },
    )


async def refused(
    j: Journey, method: str, service: str, path: str, who: dict[str, str], body: dict[str, Any]
) -> tuple[int, str]:
    """A refused request: its status and the slug of its problem type."""
    response = await j.http.request(
        method,
        j.url(service, path),
        headers={**who, "Idempotency-Key": str(uuid.uuid4())},
        json=body,
    )
    assert response.status_code >= 400, f"{path}: accepted: {response.text}"
    return response.status_code, response.json()["type"].rsplit(":", 1)[-1]


Mail = tuple[str, str, str, tuple[str, ...]]  # event, template, who, roles it was sent for


class Mails:
    """The account's delivery log, read step by step: each call returns what was logged since
    the previous one, so a mail is pinned to the clock step (business time) that caused it.
    ``people`` names the addresses (e.g. buyer=..., ola=...)."""

    def __init__(self, j: Journey, account: Account, **people: str) -> None:
        self.j = j
        self.account = account
        self.names = {address.lower(): name for name, address in people.items()}
        self.seen: set[str] = set()
        self.last: list[dict[str, Any]] = []

    def subjects(self, template: str) -> list[str]:
        """Subjects of the mails of ``template`` in the last step, oldest first."""
        return [d["subject"] for d in self.last if d["template"] == template]

    async def new(self) -> list[Mail]:
        entries = [d for d in await self.j.deliveries(self.account) if d["id"] not in self.seen]
        self.seen |= {d["id"] for d in entries}
        self.last = entries
        assert all(d["status"] == "sent" for d in entries), entries
        return sorted(
            (
                d["event_type"],
                d["template"],
                self.names.get(d["recipient"], d["recipient"]),
                tuple(sorted(d["roles"])),
            )
            for d in entries
        )


async def credit_notes(j: Journey, account: Account) -> list[dict[str, Any]]:
    data = await j.get("invoicing", f"/v1/accounts/{account.id}/credit-notes", account.auth)
    items: list[dict[str, Any]] = data["items"]
    return items


# --- journey 6 --------------------------------------------------------------------------------


async def test_journey_6_refund_inside_30_days_ends_access_at_once(journey: Journey) -> None:
    """R38, R39: a direct annual card purchase refunded on day 10: a credit note for the paid
    invoice, RefundProcessed with the settlement date 7 business days on (card: "5-7 business
    days", the mail says so), access ends at once (Cancelled, no entitlements). A second account
    asking 30 days and one second after its purchase is refused: `refund-window-closed` (R38)."""
    j = journey
    bought = local(2030, 5, 6, 10, 0)  # a Monday
    await j.start_clock(bought)
    kari = await j.open_account()
    late = await j.open_account()
    first = await order(j, kari, "autocad", "annual", auto_renew=True, seats=2)
    second = await order(j, late, "autocad", "annual", auto_renew=True)
    await j.advance(local(2030, 5, 6, 10, 5), "purchases settle")
    [invoice] = await j.invoices(kari)
    assert invoice["status"] == "paid"
    mails = Mails(j, kari, buyer=kari.buyer_email)
    assert await mails.new() == [
        ("InvoiceIssued", "invoice_issued", "buyer", ("buyer",)),
        ("InvoicePaid", "payment_receipt", "buyer", ("buyer",)),
        ("OrderPlaced", "order_confirmation", "buyer", ("buyer",)),
        ("RolesChanged", "admin_appointed", "buyer", ("primary_admin",)),
        ("SubscriptionActivated", "product_access_granted", "buyer", ("primary_admin",)),
    ]

    # Day 10 (Thursday 2030-05-16): the buyer asks for a refund through ordering.
    await j.advance(local(2030, 5, 16, 9, 0), "day 10")
    assert await mails.new() == []
    refund = await j.post(
        "ordering",
        f"/v1/subscriptions/{first['subscription_id']}/refunds",
        kari.auth,
        {"reason": "Bought the wrong product"},
    )
    assert refund["purchase_kind"] == "order"
    assert at(refund["purchased_at"]) == bought
    await j.advance(local(2030, 5, 16, 9, 5), "refund settles")

    # R39: access ends at once.
    sub = await j.subscription(kari, first["subscription_id"])
    assert sub["stage"] == "cancelled"
    assert sub["stage_reason"] == "refunded"
    assert at(sub["stage_changed_at"]) == local(2030, 5, 16, 9, 0)
    assert sub["next_stage_at"] is None
    assert sub["entitlements"] == CANCELLED  # R35
    sold = await j.get("ordering", f"/v1/subscriptions/{first['subscription_id']}", kari.auth)
    assert (sold["stage"], sold["auto_renew"]) == ("cancelled", False)
    assert at(sold["refunded_at"]) == local(2030, 5, 16, 9, 0)

    # R39: a credit note for the paid invoice, paid back to the card, settles in 7 business days.
    [note] = await credit_notes(j, kari)
    assert note["invoice_id"] == invoice["id"]
    assert note["refund_id"] == refund["id"]
    assert note["refund_method"] == "card"
    assert note["gross_total"] == f"-{invoice['gross_total']}"
    assert note["refund_amount"] == invoice["gross_total"]
    assert note["expected_settlement_date"] == "2030-05-27"  # Thu 16 + 7 business days
    assert at(note["issued_at"]) == local(2030, 5, 16, 9, 0)
    [credited] = await j.invoices(kari)
    assert credited["status"] == "credited"

    # R9, R12: the buyer (also primary admin) is told once per event, the refund mail states
    # the 5-7 business days and the date.
    assert await mails.new() == [
        ("RefundProcessed", "refund_confirmation", "buyer", ("buyer",)),
        ("StageChanged", "stage_changed", "buyer", ("buyer", "primary_admin")),
    ]
    [refund_mail] = [m for m in await j.mail.to(kari.buyer_email) if "refund" in m["subject"]]
    amount = f"NOK\xa0{Decimal(invoice['gross_total']):,.2f}"
    assert f"We have refunded {amount} to your card." in refund_mail["text"]
    assert "Card refunds take 5-7 business days" in refund_mail["text"]
    assert "Expected by: 27 May 2030." in refund_mail["text"]

    # R38: 30 days and one second after the purchase, the other account is refused.
    await j.advance(bought + timedelta(days=30, seconds=1), "day 30 passed")
    assert await refused(
        j,
        "POST",
        "ordering",
        f"/v1/subscriptions/{second['subscription_id']}/refunds",
        late.auth,
        {"reason": "Too late"},
    ) == (422, "refund-window-closed")
    assert (await j.subscription(late, second["subscription_id"]))["stage"] == "active"
    assert await credit_notes(j, late) == []
    assert await mails.new() == []


# --- journey 7 --------------------------------------------------------------------------------


async def test_journey_7_product_switch_inside_the_window_applies_at_renewal(
    journey: Journey,
) -> None:
    """R29: an auto-renewing annual AutoCAD bought 2030-01-10 renews 2031-01-10 00:00 local;
    its renewal window opens 90 days before, 2030-10-12 00:00 local (R26). A switch to Revit a
    second before the window is refused (`product-switch-outside-window`); at the opening it is
    accepted, effective at the renewal date; the renewal invoice bills Revit and the subscription
    carries it from then on (R25)."""
    j = journey
    await j.start_clock(local(2030, 1, 10, 14, 30))
    kari = await j.open_account()
    bought = await order(j, kari, "autocad", "annual", auto_renew=True, seats=2)
    sub_id = bought["subscription_id"]
    switch_path = f"/v1/subscriptions/{sub_id}/product-switch"
    await j.advance(local(2030, 1, 10, 15, 0), "purchase settles")
    mails = Mails(j, kari, buyer=kari.buyer_email)
    await mails.new()
    sub = await j.subscription(kari, sub_id)
    assert at(sub["renews_at"]) == local(2031, 1, 10)
    assert at(sub["renewal_window_opens_at"]) == local(2030, 10, 12)

    # R29: outside the window (and long before it) the switch is refused; nothing is pending.
    assert await refused(
        j, "PUT", "ordering", switch_path, kari.auth, {"new_offering": "revit"}
    ) == (422, "product-switch-outside-window")
    await j.advance(local(2030, 10, 11, 23, 59, 59), "a second before the window")
    assert await mails.new() == []
    assert await refused(
        j, "PUT", "ordering", switch_path, kari.auth, {"new_offering": "revit"}
    ) == (422, "product-switch-outside-window")

    # The window opens (R26: the buyer is told); the switch is accepted for the renewal date.
    await j.advance(local(2030, 10, 12), "the window opens")
    assert await mails.new() == [
        ("RenewalWindowOpened", "renewal_window_opened", "buyer", ("buyer",)),
    ]
    response = await j.http.put(
        j.url("ordering", switch_path),
        headers={**kari.auth, "Idempotency-Key": str(uuid.uuid4())},
        json={"new_offering": "revit"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["pending_offering"] == "revit"
    await j.advance(local(2030, 10, 12, 0, 5), "the switch settles")
    sub = await j.subscription(kari, sub_id)
    assert sub["offering"] == "autocad"  # not before the renewal date
    assert sub["pending_changes"] == {"term": None, "offering": "revit"}
    assert await mails.new() == []

    # The renewal date: the renewal invoice bills Revit, the subscription is Revit.
    await j.advance(local(2031, 1, 10, 12, 0), "the renewal date")
    sub = await j.subscription(kari, sub_id)
    assert (sub["stage"], sub["offering"], sub["seats"]) == ("active", "revit", 2)
    assert sub["pending_changes"] == {"term": None, "offering": None}
    assert at(sub["starts_at"]) == local(2031, 1, 10)
    assert at(sub["renews_at"]) == local(2032, 1, 10)
    first, renewal = await j.invoices(kari)
    assert at(renewal["issued_at"]) == local(2031, 1, 10)
    assert (renewal["purpose"], renewal["status"]) == ("renewal", "paid")
    lines = (await j.get("invoicing", f"/v1/invoices/{renewal['id']}", kari.auth))["lines"]
    assert [(line["description"], line["quantity"]) for line in lines] == [
        ("Revit subscription, 1 year, 2 seat(s)", 2)
    ]
    first_lines = (await j.get("invoicing", f"/v1/invoices/{first['id']}", kari.auth))["lines"]
    assert [line["description"] for line in first_lines] == [
        "AutoCAD subscription, 1 year, 2 seat(s)"
    ]
    assert Decimal(renewal["gross_total"]) > Decimal(first["gross_total"])  # Revit costs more
    sold = await j.get("ordering", f"/v1/subscriptions/{sub_id}", kari.auth)
    assert (sold["offering"], sold["pending_offering"]) == ("revit", None)
    assert await mails.new() == [
        ("InvoiceIssued", "invoice_issued", "buyer", ("buyer",)),
        ("InvoicePaid", "payment_receipt", "buyer", ("buyer",)),
        ("SubscriptionRenewed", "renewal_confirmation", "buyer", ("buyer",)),
    ]


# --- journey 8 --------------------------------------------------------------------------------


def stage_of(sub: dict[str, Any]) -> tuple[str, datetime, datetime | None]:
    nxt = sub["next_stage_at"]
    return sub["stage"], at(sub["stage_changed_at"]), at(nxt) if nxt else None


async def test_journey_8_monthly_lapses_15_days_expired_15_suspended_30_day_late_window(
    journey: Journey,
) -> None:
    """R23, R31-R33, R27, R34 for a monthly term: two accounts buy monthly AutoCAD without
    auto-renew on 2030-02-05. At 2030-03-05 00:00 local both are Expired (15 days, R32), from
    2030-03-20 Suspended (15 days for monthly, R33) and at 2030-04-04 00:00 local (after the
    DST change) Cancelled. The late-renewal window is those 30 days (R27): the second account
    renews on its last day and is Active again on the original anniversary; the first, once
    Cancelled, is refused (R34)."""
    j = journey
    await j.start_clock(local(2030, 2, 5, 9, 0))
    kari = await j.open_account()
    ola = await j.open_account()
    lapsing = (await order(j, kari, "autocad", "monthly", auto_renew=False))["subscription_id"]
    renewing = (await order(j, ola, "autocad", "monthly", auto_renew=False))["subscription_id"]
    await j.advance(local(2030, 2, 5, 9, 5), "purchases settle")
    mails = Mails(j, kari, buyer=kari.buyer_email)
    ola_mails = Mails(j, ola, buyer=ola.buyer_email)
    assert (
        await mails.new()
        == await ola_mails.new()
        == [
            ("InvoiceIssued", "invoice_issued", "buyer", ("buyer",)),
            ("InvoicePaid", "payment_receipt", "buyer", ("buyer",)),
            ("OrderPlaced", "order_confirmation", "buyer", ("buyer",)),
            ("RolesChanged", "admin_appointed", "buyer", ("primary_admin",)),
            ("SubscriptionActivated", "product_access_granted", "buyer", ("primary_admin",)),
        ]
    )
    sub = await j.subscription(kari, lapsing)
    assert at(sub["expires_at"]) == local(2030, 3, 4, 23, 59, 59)  # R23
    assert at(sub["renews_at"]) == local(2030, 3, 5)

    await j.advance(local(2030, 3, 4, 23, 59, 59), "the last second of the term")
    assert stage_of(await j.subscription(kari, lapsing))[0] == "active"
    assert await mails.new() == [
        ("RenewalReminderDue", "renewal_reminder", "buyer", ("buyer",)),  # 4 days before (R26)
    ]

    await j.advance(local(2030, 3, 5), "the renewal date passes")
    sub = await j.subscription(kari, lapsing)
    assert stage_of(sub) == ("expired", local(2030, 3, 5), local(2030, 3, 20))  # R32: 15 days
    assert sub["entitlements"] == EXPIRED
    assert await mails.new() == [
        ("StageChanged", "stage_changed", "buyer", ("buyer", "primary_admin")),
    ]
    assert mails.subjects("stage_changed") == ["AutoCAD: subscription is now Expired"]

    await j.advance(local(2030, 3, 19, 23, 59, 59), "the last second of Expired")
    assert stage_of(await j.subscription(kari, lapsing))[0] == "expired"
    await j.advance(local(2030, 3, 20), "Expired ends")
    sub = await j.subscription(kari, lapsing)
    assert stage_of(sub) == ("suspended", local(2030, 3, 20), local(2030, 4, 4))  # R33: 15 days
    assert sub["entitlements"] == SUSPENDED
    assert await mails.new() == [
        ("StageChanged", "stage_changed", "buyer", ("buyer", "primary_admin")),
    ]
    assert mails.subjects("stage_changed") == ["AutoCAD: subscription is now Suspended"]

    # R27: the last day of the 30-day late window; the other account renews and is Active
    # again, its next renewal on the original anniversary (the 5th).
    await j.advance(local(2030, 4, 3, 10, 0), "day 29 after the renewal date")
    assert await ola_mails.new() == [
        ("RenewalReminderDue", "renewal_reminder", "buyer", ("buyer",)),
        ("StageChanged", "stage_changed", "buyer", ("buyer", "primary_admin")),
        ("StageChanged", "stage_changed", "buyer", ("buyer", "primary_admin")),
    ]
    assert (await j.subscription(ola, renewing))["stage"] == "suspended"
    late = await j.post("ordering", f"/v1/subscriptions/{renewing}/renewals", ola.auth, {})
    assert late["kind"] == "late"
    await j.advance(local(2030, 4, 3, 10, 5), "the late renewal settles")
    back = await j.subscription(ola, renewing)
    assert back["stage"] == "active"
    assert back["entitlements"] == ACTIVE
    assert at(back["renews_at"]) == local(2030, 4, 5)
    assert at(back["expires_at"]) == local(2030, 4, 4, 23, 59, 59)
    renewal = (await j.invoices(ola))[-1]
    assert (renewal["purpose"], renewal["status"]) == ("renewal", "paid")
    # Reactivated (R33): back to Active, the renewal billed and confirmed, all to the buyer.
    assert await ola_mails.new() == [
        ("InvoiceIssued", "invoice_issued", "buyer", ("buyer",)),
        ("InvoicePaid", "payment_receipt", "buyer", ("buyer",)),
        ("StageChanged", "stage_changed", "buyer", ("buyer", "primary_admin")),
        ("SubscriptionReactivated", "subscription_reactivated", "buyer", ("buyer",)),
        ("SubscriptionRenewed", "renewal_confirmation", "buyer", ("buyer",)),
    ]
    assert ola_mails.subjects("stage_changed") == ["AutoCAD: subscription is now Active"]

    # R33, R34: 15 days of Suspended end at 2030-04-04 00:00 local; Cancelled is final.
    await j.advance(local(2030, 4, 3, 23, 59, 59), "the last second of the late window")
    assert stage_of(await j.subscription(kari, lapsing))[0] == "suspended"
    assert await mails.new() == []
    await j.advance(local(2030, 4, 4), "Suspended ends")
    sub = await j.subscription(kari, lapsing)
    assert stage_of(sub) == ("cancelled", local(2030, 4, 4), None)
    assert sub["entitlements"] == CANCELLED
    assert await mails.new() == [
        ("StageChanged", "stage_changed", "buyer", ("buyer", "primary_admin")),
    ]
    assert mails.subjects("stage_changed") == ["AutoCAD: subscription is now Cancelled"]
    assert await refused(
        j, "POST", "ordering", f"/v1/subscriptions/{lapsing}/renewals", kari.auth, {}
    ) == (409, "subscription-cancelled")
    assert [i["purpose"] for i in await j.invoices(kari)] == ["order"]


# --- journey 9 --------------------------------------------------------------------------------


async def test_journey_9_a_no_grace_offering_goes_straight_to_cancelled(journey: Journey) -> None:
    """R36: Docs is on lifecycle's no-grace list (data) and in ordering's catalogue. Bought
    2030-02-12 without auto-renew, it is Active to 2031-02-11 23:59:59 local (R23), the buyer is
    told of the window and reminded (R26), and at 2031-02-12 00:00 local it goes straight to
    Cancelled: no Expired, no Suspended, no access (R35), nothing later; renewing is refused
    (R34)."""
    assert "docs" in NO_GRACE_OFFERINGS
    assert "docs" in catalogue().offerings
    j = journey
    await j.start_clock(local(2030, 2, 12, 11, 0))
    kari = await j.open_account()
    sub_id = (await order(j, kari, "docs", "annual", auto_renew=False, seats=5))["subscription_id"]
    await j.advance(local(2030, 2, 12, 11, 5), "purchase settles")
    mails = Mails(j, kari, buyer=kari.buyer_email)
    await mails.new()
    sub = await j.subscription(kari, sub_id)
    assert at(sub["expires_at"]) == local(2031, 2, 11, 23, 59, 59)

    await j.advance(local(2031, 2, 11, 23, 59, 59), "the last second of the term")
    sub = await j.subscription(kari, sub_id)
    assert (sub["stage"], sub["entitlements"]) == ("active", ACTIVE)
    assert await mails.new() == [
        ("RenewalReminderDue", "renewal_reminder", "buyer", ("buyer",)),
        ("RenewalReminderDue", "renewal_reminder", "buyer", ("buyer",)),
        ("RenewalReminderDue", "renewal_reminder", "buyer", ("buyer",)),
        ("RenewalWindowOpened", "renewal_window_opened", "buyer", ("buyer",)),
    ]

    await j.advance(local(2031, 2, 12), "expiry")
    sub = await j.subscription(kari, sub_id)
    assert stage_of(sub) == ("cancelled", local(2031, 2, 12), None)
    assert sub["entitlements"] == CANCELLED
    assert await mails.new() == [
        ("StageChanged", "stage_changed", "buyer", ("buyer", "primary_admin")),
    ]
    [stage_mail] = mails.last
    assert stage_mail["subject"] == "Docs: subscription is now Cancelled"
    [text] = [
        m["text"]
        for m in await j.mail.to(kari.buyer_email)
        if m["subject"] == stage_mail["subject"]
    ]
    assert "went from Active to Cancelled" in text
    assert "It cannot be reactivated; a new purchase is needed." in text
    assert await refused(
        j, "POST", "ordering", f"/v1/subscriptions/{sub_id}/renewals", kari.auth, {}
    ) == (409, "subscription-cancelled")

    # Where others would be Expired and then Suspended, nothing happens.
    await j.advance(local(2031, 3, 30), "45 days later")
    assert stage_of(await j.subscription(kari, sub_id)) == ("cancelled", local(2031, 2, 12), None)
    assert await mails.new() == []
    assert [i["purpose"] for i in await j.invoices(kari)] == ["order"]


# --- journey 10 -------------------------------------------------------------------------------


async def test_journey_10_primary_admin_handed_over_access_mails_follow_billing_mails_stay(
    journey: Journey,
) -> None:
    """R3, R10, R9, R12, R8: the buyer adds Ola and hands her the primary-admin role; the buyer
    becomes a secondary admin and keeps every buyer right (auto-renew, the delivery log). From
    then on Ola, the primary admin, gets the product-access mails and no billing or renewal mail
    (and sees no invoices, R8); the buyer gets every billing and renewal mail, and as a
    secondary admin the access mails too, one mail per event (R12)."""
    j = journey
    await j.start_clock(local(2030, 6, 3, 9, 0))
    kari = await j.open_account()
    first = await order(j, kari, "autocad", "annual", auto_renew=True)
    await j.advance(local(2030, 6, 3, 9, 5), "purchase settles")
    ola_email = f"ola-{uuid.uuid4().hex[:8]}@example.com"
    mails = Mails(j, kari, buyer=kari.buyer_email, ola=ola_email)
    assert await mails.new() == [
        ("InvoiceIssued", "invoice_issued", "buyer", ("buyer",)),
        ("InvoicePaid", "payment_receipt", "buyer", ("buyer",)),
        ("OrderPlaced", "order_confirmation", "buyer", ("buyer",)),
        ("RolesChanged", "admin_appointed", "buyer", ("primary_admin",)),
        ("SubscriptionActivated", "product_access_granted", "buyer", ("primary_admin",)),
    ]

    # R4, R3: the buyer (primary admin) adds Ola and hands her the primary-admin role.
    ola = await j.post(
        "ordering",
        f"/v1/accounts/{kari.id}/users",
        kari.auth,
        {"email": ola_email, "name": "Ola Nordmann"},
    )
    response = await j.http.put(
        j.url("ordering", f"/v1/accounts/{kari.id}/primary-admin"),
        headers={**kari.auth, "Idempotency-Key": str(uuid.uuid4())},
        json={"user_id": ola["user_id"]},
    )
    assert response.status_code == 200, response.text
    account = await j.get("ordering", f"/v1/accounts/{kari.id}", kari.auth)
    assert {p["email"]: sorted(p["roles"]) for p in account["people"]} == {
        kari.buyer_email: ["buyer", "secondary_admin"],
        ola_email: ["primary_admin"],
    }
    await j.advance(local(2030, 6, 3, 9, 10), "hand-over settles")
    # Both are told their new role (notifications' rule: whoever newly holds an admin role).
    assert await mails.new() == [
        ("RolesChanged", "admin_appointed", "buyer", ("secondary_admin",)),
        ("RolesChanged", "admin_appointed", "ola", ("primary_admin",)),
    ]
    [to_ola] = await j.mail.to(ola_email)
    assert "You are now the primary administrator of Fjord Arkitekter AS." in to_ola["text"]
    to_kari = [
        m["text"] for m in await j.mail.to(kari.buyer_email) if "administrator" in m["subject"]
    ]
    assert sorted("You are now an administrator of Fjord Arkitekter AS." in t for t in to_kari) == [
        False,  # on opening the account: "the primary administrator"
        True,
    ]

    # R8: Ola administers but sees no billing or renewal data.
    token = issue_token(
        j.dep.settings("ordering"),
        SystemClock(),
        subject=uuid.UUID(ola["user_id"]),
        account_id=uuid.UUID(kari.id),
    )
    ola_auth = {"Authorization": f"Bearer {token}"}
    invoices = await j.http.get(
        j.url("invoicing", f"/v1/accounts/{kari.id}/invoices"), headers=ola_auth
    )
    assert invoices.status_code == 403
    product = await j.get("lifecycle", f"/v1/subscriptions/{first['subscription_id']}", ola_auth)
    assert "renews_at" not in product and product["stage"] == "active"

    # R3: the buyer keeps every buyer right: a second purchase, auto-renew off on the first.
    second = await order(j, kari, "revit", "annual", auto_renew=True)
    response = await j.http.put(
        j.url("ordering", f"/v1/subscriptions/{first['subscription_id']}/auto-renew"),
        headers={**kari.auth, "Idempotency-Key": str(uuid.uuid4())},
        json={"auto_renew": False},
    )
    assert response.status_code == 200, response.text
    await j.advance(local(2030, 6, 3, 9, 15), "second purchase settles")
    assert await mails.new() == [
        ("AutoRenewChanged", "auto_renew_confirmation", "buyer", ("buyer",)),
        ("InvoiceIssued", "invoice_issued", "buyer", ("buyer",)),
        ("InvoicePaid", "payment_receipt", "buyer", ("buyer",)),
        ("OrderPlaced", "order_confirmation", "buyer", ("buyer",)),
        ("SubscriptionActivated", "product_access_granted", "buyer", ("secondary_admin",)),
        ("SubscriptionActivated", "product_access_granted", "ola", ("primary_admin",)),
    ]

    # A year: the first lapses (R24, R31), the second renews (R25). Renewal mail reaches the
    # buyer only; the stage change reaches the buyer as a stage notice and Ola as an access
    # notice (R12: the buyer, also an admin, gets the buyer's mail only).
    await j.advance(local(2031, 6, 3, 12, 0), "a year later")
    assert (await j.subscription(kari, first["subscription_id"]))["stage"] == "expired"
    assert (await j.subscription(kari, second["subscription_id"]))["stage"] == "active"
    assert await mails.new() == [
        ("InvoiceIssued", "invoice_issued", "buyer", ("buyer",)),
        ("InvoicePaid", "payment_receipt", "buyer", ("buyer",)),
        ("RenewalReminderDue", "renewal_reminder", "buyer", ("buyer",)),
        ("RenewalReminderDue", "renewal_reminder", "buyer", ("buyer",)),
        ("RenewalReminderDue", "renewal_reminder", "buyer", ("buyer",)),
        ("RenewalWindowOpened", "renewal_window_opened", "buyer", ("buyer",)),
        ("RenewalWindowOpened", "renewal_window_opened", "buyer", ("buyer",)),
        ("StageChanged", "product_access_changed", "ola", ("primary_admin",)),
        ("StageChanged", "stage_changed", "buyer", ("buyer", "secondary_admin")),
        ("SubscriptionRenewed", "renewal_confirmation", "buyer", ("buyer",)),
    ]
    # Ola's mail in all: the appointment and access only (R10).
    assert await j.mails_to(kari, ola_email) == [
        "admin_appointed",
        "product_access_granted",
        "product_access_changed",
    ]
