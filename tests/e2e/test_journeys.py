"""Journeys (issue 7): the whole life of a subscription, the four services as OS processes on
the real stack, each journey on its own test clock. Rule ids name what each step proves."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.e2e.journeys import Journey, local

pytestmark = pytest.mark.e2e


async def test_journey_1_annual_card_purchase_renews_after_a_year(journey: Journey) -> None:
    """R1, R9, R23, R25, R26: bought 2030-01-10 with auto-renew; renewed on 2031-01-10 00:00
    local, the renewal invoice charged, the buyer told at each step."""
    j = journey
    await j.start_clock(local(2030, 1, 10, 14, 30))
    account = await j.open_account()
    order = await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/orders",
        account.auth,
        {"offering": "autocad", "term": "annual", "seats": 2, "payment_method": "card"},
    )
    await j.advance(local(2030, 1, 10, 15, 0), "purchase settles")
    sub = await j.subscription(account, order["subscription_id"])
    assert sub["stage"] == "active"
    assert datetime.fromisoformat(sub["renews_at"]) == local(2031, 1, 10)  # R23
    [first] = await j.invoices(account)
    assert first["status"] == "paid"
    purchase_mails = await j.mails_to(account, account.buyer_email)
    # R9 billing mails to the buyer; R10/R12 the buyer is also primary admin (R1): one mail each.
    assert sorted(purchase_mails) == [
        "admin_appointed",
        "invoice_issued",
        "order_confirmation",
        "payment_receipt",
        "product_access_granted",
    ]

    await j.advance(local(2031, 1, 10, 12, 0), "a year later")
    sub = await j.subscription(account, order["subscription_id"])
    assert sub["stage"] == "active"
    assert datetime.fromisoformat(sub["renews_at"]) == local(2032, 1, 10)  # R25: renewed
    invoices = await j.invoices(account)
    assert [i["status"] for i in invoices] == ["paid", "paid"]
    assert datetime.fromisoformat(invoices[1]["issued_at"]) == local(2031, 1, 10)
    mails = await j.mails_to(account, account.buyer_email)
    assert sorted(mails[len(purchase_mails) :]) == [  # R26 window, R25 renewal billed and told
        "invoice_issued",
        "payment_receipt",
        "renewal_confirmation",
        "renewal_window_opened",
    ]
