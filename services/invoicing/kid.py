"""KID (kundeidentifikasjon): the payment reference a Norwegian bank transfer carries, so the
payment is matched to its invoice. Ours: the invoice number's digits, zero-padded to 10, and a
MOD10 (Luhn) check digit: 11 digits in all (Nets allows 2 to 25, MOD10 or MOD11)."""

from __future__ import annotations

import re

KID_BODY_DIGITS = 10


def mod10_check_digit(digits: str) -> str:
    """Luhn: from the right, every other digit (starting with the rightmost) doubled, its digit
    sum taken; the check digit brings the total to a multiple of 10."""
    if not digits.isdigit():
        raise ValueError("a KID is made of digits")
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str((10 - total % 10) % 10)


def is_valid(kid: str) -> bool:
    return bool(re.fullmatch(r"\d{2,25}", kid)) and mod10_check_digit(kid[:-1]) == kid[-1]


def for_invoice(invoice_number: str) -> str:
    """INV-0000123 -> 0000000123 and its check digit (the number's digits, zero-padded)."""
    digits = re.sub(r"\D", "", invoice_number)
    if not digits or len(digits) > KID_BODY_DIGITS:
        raise ValueError(f"no KID for invoice number {invoice_number!r}")
    body = digits.zfill(KID_BODY_DIGITS)
    return body + mod10_check_digit(body)
