"""Everything the portal says, in English and Norwegian (bokmål), and how it shows money,
instants and days: in the person's language, instants in the account's time zone (R13)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_date
from babel.numbers import format_percent

from shared import formats

LANGUAGES = ("en", "nb")
LOCALES = {"en": "en_GB", "nb": "nb_NO"}

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "portal": "Account portal",
        "skip": "Skip to the content",
        "nav": "Main menu",
        "subscriptions": "Subscriptions and contracts",
        "invoices": "Invoices and credit notes",
        "payment_center": "Payment center",
        "users": "Users and roles",
        "mail_log": "Mail log",
        "operator": "Operator",
        "find_account": "Find an account",
        "test_clocks": "Test clocks",
        "exchange_rates": "Exchange rates",
        "sign_out": "Sign out",
        "signed_in_as": "Signed in as",
        "language": "Language",
        "sign_in": "Sign in",
        "sign_in_intro": "Enter your e-mail address. We mail you a link that signs you in; "
        "it works once, for 15 minutes. No password needed.",
        "email": "E-mail address",
        "send_link": "Mail me a sign-in link",
        "check_mail": "Check your mail",
        "check_mail_detail": "If the address belongs to a user of an account, a sign-in link "
        "is on its way to it. Open it on this device.",
        "confirm_sign_in": "Sign in to your account",
        "confirm_sign_in_detail": "Press the button to sign in with this link. The link then "
        "stops working.",
        "operator_sign_in": "Sign in as operator",
        "operator_token": "Operator token",
        "operator_token_hint": "A token of kind operator (python -m shared.auth mint --kind "
        "operator).",
        "signed_out": "You are signed out.",
        "session_ended": "Your session has ended. Sign in again.",
        "offering": "Product",
        "seats": "Seats",
        "stage": "Stage",
        "allows": "What it allows",
        "term": "Term",
        "renews_on": "Renews on",
        "expires_on": "Expires on",
        "auto_renew": "Auto-renew",
        "on": "On",
        "off": "Off",
        "turn_on": "Turn auto-renew on",
        "turn_off": "Turn auto-renew off",
        "renew_now": "Renew now",
        "renews_with": "Renews with",
        "no_subscriptions": "No subscriptions yet.",
        "trial": "trial",
        "product_view_only": "Your role shows the product and its access; dates and billing "
        "are the buyer's (R8).",
        "invoice": "Invoice",
        "issued": "Issued",
        "due": "Due",
        "status": "Status",
        "total": "Total",
        "purpose": "For",
        "pdf": "PDF",
        "pay": "Pay",
        "pay_with": "Pay with",
        "no_invoices": "No invoices yet.",
        "credit_notes": "Credit notes",
        "credit_note": "Credit note",
        "no_credit_notes": "No credit notes.",
        "paid_ok": "Paid. Thank you.",
        "one_off_card": "Another card (gateway token)",
        "payment_methods": "Payment methods",
        "method": "Method",
        "default": "Default",
        "make_default": "Make default",
        "add_method": "Add a payment method",
        "type": "Type",
        "card": "Card",
        "paypal": "PayPal",
        "gateway_token": "Gateway token",
        "gateway_token_hint": "The payment gateway's form gives this token; in the sandbox: "
        "tok_success, tok_decline.",
        "as_default": "Use it as the default",
        "add": "Add",
        "no_methods": "No saved payment methods.",
        "renewal_method": "How each subscription renews",
        "invoice_method": "Invoice",
        "save": "Save",
        "saved": "Saved.",
        "name": "Name",
        "roles": "Roles",
        "add_payer": "Add a payer",
        "payer_limit_hint": "At most five payers (R6).",
        "remove": "Remove",
        "recipient": "Recipient",
        "subject": "Subject",
        "sent_at": "Sent",
        "no_mail": "No mail yet.",
        "account": "Account",
        "account_id": "Account id",
        "find": "Find",
        "country": "Country",
        "currency": "Currency",
        "time_zone": "Time zone",
        "people": "People",
        "clock": "Test clock",
        "clock_id": "Test clock id",
        "open": "Open",
        "create_clock": "Create a test clock",
        "frozen_time": "Frozen at (ISO 8601 with offset)",
        "create": "Create",
        "now": "Now",
        "advance_to": "Advance to (ISO 8601 with offset)",
        "advance": "Advance",
        "advancing": "Advancing: everything due on the way is happening.",
        "ready": "Ready: the whole system has settled.",
        "timeline": "Timeline",
        "timeline_account": "Show the timeline of account",
        "step": "Step",
        "what": "What",
        "when": "When",
        "rates": "Quarterly exchange rates",
        "quarter": "Quarter",
        "rate": "Rate",
        "channel": "Channel",
        "no_rates": "No exchange rates yet.",
        "problem": "That did not work",
        "unavailable": "A service did not answer. Try again in a moment.",
        "not_found_page": "There is no such page.",
        "error": "Something went wrong on our side. Try again in a moment.",
        "field": "Field",
        "back": "Back",
        "none": "none",
        "buy": "Buy",
        "ordered": "Ordered. The subscription appears here once it is active.",
        "buy_intro": "Choose the product, term and number of seats. A card or PayPal is charged "
        "at once; by invoice you pay within the due date.",
        "payment_method": "Payment method",
        "more_actions": "Change the subscription",
        "term_change": "Change the term from the next renewal",
        "new_term": "New term",
        "product_switch": "Switch product from the renewal date",
        "new_offering": "New product",
        "keep": "No change (withdraw a pending change)",
        "add_seats": "Add licences (co-termed)",
        "renewal_po": "PO details for the coming renewal invoice",
        "po_number": "PO number",
        "notes": "Notes",
        "refund": "Ask for a refund",
        "reason": "Reason",
        "pending_term": "Term from the next renewal",
        "pending_offering": "Product from the renewal date",
        "add_user": "Add a user",
        "make_admin": "Make secondary admin",
        "remove_admin": "Remove as admin",
        "hand_over": "Hand over primary admin",
        "dead_letters": "Dead letters",
        "dead_letters_intro": "Messages a service could not handle, with the reason. Fix the "
        "cause first, then replay: the service handles each again once (its inbox drops what "
        "it already handled).",
        "replay": "Replay",
        "replayed": "Replayed what was waiting.",
        "replayed_flag": "replayed",
        "waiting": "waiting",
        "no_dead_letters": "No dead letters.",
        "service": "Service",
        "all_invoices": "All invoices and credit notes",
        "paid_on": "Paid",
        "no_vat": "No VAT",
        "lines": "What the invoice is for",
        "description": "Description",
        "quantity": "Quantity",
        "unit_price": "Unit price",
        "net": "Net",
        "vat_rate": "VAT rate",
        "vat": "VAT",
        "download_pdf": "Download the invoice (PDF)",
        "sign_in_next": "Sign in to see the page you asked for; you return to it once signed in.",
    },
    "nb": {
        "portal": "Kontoportal",
        "skip": "Hopp til innholdet",
        "nav": "Hovedmeny",
        "subscriptions": "Abonnement og kontrakter",
        "invoices": "Fakturaer og kreditnotaer",
        "payment_center": "Betalingssenter",
        "users": "Brukere og roller",
        "mail_log": "E-postlogg",
        "operator": "Operatør",
        "find_account": "Finn en konto",
        "test_clocks": "Testklokker",
        "exchange_rates": "Valutakurser",
        "sign_out": "Logg ut",
        "signed_in_as": "Logget inn som",
        "language": "Språk",
        "sign_in": "Logg inn",
        "sign_in_intro": "Skriv inn e-postadressen din. Vi sender deg en lenke som logger deg "
        "inn; den virker én gang, i 15 minutter. Du trenger ikke passord.",
        "email": "E-postadresse",
        "send_link": "Send meg en innloggingslenke",
        "check_mail": "Sjekk e-posten din",
        "check_mail_detail": "Hvis adressen tilhører en bruker av en konto, er en "
        "innloggingslenke på vei dit. Åpne den på denne enheten.",
        "confirm_sign_in": "Logg inn på kontoen din",
        "confirm_sign_in_detail": "Trykk på knappen for å logge inn med denne lenken. Lenken "
        "virker ikke etterpå.",
        "operator_sign_in": "Logg inn som operatør",
        "operator_token": "Operatørnøkkel",
        "operator_token_hint": "En nøkkel av typen operator (python -m shared.auth mint "
        "--kind operator).",
        "signed_out": "Du er logget ut.",
        "session_ended": "Økten er slutt. Logg inn igjen.",
        "offering": "Produkt",
        "seats": "Lisenser",
        "stage": "Status",
        "allows": "Hva den gir",
        "term": "Periode",
        "renews_on": "Fornyes",
        "expires_on": "Utløper",
        "auto_renew": "Automatisk fornyelse",
        "on": "På",
        "off": "Av",
        "turn_on": "Slå på automatisk fornyelse",
        "turn_off": "Slå av automatisk fornyelse",
        "renew_now": "Forny nå",
        "renews_with": "Fornyes med",
        "no_subscriptions": "Ingen abonnementer ennå.",
        "trial": "prøveperiode",
        "product_view_only": "Rollen din viser produktet og tilgangen; datoer og fakturering "
        "hører til kjøperen (R8).",
        "invoice": "Faktura",
        "issued": "Utstedt",
        "due": "Forfall",
        "status": "Status",
        "total": "Sum",
        "purpose": "Gjelder",
        "pdf": "PDF",
        "pay": "Betal",
        "pay_with": "Betal med",
        "no_invoices": "Ingen fakturaer ennå.",
        "credit_notes": "Kreditnotaer",
        "credit_note": "Kreditnota",
        "no_credit_notes": "Ingen kreditnotaer.",
        "paid_ok": "Betalt. Takk.",
        "one_off_card": "Et annet kort (nøkkel fra betalingsløsningen)",
        "payment_methods": "Betalingsmåter",
        "method": "Betalingsmåte",
        "default": "Standard",
        "make_default": "Gjør til standard",
        "add_method": "Legg til en betalingsmåte",
        "type": "Type",
        "card": "Kort",
        "paypal": "PayPal",
        "gateway_token": "Nøkkel fra betalingsløsningen",
        "gateway_token_hint": "Betalingsløsningens skjema gir denne nøkkelen; i sandkassen: "
        "tok_success, tok_decline.",
        "as_default": "Bruk den som standard",
        "add": "Legg til",
        "no_methods": "Ingen lagrede betalingsmåter.",
        "renewal_method": "Hvordan hvert abonnement fornyes",
        "invoice_method": "Faktura",
        "save": "Lagre",
        "saved": "Lagret.",
        "name": "Navn",
        "roles": "Roller",
        "add_payer": "Legg til en betaler",
        "payer_limit_hint": "Høyst fem betalere (R6).",
        "remove": "Fjern",
        "recipient": "Mottaker",
        "subject": "Emne",
        "sent_at": "Sendt",
        "no_mail": "Ingen e-post ennå.",
        "account": "Konto",
        "account_id": "Konto-id",
        "find": "Finn",
        "country": "Land",
        "currency": "Valuta",
        "time_zone": "Tidssone",
        "people": "Personer",
        "clock": "Testklokke",
        "clock_id": "Testklokke-id",
        "open": "Åpne",
        "create_clock": "Lag en testklokke",
        "frozen_time": "Frosset på (ISO 8601 med tidssone)",
        "create": "Lag",
        "now": "Nå",
        "advance_to": "Spol frem til (ISO 8601 med tidssone)",
        "advance": "Spol frem",
        "advancing": "Spoler frem: alt som forfaller underveis skjer nå.",
        "ready": "Klar: hele systemet har roet seg.",
        "timeline": "Tidslinje",
        "timeline_account": "Vis tidslinjen for konto",
        "step": "Steg",
        "what": "Hva",
        "when": "Når",
        "rates": "Kvartalsvise valutakurser",
        "quarter": "Kvartal",
        "rate": "Kurs",
        "channel": "Kanal",
        "no_rates": "Ingen valutakurser ennå.",
        "problem": "Det gikk ikke",
        "unavailable": "En tjeneste svarte ikke. Prøv igjen om litt.",
        "not_found_page": "Den siden finnes ikke.",
        "error": "Noe gikk galt hos oss. Prøv igjen om litt.",
        "field": "Felt",
        "back": "Tilbake",
        "none": "ingen",
        "buy": "Kjøp",
        "ordered": "Bestilt. Abonnementet vises her når det er aktivt.",
        "buy_intro": "Velg produkt, periode og antall lisenser. Kort eller PayPal belastes med "
        "en gang; med faktura betaler du innen forfall.",
        "payment_method": "Betalingsmåte",
        "more_actions": "Endre abonnementet",
        "term_change": "Endre periode fra neste fornyelse",
        "new_term": "Ny periode",
        "product_switch": "Bytt produkt fra fornyelsesdatoen",
        "new_offering": "Nytt produkt",
        "keep": "Ingen endring (trekk tilbake en ventende endring)",
        "add_seats": "Legg til lisenser (samme sluttdato)",
        "renewal_po": "Innkjøpsordre for neste fornyelsesfaktura",
        "po_number": "Innkjøpsordrenummer",
        "notes": "Merknader",
        "refund": "Be om refusjon",
        "reason": "Begrunnelse",
        "pending_term": "Periode fra neste fornyelse",
        "pending_offering": "Produkt fra fornyelsesdatoen",
        "add_user": "Legg til en bruker",
        "make_admin": "Gjør til administrator",
        "remove_admin": "Fjern som administrator",
        "hand_over": "Overlat hovedadministrator",
        "dead_letters": "Døde meldinger",
        "dead_letters_intro": "Meldinger en tjeneste ikke kunne behandle, med årsaken. Rett "
        "årsaken først, og spill dem så av igjen: tjenesten behandler hver av dem én gang til "
        "(innboksen dropper det den alt har behandlet).",
        "replay": "Spill av igjen",
        "replayed": "Det som ventet er spilt av igjen.",
        "replayed_flag": "spilt av",
        "waiting": "venter",
        "no_dead_letters": "Ingen døde meldinger.",
        "service": "Tjeneste",
        "all_invoices": "Alle fakturaer og kreditnotaer",
        "paid_on": "Betalt",
        "no_vat": "Uten mva.",
        "lines": "Hva fakturaen gjelder",
        "description": "Beskrivelse",
        "quantity": "Antall",
        "unit_price": "Enhetspris",
        "net": "Netto",
        "vat_rate": "Mva.-sats",
        "vat": "Mva.",
        "download_pdf": "Last ned fakturaen (PDF)",
        "sign_in_next": "Logg inn for å se siden du ba om; du kommer tilbake til den når du er "
        "logget inn.",
    },
}

# Enum values the services answer, in words.
WORDS: dict[str, dict[str, str]] = {
    "en": {
        "active": "Active",
        "expired": "Expired",
        "suspended": "Suspended",
        "cancelled": "Cancelled",
        "monthly": "monthly",
        "annual": "annual",
        "three_year": "three-year",
        "card": "card",
        "paypal": "PayPal",
        "invoice": "invoice",
        "issued": "open",
        "paid": "paid",
        "credited": "credited",
        "invoice_issued": "issued",
        "invoice_paid": "paid",
        "order": "order",
        "renewal": "renewal",
        "installment": "installment",
        "co_term": "added licences",
        "buyer": "buyer",
        "primary_admin": "primary admin",
        "secondary_admin": "secondary admin",
        "payer": "payer",
        "sent": "sent",
        "pending": "waiting",
        "failed": "failed",
        "product_access": "product access",
        "user_management": "user management",
        "downloads_uploads": "downloads and uploads",
        "insight_reporting": "insight reporting",
        "product_support": "product support",
        "full": "full",
        "none": "none",
        "no_upgrades": "no upgrades",
        "self_help": "self-help only",
        "assignments_preserved": "assignments kept",
        "assignments_deleted": "assignments deleted",
    },
    "nb": {
        "active": "Aktiv",
        "expired": "Utløpt",
        "suspended": "Suspendert",
        "cancelled": "Kansellert",
        "monthly": "månedlig",
        "annual": "årlig",
        "three_year": "treårig",
        "card": "kort",
        "paypal": "PayPal",
        "invoice": "faktura",
        "issued": "åpen",
        "paid": "betalt",
        "credited": "kreditert",
        "invoice_issued": "utstedt",
        "invoice_paid": "betalt",
        "order": "bestilling",
        "renewal": "fornyelse",
        "installment": "avdrag",
        "co_term": "tilleggslisenser",
        "buyer": "kjøper",
        "primary_admin": "hovedadministrator",
        "secondary_admin": "administrator",
        "payer": "betaler",
        "sent": "sendt",
        "pending": "venter",
        "failed": "feilet",
        "product_access": "produkttilgang",
        "user_management": "brukeradministrasjon",
        "downloads_uploads": "nedlasting og opplasting",
        "insight_reporting": "innsiktsrapporter",
        "product_support": "produktstøtte",
        "full": "full",
        "none": "ingen",
        "no_upgrades": "ingen oppgraderinger",
        "self_help": "bare selvhjelp",
        "assignments_preserved": "tildelinger beholdes",
        "assignments_deleted": "tildelinger slettet",
    },
}


# What the services' refusals say, in Norwegian, by the problem's slug; the services speak
# English, and any slug not here is shown as they say it.
PROBLEMS_NB: dict[str, tuple[str, str]] = {
    "role-required": (
        "Rollen din gir ikke tilgang til dette",
        "Bare kjøperen (og betalere for fakturaer) kan se dette (R8).",
    ),
    "buyer-only": ("Bare kjøperen kan gjøre dette", "Be kjøperen av kontoen om å gjøre det (R2)."),
    "not-found": ("Ikke funnet", "Det finnes ikke, eller du har ikke tilgang til det."),
    "sign-in-link-used": (
        "Denne innloggingslenken er allerede brukt",
        "En innloggingslenke virker én gang. Be om en ny.",
    ),
    "sign-in-link-expired": (
        "Denne innloggingslenken er utløpt",
        "En innloggingslenke virker i 15 minutter. Be om en ny.",
    ),
    "sign-in-link-unknown": ("Denne innloggingslenken er ikke gyldig", "Be om en ny."),
    "payment-declined": (
        "Betalingen ble avvist",
        "Betalingsløsningen avviste betalingen. Velg en annen betalingsmåte.",
    ),
    "payer-limit": ("Høyst fem betalere", "Fjern en betaler før du legger til en ny (R6)."),
    "validation": ("Skjemaet er ikke gyldig", "Rett feltet som er nevnt og send igjen."),
}


def language_of(*candidates: str | None) -> str:
    for candidate in candidates:
        if candidate in LANGUAGES:
            return str(candidate)
    return "en"


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def helpers(language: str, time_zone: str | None) -> dict[str, Callable[..., str]]:
    """What templates use: ``t`` (a phrase), ``word`` (an enum value), ``money``, ``when``
    (an instant in the account's time zone), ``day`` and ``percent`` (a VAT rate)."""
    lang = language_of(language)
    locale = LOCALES[lang]
    tz = zone(time_zone)

    def t(key: str) -> str:
        return TEXTS[lang][key]

    def word(value: object) -> str:
        return WORDS[lang].get(str(value), str(value))

    def money(amount: object, currency: str) -> str:
        """As invoices and mails write it (shared.formats: ``NOK 21,330.00``, ``21 330,00 kr``)."""
        try:
            return formats.money(Decimal(str(amount)), currency, lang)
        except (InvalidOperation, ValueError, KeyError):
            return f"{amount} {currency}"

    def when(value: str | datetime | None) -> str:
        if not value:
            return ""
        instant = datetime.fromisoformat(value) if isinstance(value, str) else value
        local = instant.astimezone(tz)
        return f"{format_date(local.date(), 'long', locale=locale)} {local:%H:%M %Z}"

    def day(value: str | date | None) -> str:
        if not value:
            return ""
        if isinstance(value, str):
            value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
        if isinstance(value, datetime):
            value = value.astimezone(tz).date()
        return format_date(value, "long", locale=locale)

    def percent(rate: object) -> str:
        """A VAT rate as invoicing gives it, in percent (``25``): nb ``25 %``, en ``25%``."""
        try:
            fraction = Decimal(str(rate)) / 100
            return str(format_percent(fraction, locale=locale, decimal_quantization=False))
        except (InvalidOperation, ValueError):
            return str(rate)

    return {
        "t": t,
        "word": word,
        "money": money,
        "when": when,
        "day": day,
        "percent": percent,
    }
