"""Issue 11 (preview): one price for an order, decided once (ordering, from shared pricing at
invoicing's applied rate), shown in the preview, the order's answer and the confirmation mail,
and billed as it is by invoicing (R16, R18-R20); the term's dates are lifecycle's (R23).

The seams are crossed with the producers' real output: invoicing's ``ExchangeRateApplied`` feeds
ordering's projection, ordering's ``OrderPlaced`` feeds invoicing and notifications."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.invoicing import service as invoicing
from services.invoicing.exchange_rates import MarketRate
from services.lifecycle import domain as lifecycle
from services.notifications.domain import formatters, mail_context, render
from services.ordering import pricing, schemas, service
from shared.auth import Principal
from shared.contracts import ExchangeRateApplied, OrderPlaced, OrderPrice
from tests.unit import test_invoicing_service as billing_world
from tests.unit.test_ordering_service import World, order, world

__all__ = ["world"]  # the ordering world fixture, used here too


async def opened(world: World, **changes: Any) -> tuple[uuid.UUID, Principal]:
    body = {
        "name": "Fjord AS",
        "country": "NO",
        "currency": "NOK",
        "time_zone": "Europe/Oslo",
        "buyer": {"email": "kari@fjord.example", "name": "Kari"},
        **changes,
    }
    account = await service.open_account(world.uow, schemas.OpenAccount.model_validate(body))
    return account.id, Principal(account.buyer.user_id, "user", None)


def placed_event(world: World) -> OrderPlaced:
    [payload] = world.emitted("OrderPlaced")
    return OrderPlaced.model_validate(payload)


# --- R23: the order's dates are lifecycle's ------------------------------------------------------


@pytest.mark.parametrize("term", ["monthly", "annual", "three_year"])
@pytest.mark.parametrize(
    ("placed_at", "time_zone"),
    [
        (datetime(2025, 1, 31, 22, 59, 59, tzinfo=UTC), "Europe/Oslo"),  # 23:59:59 local, 31st
        (datetime(2025, 1, 31, 23, 0, tzinfo=UTC), "Europe/Oslo"),  # already 1 Feb in Oslo
        (datetime(2024, 2, 29, 12, 0, tzinfo=UTC), "America/New_York"),  # leap day
        (datetime(2025, 3, 30, 0, 30, tzinfo=UTC), "Europe/Oslo"),  # the DST change's night
        (datetime(2025, 10, 26, 0, 30, tzinfo=UTC), "Pacific/Auckland"),
    ],
)
def test_r23_the_orders_renewal_and_expiry_are_the_dates_lifecycle_gives_the_term(
    placed_at: datetime, time_zone: str, term: Any
) -> None:
    shown = pricing.term_dates(placed_at, term, time_zone)
    dated = lifecycle.first_term_dates(placed_at, term, time_zone, trial=False)
    assert (shown.renews_at, shown.expires_at) == (dated.renews_at, dated.expires_at)
    assert shown.expires_at.astimezone(ZoneInfo(time_zone)).time().isoformat() == "23:59:59"


# --- R18-R20: one price, from the preview to the invoice ------------------------------------------


async def test_r18_r19_the_preview_the_answer_and_order_placed_carry_one_price(
    world: World,
) -> None:
    account_id, buyer = await opened(world)
    body = order(seats=3, auto_renew=False)
    preview = await service.preview_order(world.uow, buyer, account_id, body)
    assert world.events.emitted == [
        e for e in world.events.emitted if e.event_type != "OrderPlaced"
    ]
    answer = await service.place_order(world.uow, buyer, account_id, body)
    fetched = await service.get_order(world.uow, buyer, answer.id)
    placed = placed_event(world)
    assert preview.price is not None
    assert preview.price == answer.price == fetched.price == placed.price
    price = preview.price
    assert price.currency == "NOK" and price.vat_rate == 25 and price.installments == 1
    assert price.exchange_rate == Decimal("10.80")  # R19: no quarter computed yet: the book's
    [line] = price.lines
    assert line.unit_price == Decimal("21330.00") and line.net_amount == Decimal("63990.00")
    assert price.vat_total == Decimal("15997.50") and price.gross_total == Decimal("79987.50")
    assert (price.first_invoice_net, price.first_invoice_gross) == (
        price.net_total,
        price.gross_total,
    )
    [priced_line] = placed.priced_lines  # R16: what invoicing bills, as it is
    assert (priced_line.unit_price, priced_line.quantity) == (line.unit_price, 3)
    # R23, auto-renew off: the expiry date (local), the renewal date not shown
    assert answer.expiry_date == preview.expiry_date == date(2026, 6, 9)
    assert answer.renewal_date is None and preview.renewal_date is None
    assert placed.expires_at == answer.expires_at == preview.expires_at


async def test_r17_a_trial_preview_and_order_carry_no_price_and_no_dates(world: World) -> None:
    account_id, buyer = await opened(world)
    body = order(trial=True, seats=2)
    preview = await service.preview_order(world.uow, buyer, account_id, body)
    answer = await service.place_order(world.uow, buyer, account_id, body)
    assert preview.price is None and answer.price is None and placed_event(world).price is None
    assert placed_event(world).priced_lines == [] and answer.renewal_date is None


async def test_r15_r14_the_preview_refuses_what_the_order_would_refuse(world: World) -> None:
    account_id, buyer = await opened(world)
    from shared.errors import DomainError

    with pytest.raises(DomainError) as too_big:
        await service.preview_order(world.uow, buyer, account_id, order(seats=20))
    assert too_big.value.slug == "card-limit-exceeded"
    with pytest.raises(DomainError) as by_invoice:
        await service.preview_order(world.uow, buyer, account_id, order(payment_method="invoice"))
    assert by_invoice.value.slug == "pay-by-invoice-not-allowed"


async def test_r18_a_tax_exempt_account_is_shown_no_vat_and_why(world: World) -> None:
    account_id, buyer = await opened(world, tax_exempt_reason="Public body")
    preview = await service.preview_order(world.uow, buyer, account_id, order())
    assert preview.price is not None
    assert preview.price.vat_rate == 0 and preview.price.vat_total == 0
    assert preview.price.tax_exempt_reason == "Public body"
    assert preview.price.gross_total == preview.price.net_total


async def test_r20_a_three_year_order_shows_installment_one_and_the_whole_term(
    world: World,
) -> None:
    account_id, buyer = await opened(world, currency="EUR", country="DE")
    body = order(term="three_year", seats=1, offering="docs")
    preview = await service.preview_order(world.uow, buyer, account_id, body)
    price = preview.price
    assert price is not None and price.installments == 3 and price.vat_rate == 19
    unit = (Decimal("1275.00") * Decimal("0.92")).quantize(Decimal("0.01"))  # 1173.00
    third = (unit / 3).quantize(Decimal("0.01"))
    assert price.net_total == unit and price.first_invoice_net == third
    # the whole term's VAT is the three invoices' VAT, each rounded on its invoice
    last = unit - 2 * third
    vat = [(n * Decimal("0.19")).quantize(Decimal("0.01")) for n in (third, third, last)]
    assert price.vat_total == sum(vat) and price.first_invoice_vat == vat[0]
    assert preview.renewal_date == date(2028, 6, 10)


async def test_r16_r19_invoicing_bills_the_figures_ordering_placed_at_invoicings_own_rate(
    world: World,
) -> None:
    """Invoicing computes a quarter's rates; its ExchangeRateApplied events feed ordering's
    projection; the order ordering prices with them is invoiced by invoicing to the cent."""
    billing = billing_world.World()
    await billing.opened()
    operator = billing.actor(kind="operator")
    fed = [MarketRate("NOK", Decimal("11.37"), date(2025, 3, 31))]
    await invoicing.record_market_rates(billing.uow, operator, fed, "api")
    assert await invoicing.recompute_rates(billing.uow, operator, date(2025, 4, 1)) == 4
    applied = [
        ExchangeRateApplied.model_validate(p) for p in billing.payloads("ExchangeRateApplied")
    ]
    assert len(applied) == 4
    for event in applied:
        await service.record_applied_rate(world.uow, event)
    june = next(a for a in applied if a.channel == "direct" and a.effective_from.month == 6)

    account_id, buyer = await opened(world)
    answer = await service.place_order(world.uow, buyer, account_id, order(seats=3))
    placed = placed_event(world)
    assert answer.price is not None and answer.price.exchange_rate == june.rate
    await invoicing.invoice_order(billing.uow, billing.cause(placed.subscription_id), placed)
    [issued] = billing.payloads("InvoiceIssued")
    assert Decimal(issued["net_total"]) == answer.price.first_invoice_net
    assert Decimal(issued["vat_total"]) == answer.price.first_invoice_vat
    assert Decimal(issued["gross_total"]) == answer.price.first_invoice_gross
    [invoice] = billing.repo.invoices.values()
    assert invoice.exchange_rate == june.rate


# --- the confirmation mail --------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "nb"])
@pytest.mark.parametrize("auto_renew", [True, False])
async def test_r18_r23_the_confirmation_shows_the_price_and_the_renewal_or_expiry_date(
    world: World, language: str, auto_renew: bool
) -> None:
    account_id, buyer = await opened(world, language=language)
    body = order(term="three_year", seats=2, auto_renew=auto_renew)
    answer = await service.place_order(world.uow, buyer, account_id, body)
    placed = placed_event(world)
    zone = ZoneInfo("Europe/Oslo")
    context = mail_context(
        placed.model_dump(), account_name="Fjord AS", offering="AutoCAD", invoicing_url="http://i"
    )
    mail = render("order_confirmation", language, {**context, "recipient_name": "Kari"}, zone)
    fmt = formatters(language, zone)
    price = answer.price
    assert isinstance(price, OrderPrice)
    day = answer.renewal_date if auto_renew else answer.expiry_date
    assert day is not None
    for part in (mail.text, mail.html):
        for amount in (price.net_total, price.vat_total, price.gross_total):
            assert fmt["money"](amount, "NOK") in part
        for amount in (price.first_invoice_net, price.first_invoice_gross):
            assert fmt["money"](amount, "NOK") in part  # R20: installment 1 of 3
        assert fmt["day"](day) in part
        assert "25 %" in part
    other = answer.expiry_date if auto_renew else answer.renewal_date
    assert other is None


def test_r23_the_shown_renewal_date_is_local_not_utc() -> None:
    placed_at = datetime(2025, 6, 9, 22, 30, tzinfo=UTC)  # 10 June 00:30 in Oslo
    dates = pricing.term_dates(placed_at, "annual", "Europe/Oslo")
    assert dates.renewal_date == date(2026, 6, 10)
    assert dates.expiry_date == date(2026, 6, 9)
    assert dates.renews_at - dates.expires_at == timedelta(seconds=1)


async def test_r18_an_eu_business_with_a_vat_id_is_shown_the_reverse_charge_the_invoice_applies(
    world: World,
) -> None:
    """R18, issue 15: the preview decides VAT with the same rule invoicing bills with
    (shared.pricing.tax_exemption): an EU business that gave its VAT id pays no VAT and is told
    why; without a VAT id it pays its country's rate."""
    billing = {
        "address_lines": ["Unter den Linden 1"],
        "postcode": "10115",
        "city": "Berlin",
        "country": "DE",
        "vat_id": "DE123456789",
    }
    business, buyer = await opened(world, currency="EUR", country="DE", billing_details=billing)
    preview = await service.preview_order(world.uow, buyer, business, order())
    assert preview.price is not None
    assert preview.price.vat_total == 0
    assert preview.price.tax_exempt_reason == "Reverse charge"
    consumer, consumer_buyer = await opened(
        world, currency="EUR", country="DE", buyer={"email": "max@example.de", "name": "Max"}
    )
    plain = await service.preview_order(world.uow, consumer_buyer, consumer, order())
    assert plain.price is not None and plain.price.vat_rate == 19
    assert plain.price.tax_exempt_reason is None
