"""How customers read money and products, in their language (issue 15): one place for the
invoice documents (services/invoicing/printing.py) and the mails (services/notifications).

- Money through Babel: nb ``21 330,00 kr`` (another currency by its code, ``1 250,00 EUR``),
  en ``NOK 21,330.00`` (the code, a no-break space, the amount), in the currency's minor units.
- Products by their names in the price book (``offering_names``, the same names as ordering's
  catalogue), never by their codes.
"""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_currency

from shared.pricing import price_book

LOCALES = {"en": "en_GB", "nb": "nb_NO"}


def money(value: Decimal | str | float, currency: str, language: str) -> str:
    """nb: ``21 330,00 kr`` (other currencies by code); en: ``NOK 21,330.00``."""
    amount = Decimal(str(value))
    if language == "nb":
        pattern = None if currency == "NOK" else "#,##0.00\u00a0¤¤"
        return format_currency(amount, currency, format=pattern, locale=LOCALES["nb"])
    return format_currency(amount, currency, format="¤¤\u00a0#,##0.00", locale=LOCALES["en"])


def product_name(offering: str | None, language: str) -> str | None:
    """The product's name in the language (English when it has none); an unknown code as it
    is, None for None."""
    if offering is None:
        return None
    names: dict[str, dict[str, str]] = price_book()["offering_names"]
    found = names.get(offering)
    return found.get(language, found["en"]) if found else offering
