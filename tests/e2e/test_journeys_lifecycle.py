"""Journeys 2-5 (issue 7): running out, partner invoices, installments and a late renewal.

The four services run as OS processes on the real stack (the fixtures of ``conftest.py``); each
journey opens its own account on its own test clock and goes through the public APIs only. Every
step asserts exact outcomes: stages and dates at local time, invoices, and the delivery log's
new entries (template, recipient, the recipient's routed roles). Rule ids name what each step
proves.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

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

# R1, R12: the first user is buyer and primary admin; an event routed to both roles mails them once
BUYER_ADMIN = ("buyer", "primary_admin")
Mail = tuple[str, str, tuple[str, ...]]  # (template, recipient, the recipient's routed roles)


def at(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class MailLog:
    """The account's delivery log, read step by step: ``new()`` gives what was logged since the
    previous call, as a sorted list (mails of one step are not ordered among themselves)."""

    def __init__(self, journey: Journey, account: Account) -> None:
        self.journey = journey
        self.account = account
        self.seen: set[str] = set()
        self.subjects: dict[tuple[str, str], str] = {}  # (template, recipient) -> subject

    async def new(self) -> list[Mail]:
        fresh = [d for d in await self.journey.deliveries(self.account) if d["id"] not in self.seen]
        self.seen |= {d["id"] for d in fresh}
        self.subjects = {(d["template"], d["recipient"]): d["subject"] for d in fresh}
        assert [d for d in fresh if d["status"] != "sent"] == [], "every mail is sent"
        return sorted((d["template"], d["recipient"], tuple(sorted(d["roles"]))) for d in fresh)


async def add_secondary_admin(j: Journey, account: Account) -> tuple[str, dict[str, str]]:
    """R4: the buyer (also primary admin, R1) adds a user and appoints them secondary admin."""
    email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
    user = await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/users",
        account.auth,
        {"email": email, "name": "Ola Admin"},
    )
    await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/secondary-admins",
        account.auth,
        {"user_id": user["user_id"]},
        expect=200,
    )
    token = issue_token(
        j.dep.settings("lifecycle"), SystemClock(), subject=uuid.UUID(user["user_id"])
    )
    return email, {"Authorization": f"Bearer {token}"}


async def stage_of(j: Journey, account: Account, subscription_id: str) -> dict[str, Any]:
    sub = await j.subscription(account, subscription_id)
    return {
        "stage": sub["stage"],
        "entitlements": sub["entitlements"],
        "stage_changed_at": at(sub["stage_changed_at"]),
        "next_stage_at": at(sub["next_stage_at"]),
    }


async def test_journey_2_auto_renew_off_runs_out_expired_suspended_cancelled(
    journey: Journey,
) -> None:
    """Auto-renew turned off after the purchase (R24): the renewal window opens 90 days before
    (R26), reminders 45, 30 and 4 days before the expiry date (R26), expiry at 23:59:59 local
    (R23), Expired 15 days (R32), Suspended 30 days (R33), Cancelled (R34); what each stage
    allows (R35); stage mails to the buyer (R9), access mails to the admins (R10), the buyer who
    is also primary admin gets the buyer's mail only (R12)."""
    j = journey
    await j.start_clock(local(2030, 3, 5, 10, 0))
    account = await j.open_account()
    log = MailLog(j, account)
    buyer = account.buyer_email
    admin, admin_auth = await add_secondary_admin(j, account)
    order = await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/orders",
        account.auth,
        {"offering": "autocad", "term": "annual", "seats": 3, "payment_method": "card"},
    )
    sub_id = order["subscription_id"]
    await j.advance(local(2030, 3, 5, 10, 5), "purchase settles")
    assert await log.new() == sorted(
        [
            ("admin_appointed", buyer, ("primary_admin",)),  # R1: the account's first admin
            ("admin_appointed", admin, ("secondary_admin",)),  # R4
            ("invoice_issued", buyer, ("buyer",)),
            ("order_confirmation", buyer, ("buyer",)),
            ("payment_receipt", buyer, ("buyer",)),
            ("product_access_granted", admin, ("secondary_admin",)),  # R10
            ("product_access_granted", buyer, ("primary_admin",)),
        ]
    )
    [invoice] = await j.invoices(account)
    assert (invoice["purpose"], invoice["status"]) == ("order", "paid")

    # R24: the buyer turns auto-renew off; it stays Active with full access until expiry.
    response = await j.http.put(
        j.url("ordering", f"/v1/subscriptions/{sub_id}/auto-renew"),
        headers={**account.auth, "Idempotency-Key": str(uuid.uuid4())},
        json={"auto_renew": False},
    )
    assert response.status_code == 200, response.text
    await j.advance(local(2030, 3, 5, 10, 10), "auto-renew off")
    sub = await j.subscription(account, sub_id)
    assert sub["auto_renew"] is False
    assert sub["stage"] == "active" and sub["entitlements"] == ACTIVE
    assert at(sub["expires_at"]) == local(2031, 3, 4, 23, 59, 59)  # R23
    assert at(sub["renews_at"]) == local(2031, 3, 5)
    assert at(sub["renewal_window_opens_at"]) == local(2030, 12, 5)  # R26: 90 days before
    assert await log.new() == [("auto_renew_confirmation", buyer, ("buyer",))]

    # R26: the renewal window opens 90 days before the renewal date, at local midnight.
    await j.advance(local(2030, 12, 4, 23, 59, 59), "a second before the window")
    assert await log.new() == []
    await j.advance(local(2030, 12, 5), "renewal window opens")
    assert await log.new() == [("renewal_window_opened", buyer, ("buyer",))]

    # R26: reminders 45, 30 and 4 days before the expiry date (2031-03-04), 00:00 local.
    for day, days_before in ((local(2031, 1, 18), 45), (local(2031, 2, 2), 30)):
        await j.advance(day - timedelta(seconds=1), f"before the {days_before}-day reminder")
        assert await log.new() == []
        await j.advance(day, f"{days_before}-day reminder")
        assert await log.new() == [("renewal_reminder", buyer, ("buyer",))]
        assert f"expires in {days_before} days" in log.subjects["renewal_reminder", buyer]
    await j.advance(local(2031, 2, 28), "4-day reminder")
    assert await log.new() == [("renewal_reminder", buyer, ("buyer",))]
    assert "expires in 4 days" in log.subjects["renewal_reminder", buyer]
    [caught] = [m for m in await j.mail.to(buyer) if "expires in 4 days" in m["subject"]]
    assert "expires 4 Mar 2031, 23:59 CET, in 4 days" in caught["text"]  # R13, R23: local

    # R23: the last second of the term is 2031-03-04 23:59:59 local; still Active, full access.
    await j.advance(local(2031, 3, 4, 23, 59, 59), "last second of the term")
    assert await stage_of(j, account, sub_id) == {
        "stage": "active",
        "entitlements": ACTIVE,
        "stage_changed_at": local(2030, 3, 5, 10, 0),  # activated at the purchase
        "next_stage_at": None,
    }
    assert await log.new() == []

    # R31, R32: one second later it is Expired for 15 days; R35: full access, no upgrades.
    await j.advance(local(2031, 3, 5), "expiry")
    assert await stage_of(j, account, sub_id) == {
        "stage": "expired",
        "entitlements": EXPIRED,
        "stage_changed_at": local(2031, 3, 5),
        "next_stage_at": local(2031, 3, 20),
    }
    # R9, R10, R12: the buyer (also primary admin) gets the stage mail, the admin the access mail.
    stage_mails = [
        ("product_access_changed", admin, ("secondary_admin",)),
        ("stage_changed", buyer, BUYER_ADMIN),
    ]
    assert await log.new() == stage_mails
    assert log.subjects["stage_changed", buyer].endswith("subscription is now Expired")
    assert [i["status"] for i in await j.invoices(account)] == ["paid"]  # R24: never charged

    # R32: Expired ends after 15 local days; R33: Suspended, product access removed.
    await j.advance(local(2031, 3, 19, 23, 59, 59), "last second of Expired")
    assert (await stage_of(j, account, sub_id))["stage"] == "expired"
    assert await log.new() == []
    await j.advance(local(2031, 3, 20), "suspended")
    assert await stage_of(j, account, sub_id) == {
        "stage": "suspended",
        "entitlements": SUSPENDED,
        "stage_changed_at": local(2031, 3, 20),
        "next_stage_at": local(2031, 4, 19),  # R33: 30 days for an annual term
    }
    # R8, R35: the admin sees the product view (what the stage allows), no renewal data.
    assert await j.get("lifecycle", f"/v1/subscriptions/{sub_id}", admin_auth) == {
        "id": sub_id,
        "account_id": account.id,
        "offering": "autocad",
        "seats": 3,
        "stage": "suspended",
        "trial": False,
        "entitlements": SUSPENDED,
    }
    assert await log.new() == stage_mails
    assert log.subjects["stage_changed", buyer].endswith("subscription is now Suspended")

    # R33, R34: after 30 days Suspended it is Cancelled, final.
    await j.advance(local(2031, 4, 18, 23, 59, 59), "last second of Suspended")
    assert (await stage_of(j, account, sub_id))["stage"] == "suspended"
    assert await log.new() == []
    await j.advance(local(2031, 4, 19), "cancelled")
    assert await stage_of(j, account, sub_id) == {
        "stage": "cancelled",
        "entitlements": CANCELLED,
        "stage_changed_at": local(2031, 4, 19),
        "next_stage_at": None,
    }
    assert await log.new() == stage_mails
    assert log.subjects["stage_changed", buyer].endswith("subscription is now Cancelled")

    # R34: nothing more happens, and Cancelled cannot be renewed.
    await j.advance(local(2031, 8, 1), "months later")
    assert await log.new() == []
    refused = await j.post(
        "ordering", f"/v1/subscriptions/{sub_id}/renewals", account.auth, {}, expect=409
    )
    assert refused["type"].endswith(":subscription-cancelled")
    assert [i["status"] for i in await j.invoices(account)] == ["paid"]


