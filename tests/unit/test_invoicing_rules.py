"""Invoicing's pure rules: R7, R15, R18-R21, R30, R37, R39 and the rounding properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.invoicing import domain, exchange_rates, pdf
from shared.contracts import InvoiceLine
from shared.time.calendar import add_months, zone

CURRENCIES = ["NOK", "SEK", "EUR", "GBP", "USD", "DKK"]
EU_EEA = (
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE IS LI NO"
).split()


def test_r18_the_vat_table_covers_norway_the_eu_eea_the_uk_and_the_us() -> None:
    for country in [*EU_EEA, "GB", "US"]:
        assert domain.vat_rate(country, None) >= 0, country
    assert domain.vat_rate("NO", None) == Decimal(25)
    assert domain.vat_rate("HU", None) == Decimal(27)
    with pytest.raises(ValueError, match="no VAT rate"):
        domain.vat_rate("ZZ", None)


def test_r7_an_invoice_carries_at_most_five_payers() -> None:
    payers = [f"p{n}@example.com" for n in range(7, 0, -1)]
    chosen = domain.invoice_payers(payers)
    assert len(chosen) == 5
    assert chosen == sorted(chosen) and set(chosen) <= set(payers)
    assert domain.invoice_payers(["a@example.com", "a@example.com"]) == ["a@example.com"]


def test_r20_three_year_terms_from_2024_09_16_pay_in_installments() -> None:
    tz = "Europe/Oslo"
    before = datetime(2024, 9, 15, 21, 59, tzinfo=UTC)  # 23:59 on the 15th in Oslo
    after = datetime(2024, 9, 15, 22, 0, tzinfo=UTC)  # 00:00 on the 16th in Oslo
    assert not domain.pays_in_installments("three_year", before, tz)
    assert domain.pays_in_installments("three_year", after, tz)
    assert not domain.pays_in_installments("annual", after, tz)
    # Instants (UTC, from shared.time.calendar); read in the customer's zone they are midnights.
    second, third = (
        due.astimezone(zone(tz))
        for due in domain.installment_due_dates(datetime(2028, 2, 29, 9, tzinfo=UTC), tz)
    )
    assert (second.date(), third.date()) == (date(2029, 2, 28), date(2030, 2, 28))
    assert second.utcoffset() == timedelta(hours=1) and second.hour == 0


def test_r20_an_installment_is_a_third_of_the_three_year_price() -> None:
    whole = domain.draft_for_order(
        offering="autocad",
        term="three_year",
        seats=3,
        currency="NOK",
        country="NO",
        tax_exempt_reason=None,
    )
    part = domain.draft_for_order(
        offering="autocad",
        term="three_year",
        seats=3,
        currency="NOK",
        country="NO",
        tax_exempt_reason=None,
        installment=2,
    )
    assert "installment 2 of 3" in part.lines[0].description
    assert abs(part.net_total * 3 - whole.net_total) <= Decimal("0.01") * 3 * 3


def test_r21_card_and_paypal_are_charged_at_issue_invoice_is_not() -> None:
    assert domain.charged_at_issue("card") and domain.charged_at_issue("paypal")
    assert not domain.charged_at_issue("invoice")


def test_r37_a_failed_charge_of_any_purpose_is_retried_on_days_1_3_7_14() -> None:
    """Issue 11, defect 1: an order's charge is retried like a renewal's (it used not to be)."""
    failed = datetime(2026, 5, 1, 0, 0, tzinfo=UTC)
    retries = [domain.next_charge_attempt_at(failed, attempt) for attempt in (1, 2, 3, 4)]
    assert [(r - failed).days for r in retries if r] == [1, 3, 7, 14]
    assert domain.next_charge_attempt_at(failed, 5) is None


def test_r39_refunds_settle_in_business_days_by_method() -> None:
    friday = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    assert domain.refund_settlement_date(friday, "Europe/Oslo", "card") == date(2026, 12, 8)
    assert domain.refund_settlement_date(friday, "Europe/Oslo", "paypal") == date(2026, 12, 2)
    assert domain.refund_settlement_date(friday, "Europe/Oslo", "invoice") == date(2026, 12, 11)


def test_r16_r20_a_quoted_unit_price_is_billed_as_quoted_and_split_in_exact_thirds() -> None:
    quoted = Decimal("5451.00")  # the quote's unit price; the rate of the day is ignored
    whole = domain.subscription_line(
        offering="autocad",
        term="annual",
        seats=3,
        currency="EUR",
        vat_percent=Decimal(25),
        rate=Decimal("0.99"),
        quoted_unit_price=quoted,
    )
    assert (whole.unit_price, whole.net_amount) == (quoted, Decimal("16353.00"))
    thirds = [
        domain.subscription_line(
            offering="autocad",
            term="three_year",
            seats=3,
            currency="EUR",
            vat_percent=Decimal(25),
            installment=number,
            quoted_unit_price=Decimal("100.00"),
        ).unit_price
        for number in (1, 2, 3)
    ]
    assert thirds == [Decimal("33.33"), Decimal("33.33"), Decimal("33.34")]


def test_r22_purchase_order_details_change_only_before_payment() -> None:
    assert domain.po_editable("issued")
    assert not domain.po_editable("paid") and not domain.po_editable("credited")


def test_r30_added_seats_are_priced_pro_rata_by_days() -> None:
    draft = domain.draft_for_coterm(
        offering="autocad",
        term="annual",
        seats_added=2,
        currency="USD",
        country="US",
        tax_exempt_reason=None,
        rate=Decimal(1),
        prorate_from=datetime(2026, 1, 1, 12, tzinfo=UTC),
        coterm_until=datetime(2026, 7, 2, 0, tzinfo=UTC),
        time_zone="UTC",
    )
    [line] = draft.lines
    assert "182 of 365 days" in line.description
    assert line.unit_price == domain.round_money(Decimal("1975.00") * 182 / 365, "USD")
    assert line.net_amount == line.unit_price * 2


def test_r19_quarterly_rates_walk_1_percent_a_month_direct_3_percent_partner() -> None:
    rates = exchange_rates.quarterly_rates(
        date(2026, 4, 1), Decimal("12.00"), Decimal("10.00"), Decimal("10.00")
    )
    direct = [r for r in rates if r.channel == "direct"]
    [partner] = [r for r in rates if r.channel == "partner"]
    assert [r.rate for r in direct] == [Decimal("10.1"), Decimal("10.201"), Decimal("10.30301")]
    assert [r.effective_from.date() for r in direct] == [
        date(2026, 4, 1),
        date(2026, 5, 1),
        date(2026, 6, 1),
    ]
    assert partner.rate == Decimal("10.3")
    inside = exchange_rates.quarterly_rates(
        date(2026, 7, 1), Decimal("10.05"), Decimal("10.00"), Decimal("10.00")
    )
    assert {r.rate for r in inside} == {Decimal("10.05")}  # inside the band: the market rate
    with pytest.raises(ValueError, match="quarter"):
        exchange_rates.quarterly_rates(date(2026, 5, 1), Decimal(1), Decimal(1), Decimal(1))


def test_r19_the_next_recomputation_is_the_next_quarter_start() -> None:
    at = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)
    assert exchange_rates.next_quarter_start(at) == datetime(2027, 1, 1, tzinfo=UTC)
    assert exchange_rates.next_quarter_start(datetime(2026, 4, 1, tzinfo=UTC)) == datetime(
        2026, 7, 1, tzinfo=UTC
    )


@given(
    previous=st.decimals(min_value="0.01", max_value="1000", places=4),
    markets=st.lists(st.decimals(min_value="0.001", max_value="5000", places=4), max_size=8),
)
def test_r19_applied_rates_never_leave_the_band(previous: Decimal, markets: list[Decimal]) -> None:
    """Property: whatever the market does, each applied rate stays in its band."""
    direct = partner = previous
    quarter = date(2026, 1, 1)
    for market in markets:
        for r in exchange_rates.quarterly_rates(quarter, market, direct, partner):
            band = (
                exchange_rates.DIRECT_BAND_PER_MONTH
                if r.channel == "direct"
                else exchange_rates.PARTNER_BAND_PER_QUARTER
            )
            assert exchange_rates.within_band(r.rate, r.previous_rate, band)
            assert r.rate > 0
            if r.channel == "direct":
                direct = r.rate
            else:
                partner = r.rate
        quarter = add_months(quarter, 3)


@given(
    seats=st.integers(min_value=1, max_value=5000),
    offering=st.sampled_from(["autocad", "revit", "docs", "aec-collection"]),
    term=st.sampled_from(["annual", "three_year"]),
    currency=st.sampled_from(CURRENCIES),
    country=st.sampled_from(["NO", "SE", "DE", "FI", "GB", "US", "HU", "LU"]),
    rate=st.decimals(min_value="0.5", max_value="20", places=6),
    installment=st.sampled_from([None, 1, 2, 3]),
    exempt=st.booleans(),
)
def test_totals_are_sums_of_lines_nothing_negative_rounding_within_a_minor_unit(
    seats: int,
    offering: str,
    term: str,
    currency: str,
    country: str,
    rate: Decimal,
    installment: int | None,
    exempt: bool,
) -> None:
    """Properties (R18, rounding rule): totals = sum of lines, no negative amount on an invoice,
    each rounded amount within one minor unit of the exact one."""
    draft = domain.draft_for_order(
        offering=offering,
        term=term,  # type: ignore[arg-type]
        seats=seats,
        currency=currency,
        country=country,
        tax_exempt_reason="Exempt under section 6-1" if exempt else None,
        rate=rate,
        installment=installment,
    )
    unit = domain.one_minor_unit(currency)
    assert draft.net_total == sum(line.net_amount for line in draft.lines)
    assert draft.vat_total == sum(line.vat_amount for line in draft.lines)
    assert draft.gross_total == draft.net_total + draft.vat_total
    for line in draft.lines:
        assert min(line.unit_price, line.net_amount, line.vat_amount) >= 0
        exact_net = line.unit_price * line.quantity
        assert abs(line.net_amount - exact_net) <= unit
        assert abs(line.vat_amount - line.net_amount * line.vat_rate / 100) <= unit
        assert line.vat_amount == 0 or not exempt


@given(
    days_left=st.integers(min_value=0, max_value=365),
    seats=st.integers(min_value=1, max_value=500),
    currency=st.sampled_from(CURRENCIES),
)
def test_r30_co_term_invoices_add_up_and_are_never_negative(
    days_left: int, seats: int, currency: str
) -> None:
    until = datetime(2027, 3, 1, tzinfo=UTC)
    draft = domain.draft_for_coterm(
        offering="revit",
        term="annual",
        seats_added=seats,
        currency=currency,
        country="SE",
        tax_exempt_reason=None,
        rate=Decimal("1.5"),
        prorate_from=until - timedelta(days=days_left),
        coterm_until=until,
        time_zone="UTC",
    )
    [line] = draft.lines
    assert draft.gross_total == line.net_amount + line.vat_amount >= 0
    assert abs(line.unit_price - Decimal("4365.00") * days_left / 365) <= domain.one_minor_unit(
        currency
    )


@given(
    amounts=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=100),
            st.decimals(min_value="0", max_value="100000", places=2),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_r39_only_credit_notes_are_negative_and_they_negate_the_invoice(
    amounts: list[tuple[int, Decimal]],
) -> None:
    lines = [
        domain.priced_line(
            description="x", quantity=q, unit=u, currency="NOK", vat_percent=Decimal(25)
        )
        for q, u in amounts
    ]
    credit = domain.credit_note_lines(lines)
    assert all(line.net_amount >= 0 and line.vat_amount >= 0 for line in lines)
    assert all(line.net_amount <= 0 and line.vat_amount <= 0 for line in credit)
    assert sum(c.net_amount + c.vat_amount for c in credit) == -sum(
        line.net_amount + line.vat_amount for line in lines
    )


def test_r18_vat_is_summarised_per_rate() -> None:
    lines = [
        InvoiceLine(
            description=f"l{n}",
            quantity=1,
            unit_price=Decimal(net),
            net_amount=Decimal(net),
            vat_rate=Decimal(rate),
            vat_amount=Decimal(vat),
        )
        for n, (net, rate, vat) in enumerate(
            [("100.00", "25", "25.00"), ("50.00", "12", "6.00"), ("10.00", "25.000", "2.50")]
        )
    ]
    summary = domain.vat_summary(lines)
    assert [(s.rate, s.net_amount, s.vat_amount) for s in summary] == [
        (Decimal(12), Decimal("50.00"), Decimal("6.00")),
        (Decimal(25), Decimal("110.00"), Decimal("27.50")),
    ]


def test_pdf_renders_latin1_and_replaces_what_it_cannot_print() -> None:
    assert pdf.latin1("Ærlig Øl Å 東") == "Ærlig Øl Å ?"
    document = pdf.PrintedDocument(
        title="Faktura",
        number="INV-0000001",
        seller_lines=["Subscriptions Nordic AS"],
        bill_to="Faktureres til",
        buyer_lines=["Blåbær AS"],
        facts=[("Forfallsdato", "27.12.2026")],
        headers=("Beskrivelse", "Antall", "Enhetspris", "Netto", "MVA %", "MVA"),
        lines=[],
        vat_summary=[],
        totals=[("Å betale", "\u22121\u00a0000,00\u00a0kr")],
    )
    assert pdf.render(document).startswith(b"%PDF")


async def test_the_gateway_retries_transient_errors_and_answers_a_key_once() -> None:
    from services.invoicing.gateway import GatewayUnavailable, RetryingGateway, SandboxGateway

    sandbox = SandboxGateway("card", "card_declined")
    gateway = RetryingGateway(sandbox, attempts=3, backoff=0)
    flaky = await gateway.charge(
        amount=Decimal("10.00"), currency="NOK", token="tok_network_error", idempotency_key="k1"
    )
    assert flaky.succeeded  # the first call failed on the network, the retry went through
    declined = await gateway.charge(
        amount=Decimal("10.00"), currency="NOK", token="tok_decline", idempotency_key="k2"
    )
    again = await gateway.charge(
        amount=Decimal("10.00"), currency="NOK", token="tok_success", idempotency_key="k2"
    )
    assert declined == again and declined.failure_reason == "card_declined"
    assert [key for key, _, _ in sandbox.charges] == ["k1", "k2"]  # one charge per key
    with pytest.raises(GatewayUnavailable):
        await gateway.charge(
            amount=Decimal("1.00"), currency="NOK", token="tok_network_down", idempotency_key="k3"
        )


def test_r20_three_installments_add_up_to_the_three_year_price_exactly() -> None:
    """R20: a third each, rounded to the minor unit; the last takes the remainder."""
    from decimal import Decimal as D

    rate = D("10.80123457")  # makes the per-seat price not divisible by three
    full = domain.unit_price("autocad", "three_year", "NOK", rate)
    parts = [
        domain.subscription_line(
            offering="autocad",
            term="three_year",
            seats=1,
            currency="NOK",
            vat_percent=D(25),
            rate=rate,
            installment=n,
        ).unit_price
        for n in (1, 2, 3)
    ]
    assert sum(parts) == full
    assert max(parts) - min(parts) <= D("0.01")


@pytest.mark.parametrize(
    "text",
    ["currency,rate,as_of\nNOK,10\x00.5,2026-01-01\n", "currency,rate,as_of\n" + "x" * 200_000],
    ids=["NUL byte", "a field over the csv limit"],
)
def test_r19_a_file_that_is_not_csv_is_refused_with_a_422_not_a_500(text: str) -> None:
    """Found by the API fuzzer: csv.Error escaped as a 500."""
    from services.invoicing.exchange_rates import market_rates_from_csv
    from shared.errors import Invalid

    with pytest.raises(Invalid) as refused:
        market_rates_from_csv(text)
    assert refused.value.slug == "csv-invalid"
