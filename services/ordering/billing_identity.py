"""The account's billing identity, validated per country (issue 15): the billing address, the
organisation number and the VAT id a Norwegian sales document (bokføringsforskriften § 5-1-1)
and an EU reverse charge need. Pure rules; a wrong value is a 422 naming its field."""

from __future__ import annotations

import re

from shared.contracts import BillingIdentity
from shared.errors import invalid_field

# EU VAT ids (VIES formats, the country prefix included) of the countries ordering sells to.
EU_VAT_ID = {
    "AT": r"ATU\d{8}",
    "BE": r"BE[01]\d{9}",
    "DE": r"DE\d{9}",
    "DK": r"DK\d{8}",
    "ES": r"ES[0-9A-Z]\d{7}[0-9A-Z]",
    "FI": r"FI\d{8}",
    "FR": r"FR[0-9A-HJ-NP-Z]{2}\d{9}",
    "IE": r"IE(\d{7}[A-W][A-IW]?|\d[A-Z+*]\d{5}[A-W])",
    "IT": r"IT\d{11}",
    "NL": r"NL\d{9}B\d{2}",
    "PL": r"PL\d{10}",
    "PT": r"PT\d{9}",
    "SE": r"SE\d{10}01",
}
# Outside the EU: Norway's "MVA" id is checked apart; the UK's own VAT ids; Iceland's VSK number.
OTHER_VAT_ID = {"GB": r"GB(\d{9}|\d{12}|GD\d{3}|HA\d{3})", "IS": r"IS\d{5,6}"}
POSTCODE = {
    "NO": r"\d{4}",
    "DK": r"\d{4}",
    "IS": r"\d{3}",
    "SE": r"\d{3} ?\d{2}",
    "FI": r"\d{5}",
    "DE": r"\d{5}",
    "FR": r"\d{5}",
    "IT": r"\d{5}",
    "ES": r"\d{5}",
    "NL": r"\d{4} ?[A-Z]{2}",
    "BE": r"\d{4}",
    "AT": r"\d{4}",
    "PT": r"\d{4}-\d{3}",
    "PL": r"\d{2}-\d{3}",
    "US": r"\d{5}(-\d{4})?",
}
ANY_POSTCODE = r"[A-Z0-9][A-Z0-9 -]{1,9}"
ANY_ORGANISATION_NUMBER = r"[A-Z0-9][A-Z0-9 ./-]{1,31}"
NO_ORGNO_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)


def is_eu(country: str) -> bool:
    return country in EU_VAT_ID


def norwegian_organisation_number_ok(digits: str) -> bool:
    """Brønnøysundregistrene: 9 digits, the last a MOD11 check digit over weights 3,2,7,6,5,4,3,2
    (remainder 0 gives check digit 0; a check digit of 10 is never issued)."""
    if not re.fullmatch(r"\d{9}", digits):
        return False
    remainder = sum(int(d) * w for d, w in zip(digits, NO_ORGNO_WEIGHTS, strict=False)) % 11
    check = 0 if remainder == 0 else 11 - remainder
    return check != 10 and check == int(digits[8])


def compact(value: str) -> str:
    """As registers print them: without spaces, dots or dashes, upper case."""
    return re.sub(r"[\s.\-]", "", value).upper()


def checked(identity: BillingIdentity, account_country: str, prefix: str) -> BillingIdentity:
    """The identity in its stored form (numbers compacted), or a 422 naming the wrong field
    (``prefix`` is the body's path to it, e.g. ``billing_details``)."""

    def field(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    country = identity.country
    if country != account_country:
        raise invalid_field(
            field("country"),
            f"The billing address must be in the account's billing country {account_country} "
            "(VAT is charged by it, R18).",
            rule="R18",
        )
    postcode = identity.postcode.strip().upper()
    if not re.fullmatch(POSTCODE.get(country, ANY_POSTCODE), postcode):
        raise invalid_field(field("postcode"), f"{postcode!r} is not a postcode of {country}.")
    org = compact(identity.organisation_number) if identity.organisation_number else None
    if org is not None:
        if country == "NO" and not norwegian_organisation_number_ok(org):
            raise invalid_field(
                field("organisation_number"),
                "A Norwegian organisation number is 9 digits whose last is a MOD11 check digit; "
                f"{identity.organisation_number!r} is not one.",
            )
        if country != "NO" and not re.fullmatch(ANY_ORGANISATION_NUMBER, org):
            raise invalid_field(
                field("organisation_number"),
                "An organisation number is 2 to 32 letters and digits.",
            )
    vat_id = compact(identity.vat_id) if identity.vat_id else None
    if vat_id is not None:
        _check_vat_id(vat_id, country, org, field("vat_id"))
    return identity.model_copy(
        update={"postcode": postcode, "organisation_number": org, "vat_id": vat_id}
    )


def _check_vat_id(vat_id: str, country: str, org: str | None, name: str) -> None:
    if country == "NO":
        if not re.fullmatch(r"NO\d{9}MVA", vat_id) or not norwegian_organisation_number_ok(
            vat_id[2:11]
        ):
            raise invalid_field(
                name,
                'A Norwegian VAT id is "NO", a valid organisation number and "MVA" '
                "(e.g. NO923609016MVA).",
            )
        if org is not None and vat_id[2:11] != org:
            raise invalid_field(name, "The VAT id is not that of the organisation number.")
        return
    pattern = EU_VAT_ID.get(country) or OTHER_VAT_ID.get(country)
    if pattern is None:
        raise invalid_field(name, f"Accounts billed in {country} have no VAT id to give.")
    if not re.fullmatch(pattern, vat_id):
        raise invalid_field(
            name, f"{vat_id!r} is not a VAT id of {country} (it starts with {pattern[:2]})."
        )