async def test_journey_3_partner_quote_paid_by_invoice_lapses_at_its_due_date(
    journey: Journey,
) -> None:
    """A partner quotes (R16), the buyer accepts and pays by invoice (R14), which a direct order
    may not; the buyer registers five payers, a sixth is refused (R6); the invoice carries the
    payers (R7), who get the invoice mail and nothing else (R11), the buyer too (R9); it is due
    net 30 (R21) and, unpaid, starts the expiry process at the end of its due date, long before
    the expiry date (R31: whichever first)."""
    j = journey
    await j.start_clock(local(2030, 5, 14, 9, 0))
    account = await j.open_account()
    log = MailLog(j, account)
    buyer = account.buyer_email
    refused = await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/orders",
        account.auth,
        {"offering": "revit", "term": "annual", "seats": 3, "payment_method": "invoice"},
        expect=422,
    )
    assert refused["type"].endswith(":pay-by-invoice-not-allowed")  # R14: direct, no invoice
    payers = sorted(f"payer-{n}-{uuid.uuid4().hex[:8]}@example.com" for n in range(5))
    for n, email in enumerate(payers):
        await j.post(
            "ordering",
            f"/v1/accounts/{account.id}/payers",
            account.auth,
            {"email": email, "name": f"Payer {n}"},
        )
    sixth = await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/payers",
        account.auth,
        {"email": "payer-6@example.com", "name": "Payer 6"},
        expect=422,
    )
    assert sixth["type"].endswith(":payer-limit")  # R6
    await j.advance(local(2030, 5, 14, 9, 1), "payers registered")
    assert await log.new() == [("admin_appointed", buyer, ("primary_admin",))]  # payers: none

    partner = issue_token(
        j.dep.settings("ordering"), SystemClock(), subject=uuid.uuid4(), kind="partner"
    )
    quote = await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/quotes",
        {"Authorization": f"Bearer {partner}"},
        {"offering": "revit", "term": "annual", "seats": 3},
    )
    assert quote["valid_until"] == "2030-06-13"  # [ours] 30 days
    order = await j.post(
        "ordering",
        f"/v1/quotes/{quote['id']}/acceptance",
        account.auth,
        {"payment_method": "invoice", "auto_renew": True},
    )
    assert (order["channel"], order["payment_method"]) == ("partner", "invoice")
    sub_id = order["subscription_id"]
    await j.advance(local(2030, 5, 14, 9, 5), "quote accepted")
    assert await log.new() == sorted(
        [
            ("quote_issued", buyer, ("buyer",)),
            ("order_confirmation", buyer, ("buyer",)),
            ("invoice_issued", buyer, ("buyer",)),  # R9
            *[("invoice_issued", payer, ("payer",)) for payer in payers],  # R11
            ("product_access_granted", buyer, ("primary_admin",)),  # R10
        ]
    )
    [invoice] = await j.invoices(account)
    assert {k: invoice[k] for k in ("purpose", "status", "channel", "payment_method")} == {
        "purpose": "order",
        "status": "issued",  # R21: not charged, the payers settle it
        "channel": "partner",
        "payment_method": "invoice",
    }
    assert invoice["subscription_id"] == sub_id
    assert at(invoice["issued_at"]) == local(2030, 5, 14, 9, 1)
    assert invoice["due_date"] == "2030-06-13"  # R21: net 30
    assert invoice["payer_emails"] == payers  # R7: at most five, all of them
    assert invoice["paid_at"] is None
    sub = await j.subscription(account, sub_id)
    assert (sub["stage"], sub["entitlements"], sub["auto_renew"]) == ("active", ACTIVE, True)
    assert at(sub["renews_at"]) == local(2031, 5, 14)  # the term would run a year

    # R31: the due date 2030-06-13 is the whole local day; unpaid at its end, the process starts.
    await j.advance(local(2030, 6, 13, 23, 59, 59), "last second of the due date")
    assert (await stage_of(j, account, sub_id))["stage"] == "active"
    # R9, R11 (issue 11): 7 days before the due date the buyer and every payer were reminded.
    assert await log.new() == sorted(
        [
            ("invoice_due_soon", buyer, ("buyer",)),
            *[("invoice_due_soon", payer, ("payer",)) for payer in payers],
        ]
    )
    await j.advance(local(2030, 6, 14), "invoice overdue")
    sub = await j.subscription(account, sub_id)
    assert {k: sub[k] for k in ("stage", "entitlements", "stage_reason")} == {
        "stage": "expired",
        "entitlements": EXPIRED,  # R35
        "stage_reason": "invoice_unpaid",
    }
    assert at(sub["stage_changed_at"]) == local(2030, 6, 14)
    assert at(sub["next_stage_at"]) == local(2030, 6, 29)  # R32: 15 days
    assert at(sub["renews_at"]) == local(2031, 5, 14)  # the expiry date did not come first
    # R9, R11, R12: the buyer (also primary admin) is told; payers get no stage mail.
    assert await log.new() == [("stage_changed", buyer, BUYER_ADMIN)]
    assert [i["status"] for i in await j.invoices(account)] == ["issued"]


