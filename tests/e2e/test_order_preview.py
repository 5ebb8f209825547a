"""Issue 11 (preview): the price preview, the order's answer, the order confirmation (read from
the real SMTP catcher) and the invoice carry the same net, VAT and total (R18-R20), and the mail
the renewal or expiry date in the account's time zone (R23), across the four service processes.

Every figure is compared with what another service produced; the only numbers written here are
the rules' own (25 % Norwegian VAT, none for a tax-exempt account, thirds for R20)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.notifications.domain import formatters
from tests.e2e.journeys import Account, Journey, local
from tests.support import wait_for

pytestmark = pytest.mark.e2e
START = local(2030, 1, 10, 14, 30)  # a test clock: every date below is deterministic


async def open_account(
    journey: Journey,
    *,
    country: str,
    currency: str,
    language: str,
    time_zone: str,
    tax_exempt_reason: str | None = None,
) -> Account:
    buyer = f"buyer-{uuid.uuid4().hex[:10]}@example.com"
    body: dict[str, Any] = {
        "name": "Fjord Arkitekter AS",
        "country": country,
        "currency": currency,
        "language": language,
        "time_zone": time_zone,
        "test_clock_id": journey.clock_id,
        "buyer": {"email": buyer, "name": "Kari Nordmann"},
    }
    if tax_exempt_reason:
        body["tax_exempt_reason"] = tax_exempt_reason
    opened = await journey.post("ordering", "/v1/accounts", journey.operator, body)
    return Account(opened["id"], buyer, opened["token"], journey.clock_id)


async def preview(journey: Journey, account: Account, order: dict[str, Any]) -> dict[str, Any]:
    response = await journey.http.post(
        journey.url("ordering", f"/v1/accounts/{account.id}/orders/preview"),
        headers=account.auth,
        json=order,
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def the_invoice(journey: Journey, account: Account) -> dict[str, Any]:
    async def issued() -> list[dict[str, Any]] | None:
        # 404 until invoicing has consumed the AccountOpened (it learns accounts from events)
        response = await journey.http.get(
            journey.url("invoicing", f"/v1/accounts/{account.id}/invoices"), headers=account.auth
        )
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    invoices = await wait_for(issued, what="the order's invoice")
    assert len(invoices) == 1, invoices
    return invoices[0]


async def the_confirmation(journey: Journey, account: Account, number: str) -> dict[str, Any]:
    async def caught() -> list[dict[str, Any]]:
        return [m for m in await journey.mail.to(account.buyer_email) if number in m["subject"]]

    mails = await wait_for(caught, what=f"the confirmation of {number} in the mail catcher")
    assert len(mails) == 1, mails
    return mails[0]


def dec(value: Any) -> Decimal:
    return Decimal(str(value))


async def buy_and_compare(
    journey: Journey,
    account: Account,
    order: dict[str, Any],
    *,
    language: str,
    time_zone: str,
) -> dict[str, Any]:
    """Preview, order, invoice and mail: the same figures; returns the order's answer."""
    shown = await preview(journey, account, order)
    placed = await journey.post(
        "ordering", f"/v1/accounts/{account.id}/orders", account.auth, order
    )
    fetched = await journey.get("ordering", f"/v1/orders/{placed['id']}", account.auth)
    assert shown["price"] == placed["price"] == fetched["price"]
    for field in ("renews_at", "expires_at", "renewal_date", "expiry_date"):
        assert shown[field] == placed[field] == fetched[field], field
    price = placed["price"]
    invoice = await the_invoice(journey, account)
    assert invoice["currency"] == price["currency"] == shown["price"]["currency"]
    assert dec(invoice["net_total"]) == dec(price["first_invoice_net"])
    assert dec(invoice["vat_total"]) == dec(price["first_invoice_vat"])
    assert dec(invoice["gross_total"]) == dec(price["first_invoice_gross"])

    mail = await the_confirmation(journey, account, placed["order_number"])
    fmt = formatters(language, ZoneInfo(time_zone))
    for part in ("text", "html"):
        body = mail[part]
        for amount in ("net_total", "vat_total", "gross_total"):
            assert fmt["money"](dec(price[amount]), price["currency"]) in body, (part, amount)
        if price["installments"] > 1:
            for amount in ("first_invoice_net", "first_invoice_vat", "first_invoice_gross"):
                assert fmt["money"](dec(price[amount]), price["currency"]) in body, (part, amount)
        day = placed["renewal_date"] or placed["expiry_date"]
        assert fmt["day"](date.fromisoformat(day)) in body, part
    # R23: lifecycle dates the term with the same calendar function as the order's answer.
    sub = await journey.subscription(account, placed["subscription_id"])
    for field in ("renews_at", "expires_at"):
        assert datetime.fromisoformat(sub[field]) == datetime.fromisoformat(placed[field]), field
    return placed


