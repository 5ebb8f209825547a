"""Renewal by partner quote (issue 11; R27 [ours], R16, R14, R20, R26, R32): the four services
run as processes on the real stack, each journey on its own account and test clock, through the
public APIs only.

A partner quotes the renewal of an existing subscription; a second quote replaces the first,
which can then no longer be accepted; the buyer accepts by invoice (R14: a partner purchase);
the same subscription is renewed on its original anniversary (R27) with one renewal invoice whose
net is exactly the quote's (R16). Inside the late window it returns from Expired to Active when
the invoice is issued (R25, R32); before the renewal date the renewed term starts on it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from shared.auth import issue_token
from shared.time.clock import SystemClock
from tests.e2e.journeys import ACTIVE, EXPIRED, Account, Journey, local

pytestmark = pytest.mark.e2e


def at(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def partner_of(j: Journey) -> dict[str, str]:
    token = issue_token(
        j.dep.settings("ordering"), SystemClock(), subject=uuid.uuid4(), kind="partner"
    )
    return {"Authorization": f"Bearer {token}"}


async def buy(j: Journey, account: Account, *, auto_renew: bool) -> str:
    order = await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/orders",
        account.auth,
        {
            "offering": "revit",
            "term": "annual",
            "seats": 1,
            "payment_method": "card",
            "auto_renew": auto_renew,
        },
    )
    return str(order["subscription_id"])


async def quote_renewal(
    j: Journey,
    account: Account,
    partner: dict[str, str],
    sub_id: str,
    seats: int,
    expect: int = 201,
) -> dict[str, Any]:
    return await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/quotes",
        partner,
        {"offering": "revit", "term": "annual", "seats": seats, "renews_subscription_id": sub_id},
        expect=expect,
    )


async def renewal_invoices(j: Journey, account: Account) -> list[dict[str, Any]]:
    return [i for i in await j.invoices(account) if i["purpose"] == "renewal"]


async def test_r27_r16_r14_r32_renewal_by_partner_quote_inside_the_late_window(
    journey: Journey,
) -> None:
    j = journey
    await j.start_clock(local(2030, 8, 12, 16, 0))
    account = await j.open_account()
    partner = partner_of(j)
    sub_id = await buy(j, account, auto_renew=False)
    await j.advance(local(2030, 8, 12, 16, 5), "purchase settles")
    # R26: not before the renewal window opens (90 days before 2031-08-12).
    early = await quote_renewal(j, account, partner, sub_id, 2, expect=422)
    assert early["type"].endswith(":renewal-window-closed")

    await j.advance(local(2031, 8, 20, 10, 0), "lapsed: Expired")
    sub = await j.subscription(account, sub_id)
    assert (sub["stage"], sub["entitlements"]) == ("expired", EXPIRED)  # R31, R32

    first = await quote_renewal(j, account, partner, sub_id, 2)
    second = await quote_renewal(j, account, partner, sub_id, 3)  # re-issued: replaces the first
    assert first["renews_subscription_id"] == second["renews_subscription_id"] == sub_id
    assert at(second["renews_at"]) == local(2031, 8, 12)
    replaced = await j.get("ordering", f"/v1/quotes/{first['id']}", account.auth)
    assert replaced["superseded_by"] == second["id"]
    assert (await j.get("ordering", f"/v1/quotes/{first['id']}", partner))["superseded_by"] == (
        second["id"]
    )
    by_invoice = {"payment_method": "invoice"}
    refused = await j.post(
        "ordering", f"/v1/quotes/{first['id']}/acceptance", account.auth, by_invoice, expect=409
    )
    assert refused["type"].endswith(":quote-superseded")
    order = await j.post(
        "ordering", f"/v1/quotes/{second['id']}/acceptance", account.auth, by_invoice
    )
    assert (order["kind"], order["subscription_id"], order["quote_id"]) == (
        "renewal",
        sub_id,
        second["id"],
    )
    assert (order["channel"], order["payment_method"], order["seats"]) == ("partner", "invoice", 3)
    await j.advance(local(2031, 8, 20, 10, 5), "renewal quote accepted")

    sub = await j.subscription(account, sub_id)
    assert (sub["stage"], sub["entitlements"], sub["seats"]) == ("active", ACTIVE, 3)  # R32
    assert sub["stage_reason"] == "renewal_invoiced"  # R25: pay by invoice renews on issue
    assert sub["anniversary"] == "2030-08-12"  # R27: the original anniversary
    assert at(sub["starts_at"]) == local(2031, 8, 12)
    assert at(sub["renews_at"]) == local(2032, 8, 12)
    subscriptions = await j.get(
        "ordering", f"/v1/accounts/{account.id}/subscriptions", account.auth
    )
    assert [s["id"] for s in subscriptions["items"]] == [sub_id]  # the same subscription, no new
    assert subscriptions["items"][0]["payment_method"] == "invoice"
    [renewal] = await renewal_invoices(j, account)
    assert (renewal["payment_method"], renewal["channel"], renewal["status"]) == (
        "invoice",
        "partner",
        "issued",
    )
    assert Decimal(str(renewal["net_total"])) == Decimal(str(second["net_amount"]))  # R16
    assert renewal["due_date"] == "2031-09-19"  # R21: net 30

    # The lapsed term's Expired -> Suspended boundary (2031-08-27) no longer fires; the
    # invoice is due 2031-09-19 (unpaid after it, R31 starts again: journey 3 proves that).
    await j.advance(local(2031, 9, 1), "past the old Suspended date")
    assert (await j.subscription(account, sub_id))["stage"] == "active"
    assert len(await renewal_invoices(j, account)) == 1


async def test_r27_r26_r16_a_renewal_quote_accepted_before_the_renewal_date_renews_on_it(
    journey: Journey,
) -> None:
    """Auto-renew on (card): the quote, accepted by invoice 40 days before the renewal date,
    renews the term that starts on it; the renewal date then bills nothing more (R25: one
    renewal invoice)."""
    j = journey
    await j.start_clock(local(2030, 8, 12, 16, 0))
    account = await j.open_account()
    partner = partner_of(j)
    sub_id = await buy(j, account, auto_renew=True)
    await j.advance(local(2031, 7, 3, 9, 0), "inside the renewal window")
    quote = await quote_renewal(j, account, partner, sub_id, 1)
    order = await j.post(
        "ordering",
        f"/v1/quotes/{quote['id']}/acceptance",
        account.auth,
        {"payment_method": "invoice"},
    )
    assert (order["kind"], order["subscription_id"]) == ("renewal", sub_id)
    await j.advance(local(2031, 7, 3, 9, 5), "renewal quote accepted")
    sub = await j.subscription(account, sub_id)
    assert sub["stage"] == "active"
    assert at(sub["starts_at"]) == local(2031, 8, 12)  # R27: renewed on the renewal date
    assert at(sub["renews_at"]) == local(2032, 8, 12)
    [renewal] = await renewal_invoices(j, account)
    assert Decimal(str(renewal["net_total"])) == Decimal(str(quote["net_amount"]))  # R16
    assert renewal["payment_method"] == "invoice"
    assert renewal["due_date"] == "2031-08-02"  # R21: net 30, before the renewal date
    # The payers settle it by bank transfer before it falls due (unpaid, R31 would start).
    await j.post(
        "invoicing",
        f"/v1/operator/invoices/{renewal['id']}/bank-payments",
        j.operator,
        {"amount": str(renewal["gross_total"]), "reference": "bank transfer"},
    )

    await j.advance(local(2031, 8, 12, 0, 5), "the renewal date")
    assert len(await renewal_invoices(j, account)) == 1  # no auto-renewal invoice as well
    assert (await j.subscription(account, sub_id))["stage"] == "active"