async def test_journey_4_three_year_term_pays_in_three_annual_installments(
    journey: Journey,
) -> None:
    """R20: a three-year subscription bought after 2024-09-16 is invoiced in three annual
    installments: at the purchase, on the first and on the second anniversary (local
    midnight); each is charged to the card (R21) and mailed to the buyer (R9); the term still
    runs three years (R23) and nothing more is billed before it renews."""
    j = journey
    await j.start_clock(local(2030, 2, 20, 11, 0))
    account = await j.open_account()
    log = MailLog(j, account)
    buyer = account.buyer_email
    order = await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/orders",
        account.auth,
        {"offering": "autocad", "term": "three_year", "seats": 2, "payment_method": "card"},
    )
    sub_id = order["subscription_id"]
    await j.advance(local(2030, 2, 20, 11, 5), "purchase settles")
    assert await log.new() == sorted(
        [
            ("admin_appointed", buyer, ("primary_admin",)),
            ("order_confirmation", buyer, ("buyer",)),
            ("invoice_issued", buyer, ("buyer",)),
            ("payment_receipt", buyer, ("buyer",)),
            ("product_access_granted", buyer, ("primary_admin",)),
        ]
    )
    assert log.subjects["invoice_issued", buyer].endswith(", installment 1 of 3")
    sub = await j.subscription(account, sub_id)
    assert (sub["stage"], sub["term"]) == ("active", "three_year")
    assert at(sub["renews_at"]) == local(2033, 2, 20)  # R23: three years
    [first] = await j.invoices(account)
    assert (first["purpose"], first["installment"], first["status"]) == ("order", 1, "paid")
    assert at(first["issued_at"]) == local(2030, 2, 20, 11, 0)

    expected = [("order", 1, local(2030, 2, 20, 11, 0))]
    for year, number in ((2031, 2), (2032, 3)):
        anniversary = local(year, 2, 20)
        await j.advance(anniversary - timedelta(seconds=1), f"before installment {number}")
        assert len(await j.invoices(account)) == number - 1
        assert await log.new() == []
        await j.advance(anniversary, f"installment {number}")
        expected.append(("installment", number, anniversary))
        invoices = await j.invoices(account)
        assert [(i["purpose"], i["installment"], at(i["issued_at"])) for i in invoices] == expected
        assert [i["status"] for i in invoices] == ["paid"] * number  # R21: charged at issue
        assert at(invoices[-1]["paid_at"]) == anniversary
        assert invoices[-1]["subscription_id"] == sub_id
        assert await log.new() == sorted(
            [("invoice_issued", buyer, ("buyer",)), ("payment_receipt", buyer, ("buyer",))]
        )
        assert log.subjects["invoice_issued", buyer].endswith(f", installment {number} of 3")
        sub = await j.subscription(account, sub_id)
        assert (sub["stage"], at(sub["renews_at"])) == ("active", local(2033, 2, 20))

    invoices = await j.invoices(account)
    assert len({i["invoice_number"] for i in invoices}) == 3
    assert len({i["gross_total"] for i in invoices}) == 1  # three equal thirds
    await j.advance(local(2033, 2, 19, 12, 0), "the third year")
    assert len(await j.invoices(account)) == 3  # no fourth installment
    # R26: only the renewal window's mail, 90 days before the renewal date (auto-renew is on).
    assert await log.new() == [("renewal_window_opened", buyer, ("buyer",))]
    sub = await j.subscription(account, sub_id)
    assert at(sub["renewal_window_opens_at"]) == local(2032, 11, 22)