async def test_r18_r23_norwegian_order_shows_25_percent_vat_and_renewal_date(
    journey: Journey,
) -> None:
    await journey.start_clock(START)
    account = await open_account(
        journey, country="NO", currency="NOK", language="nb", time_zone="Europe/Oslo"
    )
    order = {"offering": "autocad", "term": "annual", "seats": 3, "payment_method": "card"}
    placed = await buy_and_compare(journey, account, order, language="nb", time_zone="Europe/Oslo")
    price = placed["price"]
    assert dec(price["vat_rate"]) == 25 and price["tax_exempt_reason"] is None
    assert dec(price["vat_total"]) == (dec(price["net_total"]) * Decimal("0.25")).quantize(
        Decimal("0.01")
    )
    assert placed["renewal_date"] == "2031-01-10" and placed["expiry_date"] is None
    mail = await the_confirmation(journey, account, placed["order_number"])
    assert "Mva 25 %" in mail["text"] and "fornyes 10. jan. 2031" in mail["text"]


async def test_r18_r23_tax_exempt_order_shows_the_exemption_and_expiry_date(
    journey: Journey,
) -> None:
    await journey.start_clock(START)
    account = await open_account(
        journey,
        country="NO",
        currency="NOK",
        language="en",
        time_zone="Europe/Oslo",
        tax_exempt_reason="Public body, VAT Act § 6-1",
    )
    order = {
        "offering": "revit",
        "term": "annual",
        "seats": 2,
        "payment_method": "paypal",
        "auto_renew": False,
    }
    placed = await buy_and_compare(journey, account, order, language="en", time_zone="Europe/Oslo")
    price = placed["price"]
    assert dec(price["vat_total"]) == 0 and dec(price["vat_rate"]) == 0
    assert price["tax_exempt_reason"] == "Public body, VAT Act § 6-1"
    assert placed["expiry_date"] == "2031-01-09" and placed["renewal_date"] is None
    mail = await the_confirmation(journey, account, placed["order_number"])
    assert "exempt: Public body, VAT Act § 6-1" in mail["text"]
    assert "expires on 9 Jan 2031" in mail["text"]  # en: the day in the account's zone


async def test_r18_r19_order_in_sek_is_priced_at_invoicings_applied_rate(
    journey: Journey,
) -> None:
    """A non-NOK, non-USD account; the quarter's applied rate invoicing computes reaches
    ordering (ExchangeRateApplied) before the order is priced with it."""
    await journey.start_clock(START)
    fed = await journey.post(
        "invoicing",
        "/v1/operator/exchange-rates/market",
        journey.operator,
        {"rates": [{"currency": "SEK", "rate": "11.50", "as_of": "2029-12-30"}]},
    )
    assert fed["recorded"] == 1
    await journey.post(
        "invoicing",
        "/v1/operator/exchange-rates/recompute",
        journey.operator,
        {"quarter_start": "2030-01-01"},
        expect=200,
    )
    history = await journey.get(
        "invoicing", "/v1/operator/exchange-rates?currency=SEK&channel=direct", journey.operator
    )
    january = next(r for r in history["history"] if r["effective_from"].startswith("2030-01-01"))
    applied = dec(january["rate"])
    assert applied != dec(history["initial_rates"]["SEK"])
    account = await open_account(
        journey, country="SE", currency="SEK", language="en", time_zone="Europe/Stockholm"
    )
    order = {"offering": "docs", "term": "annual", "seats": 7, "payment_method": "card"}

    async def projected() -> bool:
        return dec((await preview(journey, account, order))["price"]["exchange_rate"]) == applied

    await wait_for(projected, what="ordering's projection of the applied rate")
    placed = await buy_and_compare(
        journey, account, order, language="en", time_zone="Europe/Stockholm"
    )
    price = placed["price"]
    assert price["currency"] == "SEK" and dec(price["vat_rate"]) == 25
    invoice = await the_invoice(journey, account)
    assert dec(invoice["exchange_rate"]) == applied


async def test_r20_three_year_order_shows_the_first_installment_and_the_whole_term(
    journey: Journey,
) -> None:
    await journey.start_clock(START)
    account = await open_account(
        journey, country="NO", currency="NOK", language="en", time_zone="Europe/Oslo"
    )
    order = {"offering": "autocad", "term": "three_year", "seats": 1, "payment_method": "card"}
    placed = await buy_and_compare(journey, account, order, language="en", time_zone="Europe/Oslo")
    price = placed["price"]
    assert price["installments"] == 3
    # R20: a third now (the last installment takes the rounding remainder)
    assert abs(dec(price["first_invoice_net"]) * 3 - dec(price["net_total"])) <= Decimal("0.02")
    assert dec(price["first_invoice_gross"]) < dec(price["gross_total"])
    invoice = await the_invoice(journey, account)
    assert invoice["installment"] == 1
    assert placed["renewal_date"] == "2033-01-10"
