"""Journey (issue 11): a declined card renewal, a new card added in the payment center, the open
renewal invoice charged at once, the subscription Active again with one renewal invoice.

The four services run as OS processes on the real stack on a test clock; every step goes through
the public APIs, and each crossing (invoicing's PaymentFailed and InvoicePaid to lifecycle) is the
producing service's real output.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.e2e.journeys import Account, Journey, local
from tests.support import wait_for

pytestmark = pytest.mark.e2e


async def renewals(j: Journey, account: Account) -> list[dict[str, Any]]:
    return [i for i in await j.invoices(account) if i["purpose"] == "renewal"]


async def test_journey_declined_renewal_new_card_charged_at_once_back_to_active(
    journey: Journey,
) -> None:
    """R37: the renewal charge is declined (tok_decline) and the subscription is Expired; the
    buyer adds a new card as default (R2); invoicing charges the SAME open renewal invoice at
    once (not on the next retry day), InvoicePaid returns it to Active (R32) renewed on its
    anniversary (R23, R25), and no retry or second renewal invoice follows."""
    j = journey
    await j.start_clock(local(2030, 1, 10, 14, 30))
    account = await j.open_account()
    order = await j.post(
        "ordering",
        f"/v1/accounts/{account.id}/orders",
        account.auth,
        {
            "offering": "autocad",
            "term": "annual",
            "seats": 1,
            "payment_method": "card",
            "payment_token": "tok_success",
        },
    )
    subscription_id = order["subscription_id"]
    await j.advance(local(2030, 1, 10, 15, 0), "purchase settles")
    # The card the buyer saves later stops working before the renewal (the sandbox declines it).
    expiring = await j.post(
        "invoicing",
        f"/v1/accounts/{account.id}/payment-methods",
        account.auth,
        {"type": "card", "payment_token": "tok_decline"},
    )
    assert (expiring["label"], expiring["is_default"]) == ("Visa **** 0002", True)

    await j.advance(local(2031, 1, 10, 12, 0), "renewal day: the charge is declined")
    [renewal] = await renewals(j, account)
    assert renewal["status"] == "issued"
    sub = await j.subscription(account, subscription_id)
    assert sub["stage"] == "expired"  # R37: a failed renewal charge puts it into Expired

    new_card = await j.post(
        "invoicing",
        f"/v1/accounts/{account.id}/payment-methods",
        account.auth,
        {"type": "card", "payment_token": "tok_success", "make_default": True},
    )
    assert (new_card["label"], new_card["is_default"]) == ("Visa **** 4242", True)
    # Charged at once, inside the request: the invoice is paid before any retry day.
    [renewal] = await renewals(j, account)
    assert renewal["status"] == "paid"

    async def active_again() -> dict[str, Any] | None:
        current = await j.subscription(account, subscription_id)
        return current if current["stage"] == "active" else None

    sub = await wait_for(active_again, timeout=60, what="lifecycle to read InvoicePaid")
    assert datetime.fromisoformat(sub["renews_at"]) == local(2032, 1, 10)  # R23 anniversary

    await j.advance(local(2031, 1, 26, 12, 0), "past every R37 retry day (1, 3, 7, 14)")
    assert [r["invoice_number"] for r in await renewals(j, account)] == [renewal["invoice_number"]]
    invoices = await j.invoices(account)
    assert [(i["purpose"], i["status"]) for i in invoices] == [
        ("order", "paid"),
        ("renewal", "paid"),
    ]
    sub = await j.subscription(account, subscription_id)
    assert sub["stage"] == "active"
    methods = await j.get("invoicing", f"/v1/accounts/{account.id}/payment-methods", account.auth)
    assert [(m["label"], m["is_default"]) for m in methods["items"]] == [
        ("Visa **** 0002", False),
        ("Visa **** 4242", True),
    ]