async def test_journey_5_late_renewal_while_suspended_keeps_the_anniversary(
    journey: Journey,
) -> None:
    """Bought without auto-renew (R24), the subscription lapses: Expired at the renewal date
    (R31, R32), Suspended 15 days later (R33, no product access, R35). A late renewal during
    Suspended (R27: within 45 days of the renewal date) is billed and charged; its payment
    reactivates the subscription (R33: SubscriptionReactivated) and the new term keeps the
    original anniversary (R27): it started at the old renewal date and renews a year after it.
    The stale Suspended -> Cancelled boundary no longer fires."""
    j = journey
    await j.start_clock(local(2030, 8, 12, 16, 0))
    account = await j.open_account()
    log = MailLog(j, account)
    buyer = account.buyer_email
    admin, _ = await add_secondary_admin(j, account)
    order = await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/orders",
        account.auth,
        {
            "offering": "revit",
            "term": "annual",
            "seats": 1,
            "payment_method": "card",
            "auto_renew": False,
        },
    )
    sub_id = order["subscription_id"]
    await j.advance(local(2030, 8, 12, 16, 5), "purchase settles")
    sub = await j.subscription(account, sub_id)
    assert (sub["stage"], sub["auto_renew"]) == ("active", False)
    assert at(sub["expires_at"]) == local(2031, 8, 11, 23, 59, 59)  # R23
    assert at(sub["renews_at"]) == local(2031, 8, 12)
    await log.new()  # the purchase's mails (journey 2 checks them)

    await j.advance(local(2031, 8, 12), "expired")
    assert await stage_of(j, account, sub_id) == {
        "stage": "expired",
        "entitlements": EXPIRED,
        "stage_changed_at": local(2031, 8, 12),
        "next_stage_at": local(2031, 8, 27),
    }
    await j.advance(local(2031, 9, 1, 12, 0), "suspended")
    assert await stage_of(j, account, sub_id) == {
        "stage": "suspended",
        "entitlements": SUSPENDED,
        "stage_changed_at": local(2031, 8, 27),
        "next_stage_at": local(2031, 9, 26),
    }
    # R26: window and reminders (auto-renew off); R9, R10, R12: two stage changes so far.
    assert await log.new() == sorted(
        [
            ("renewal_window_opened", buyer, ("buyer",)),
            *[("renewal_reminder", buyer, ("buyer",))] * 3,
            *[("stage_changed", buyer, BUYER_ADMIN)] * 2,
            *[("product_access_changed", admin, ("secondary_admin",))] * 2,
        ]
    )

    # R27: a late renewal, 20 days after the renewal date, paid by card.
    renewal = await j.post("ordering", f"/v1/subscriptions/{sub_id}/renewals", account.auth, {})
    assert renewal["kind"] == "late"
    assert at(renewal["renews_at"]) == local(2031, 8, 12)
    await j.advance(local(2031, 9, 1, 12, 5), "late renewal paid")
    sub = await j.subscription(account, sub_id)
    assert {k: sub[k] for k in ("stage", "entitlements", "stage_reason", "next_stage_at")} == {
        "stage": "active",
        "entitlements": ACTIVE,  # R33: renewing reactivates
        "stage_reason": "renewal_paid",
        "next_stage_at": None,
    }
    assert at(sub["stage_changed_at"]) == local(2031, 9, 1, 12, 0)
    # R27: the original anniversary: the term runs from 2031-08-12 and renews on 2032-08-12.
    assert sub["anniversary"] == "2030-08-12"
    assert at(sub["starts_at"]) == local(2031, 8, 12)
    assert at(sub["expires_at"]) == local(2032, 8, 11, 23, 59, 59)
    assert at(sub["renews_at"]) == local(2032, 8, 12)
    first, late = await j.invoices(account)
    assert (late["purpose"], late["status"], late["payment_method"]) == (
        "renewal",
        "paid",
        "card",
    )
    assert at(late["issued_at"]) == at(late["paid_at"]) == local(2031, 9, 1, 12, 0)
    assert late["gross_total"] == first["gross_total"]
    assert await log.new() == sorted(
        [
            ("invoice_issued", buyer, ("buyer",)),
            ("payment_receipt", buyer, ("buyer",)),
            ("renewal_confirmation", buyer, ("buyer",)),
            ("subscription_reactivated", buyer, ("buyer",)),  # R9
            ("stage_changed", buyer, BUYER_ADMIN),  # R12: one mail for buyer + primary admin
            ("product_access_changed", admin, ("secondary_admin",)),  # R10: access is back
        ]
    )
    ordering_view = await j.get("ordering", f"/v1/subscriptions/{sub_id}", account.auth)
    assert ordering_view["stage"] == "active"
    assert at(ordering_view["renews_at"]) == local(2032, 8, 12)

    # The Suspended -> Cancelled boundary (2031-09-26) is gone; the renewed term runs on.
    await j.advance(local(2031, 10, 1), "past the old cancellation date")
    assert (await stage_of(j, account, sub_id))["stage"] == "active"
    assert await log.new() == []
