"""Invoicing's pure rules: VAT (R18), rounding, due dates (R21)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from services.invoicing import domain


def test_r18_norway_pays_25_percent_vat() -> None:
    draft = domain.draft_for_order(
        offering="autocad",
        term="annual",
        seats=1,
        currency="NOK",
        country="NO",
        tax_exempt_reason=None,
    )
    [line] = draft.lines
    assert line.vat_rate == Decimal(25)
    assert line.unit_price == Decimal("21330.00")  # 1975.00 USD x 10.80
    assert draft.vat_total == Decimal("5332.50")
    assert draft.gross_total == Decimal("26662.50")


def test_r18_tax_exempt_account_pays_no_vat() -> None:
    draft = domain.draft_for_order(
        offering="autocad",
        term="annual",
        seats=2,
        currency="EUR",
        country="DE",
        tax_exempt_reason="Reverse charge: VAT to be accounted for by the recipient",
    )
    assert draft.vat_total == Decimal(0)
    assert draft.tax_exempt_reason is not None
    assert draft.gross_total == draft.net_total


def test_r18_vat_depends_on_the_billing_country() -> None:
    assert domain.vat_rate("DE", None) == Decimal(19)
    assert domain.vat_rate("GB", None) == Decimal(20)
    assert domain.vat_rate("US", None) == Decimal(0)


def test_r21_pay_by_invoice_is_due_30_days_after_issue_card_at_issue() -> None:
    issued = datetime(2025, 1, 31, 23, 30, tzinfo=UTC)  # already 1 February in Oslo
    assert domain.due_date(issued, "Europe/Oslo", "invoice") == date(2025, 3, 3)
    assert domain.due_date(issued, "Europe/Oslo", "card") == date(2025, 2, 1)


def test_round_money_rounds_half_up_to_the_minor_unit() -> None:
    assert domain.round_money(Decimal("0.125"), "NOK") == Decimal("0.13")
    assert domain.round_money(Decimal("0.124"), "EUR") == Decimal("0.12")
    assert domain.round_money(Decimal("10.5"), "JPY") == Decimal("11")


@given(
    seats=st.integers(min_value=1, max_value=5000),
    offering=st.sampled_from(["autocad", "revit", "docs"]),
    currency=st.sampled_from(["NOK", "SEK", "EUR", "GBP", "USD", "DKK"]),
    country=st.sampled_from(["NO", "SE", "DE", "FI", "GB", "US"]),
)
def test_totals_equal_the_sum_of_lines_and_vat_stays_within_one_minor_unit(
    seats: int, offering: str, currency: str, country: str
) -> None:
    draft = domain.draft_for_order(
        offering=offering,
        term="annual",
        seats=seats,
        currency=currency,
        country=country,
        tax_exempt_reason=None,
    )
    assert draft.gross_total == sum(line.net_amount + line.vat_amount for line in draft.lines)
    for line in draft.lines:
        exact_vat = line.net_amount * line.vat_rate / 100
        assert abs(line.vat_amount - exact_vat) <= Decimal("0.005")
        assert line.net_amount >= 0 and line.vat_amount >= 0


def test_invoice_numbers_are_zero_padded_per_series() -> None:
    assert domain.invoice_number("INV", 42) == "INV-0000042"
