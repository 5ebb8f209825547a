"""Notifications' rules, with no I/O: who receives which event (R9-R12), how it reads (R13),
when an event waits for its cause, who may read the mail log (R8) and when a postponed mail is
tried again."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_date
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template
from markupsafe import Markup

from shared import formats
from shared.contracts import Contract, InvoiceDueSoon, InvoiceIssued, InvoiceOverdue
from shared.errors import Forbidden, not_found
from shared.signed_links import DocumentLinks

ROUTING_FILE = Path(__file__).parent / "routing.json"
# R11: the invoice mails whose payload carries the payer addresses printed on the invoice.
INVOICE_MAILS = (InvoiceIssued, InvoiceDueSoon, InvoiceOverdue)
TEMPLATES = Path(__file__).parent / "templates"
LANGUAGES = ("en", "nb")
LOCALES = {"en": "en_GB", "nb": "nb_NO"}
ROLES = ("buyer", "primary_admin", "secondary_admin", "payer")
ADMIN_ROLES = frozenset({"primary_admin", "secondary_admin"})
KINDS = ("billing", "invoice", "renewal", "product", "user_management", "personal")
# R10: admins get product and user-management mail only; R11: payers get invoice mail only.
# "personal" [ours, issue 16]: mail a person asked for themselves (a sign-in link), sent to the
# address named in the event only (``addressee_only``), whatever role that person holds.
KINDS_ALLOWED = {
    "buyer": frozenset(KINDS),
    "primary_admin": frozenset({"product", "user_management", "personal"}),
    "secondary_admin": frozenset({"product", "user_management", "personal"}),
    "payer": frozenset({"invoice", "personal"}),
}


class RoutingError(ValueError):
    """The routing table breaks R10 or R11, or is malformed."""


@dataclass(frozen=True)
class Route:
    template: str
    kind: str
    roles: frozenset[str]
    new_holders_only: bool = False
    addressee_only: bool = False  # only the member whose address is the payload's ``email``


def parse_routing(raw: Mapping[str, Any]) -> dict[str, tuple[Route, ...]]:
    """Reads the routing table, refusing any route that would break R10 or R11."""
    table: dict[str, tuple[Route, ...]] = {}
    for event_type, entries in raw.items():
        if event_type.startswith("_"):
            continue
        routes = []
        for entry in entries:
            route = Route(
                template=entry["template"],
                kind=entry["kind"],
                roles=frozenset(entry["roles"]),
                new_holders_only=bool(entry.get("new_holders_only", False)),
                addressee_only=bool(entry.get("addressee_only", False)),
            )
            if route.kind not in KINDS:
                raise RoutingError(f"{event_type}: unknown kind {route.kind!r}")
            if (route.kind == "personal") != route.addressee_only:
                raise RoutingError(f"{event_type}: personal mail goes to its addressee only")
            for role in route.roles:
                if role not in KINDS_ALLOWED:
                    raise RoutingError(f"{event_type}: unknown role {role!r}")
                if route.kind not in KINDS_ALLOWED[role]:
                    raise RoutingError(
                        f"{event_type}: {role} may not receive {route.kind} mail (R10, R11)"
                    )
            routes.append(route)
        table[event_type] = tuple(routes)
    return table


@cache
def routing() -> dict[str, tuple[Route, ...]]:
    """The routing table is data (routing.json): event type -> mails and receiving roles."""
    return parse_routing(json.loads(ROUTING_FILE.read_text()))


@dataclass(frozen=True)
class Member:
    email: str
    name: str
    language: str
    roles: frozenset[str]


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str
    language: str
    roles: tuple[str, ...]  # every routed role this person holds for this event
    template: str


def recipients(
    routes: Iterable[Route], members: Iterable[Member], before: Iterable[Member] = ()
) -> list[Recipient]:
    """R12: at most one mail per address per event, however many roles the person holds.

    The first route (in table order) that matches a person decides their mail, so a person who
    is both buyer and admin gets the buyer's mail. ``before`` is who held which role before the
    event, for routes that only mail new holders of a role.
    """
    held_before: dict[str, frozenset[str]] = {}
    for member in before:
        key = member.email.lower()
        held_before[key] = held_before.get(key, frozenset()) | member.roles
    by_address: dict[str, list[Member]] = {}
    for member in members:
        by_address.setdefault(member.email.lower(), []).append(member)

    chosen: list[Recipient] = []
    for key, same_address in by_address.items():
        roles = frozenset().union(*(m.roles for m in same_address))
        first = same_address[0]
        template: str | None = None
        matched: set[str] = set()
        for route in routes:
            matching = roles & route.roles
            if route.new_holders_only:  # only roles the person did not hold before the event
                matching -= held_before.get(key, frozenset())
            if not matching:
                continue
            template = template or route.template
            matched |= matching
        if template is not None:
            chosen.append(
                Recipient(first.email, first.name, first.language, tuple(sorted(matched)), template)
            )
    return sorted(chosen, key=lambda r: r.email.lower())


# --- how a mail reads (R13) ------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


LABELS: dict[str, dict[str, str]] = {
    "en": {
        "monthly": "monthly",
        "annual": "annual",
        "three_year": "three-year",
        "card": "card",
        "paypal": "PayPal",
        "invoice": "invoice",
        "active": "Active",
        "expired": "Expired",
        "suspended": "Suspended",
        "cancelled": "Cancelled",
        "order": "order",
        "renewal": "renewal",
        "installment": "installment",
        "co_term": "added licences",
        "signature": "Subscriptions",
    },
    "nb": {
        "monthly": "månedlig",
        "annual": "årlig",
        "three_year": "treårig",
        "card": "kort",
        "paypal": "PayPal",
        "invoice": "faktura",
        "active": "Aktiv",
        "expired": "Utløpt",
        "suspended": "Suspendert",
        "cancelled": "Kansellert",
        "order": "bestilling",
        "renewal": "fornyelse",
        "installment": "avdrag",
        "co_term": "tilleggslisenser",
        "signature": "Abonnementer",
    },
}


def language_of(preferred: str | None, account_language: str | None) -> str:
    """R13: the person's language, else the account's, else English."""
    for candidate in (preferred, account_language):
        if candidate in LANGUAGES:
            return str(candidate)
    return "en"


def time_zone_of(*candidates: str | None) -> ZoneInfo:
    """R13: the account's time zone first; an unknown zone falls back to the next, then UTC."""
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def local_time(instant: datetime, time_zone: str) -> str:
    """R13: dates in the account's time zone."""
    return instant.astimezone(ZoneInfo(time_zone)).strftime("%Y-%m-%d %H:%M %Z")


# R35 in words (issue 15): capability -> value -> (what is still allowed, what no longer is).
# A value that withdraws something lists it as no longer allowed, never as allowed.
Entitled = dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]]
ENTITLEMENT_WORDS: dict[str, Entitled] = {
    "en": {
        "product_access": {
            "full": (("Use the software",), ()),
            "none": ((), ("Use the software",)),
        },
        "user_management": {
            "full": (("Manage users and assign seats",), ()),
            "assignments_preserved": ((), ("Manage users (the seat assignments are kept)",)),
            "assignments_deleted": ((), ("Manage users (the seat assignments are deleted)",)),
        },
        "downloads_uploads": {
            "full": (("Download the software and its upgrades, upload files",), ()),
            "no_upgrades": (
                ("Download the version you have and upload files",),
                ("Download upgrades",),
            ),
            "none": ((), ("Download the software or upload files",)),
        },
        "insight_reporting": {
            "full": (("Usage and insight reports",), ()),
            "none": ((), ("Usage and insight reports",)),
        },
        "product_support": {
            "full": (("Contact product support",), ()),
            "self_help": (
                ("Self-help: help pages and the user forum",),
                ("Contact product support",),
            ),
        },
    },
    "nb": {
        "product_access": {
            "full": (("Bruke programvaren",), ()),
            "none": ((), ("Bruke programvaren",)),
        },
        "user_management": {
            "full": (("Administrere brukere og tildele lisenser",), ()),
            "assignments_preserved": ((), ("Administrere brukere (tildelingene beholdes)",)),
            "assignments_deleted": ((), ("Administrere brukere (tildelingene er slettet)",)),
        },
        "downloads_uploads": {
            "full": (("Laste ned programvaren og oppgraderinger, laste opp filer",), ()),
            "no_upgrades": (
                ("Laste ned versjonen dere har, og laste opp filer",),
                ("Laste ned oppgraderinger",),
            ),
            "none": ((), ("Laste ned programvaren eller laste opp filer",)),
        },
        "insight_reporting": {
            "full": (("Bruks- og innsiktsrapporter",), ()),
            "none": ((), ("Bruks- og innsiktsrapporter",)),
        },
        "product_support": {
            "full": (("Kontakte produktstøtte",), ()),
            "self_help": (
                ("Selvhjelp: hjelpesider og brukerforum",),
                ("Kontakte produktstøtte",),
            ),
        },
    },
}
OTHER_FEATURES = {"en": "Other features of the subscription", "nb": "Andre deler av abonnementet"}


def entitlement_lists(
    entitlements: Mapping[str, str], language: str
) -> tuple[list[str], list[str]]:
    """R35 as a reader reads it: (still allowed, no longer allowed), in words. A capability or
    value without words is counted as no longer allowed, and never shown as its code."""
    words = ENTITLEMENT_WORDS[language]
    allowed: list[str] = []
    withdrawn: list[str] = []
    order = list(words)  # R35's order: product access first, support last
    for capability in sorted(
        entitlements, key=lambda c: (c not in words, order.index(c) if c in words else 0, c)
    ):
        found = words.get(capability, {}).get(entitlements[capability])
        if found is None:
            found = ((), (OTHER_FEATURES[language],))
        allowed += [w for w in found[0] if w not in allowed]
        withdrawn += [w for w in found[1] if w not in withdrawn]
    return allowed, withdrawn


def formatters(language: str, zone: ZoneInfo) -> dict[str, Callable[..., Any]]:
    """What templates use to show money, instants, days, products and enum values in the
    language: nb ``21 330,00 kr``, ``29. nov. 2026 kl. 14:30 CET``; en ``NOK 21,330.00``,
    ``29 Nov 2026, 14:30 CET``."""
    locale = LOCALES[language]
    at = " kl. " if language == "nb" else ", "

    def money(amount: Decimal | str | float, currency: str) -> str:
        return formats.money(Decimal(str(amount)), currency, language)

    def when(instant: datetime) -> str:
        local = instant.astimezone(zone)
        return f"{format_date(local.date(), 'medium', locale=locale)}{at}{local:%H:%M %Z}"

    def day(value: date | datetime) -> str:
        if isinstance(value, datetime):
            value = value.astimezone(zone).date()
        return format_date(value, "medium", locale=locale)

    def label(value: str) -> str:
        return LABELS[language].get(value, value)

    def product(code: str | None) -> str | None:
        return formats.product_name(code, language)

    def invoice_for(purpose: str, installment: int | None, offering: str | None) -> str:
        return invoice_subject(language, purpose, installment, offering)

    return {
        "money": money,
        "when": when,
        "day": day,
        "label": label,
        "product": product,
        "invoice_for": invoice_for,
    }


INVOICE_FOR = {
    "en": {
        "order": (" for {product}", " for your order"),
        "renewal": (" for the renewal of {product}", " for your renewal"),
        "co_term": (" for the seats added to {product}", " for the seats you added"),
        "installment": (" for {product}, installment {n} of 3", ", installment {n} of 3"),
    },
    "nb": {
        "order": (" for {product}", " for bestillingen din"),
        "renewal": (" for fornyelsen av {product}", " for fornyelsen"),
        "co_term": (" for lisensene lagt til {product}", " for lisensene dere la til"),
        "installment": (" for {product}, avdrag {n} av 3", ", avdrag {n} av 3"),
    },
}


def invoice_subject(
    language: str, purpose: str, installment: int | None, offering: str | None
) -> str:
    """What an invoice is for, in plain words, to follow its number (issue 15): " for AutoCAD",
    " for the renewal of AutoCAD", " for AutoCAD, installment 2 of 3"; never the purpose's
    code."""
    phrases = INVOICE_FOR[language]
    kind = "installment" if installment else purpose if purpose in phrases else "order"
    with_product, without = phrases[kind]
    text = with_product if offering else without
    return text.format(product=offering, n=installment)


@cache
def _environment(html: bool) -> Environment:
    """Two views of the same files: the HTML one autoescapes everything, the text one nothing."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=html,  # noqa: S701 - the text view is plain text, never shown as HTML
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _block(template: Template, name: str, context: dict[str, Any]) -> str:
    return "".join(template.blocks[name](template.new_context(context)))


# Inline styles only (issue 15): mail clients drop <style> blocks and never load external
# sheets, so every element a template writes carries its style (the layout writes its own).
# Templates are autoescaped, so no text of a name or a number can open one of these tags.
INLINE_STYLES = {
    "p": "margin:0 0 14px 0;",
    "table": "border-collapse:collapse;margin:0 0 14px 0;",
    "th": "padding:4px 16px 4px 0;font-weight:bold;vertical-align:top;",
    "td": "padding:4px 16px 4px 0;vertical-align:top;",
    "ul": "margin:0 0 14px 0;padding:0 0 0 20px;",
    "li": "margin:0 0 4px 0;",
    "a": "color:#1a5fb4;text-decoration:underline;",
    "strong": "font-weight:bold;",
}
_OPENING_TAG = re.compile(r"<(p|table|th|td|ul|li|a|strong)(?=[\s>])([^>]*)>")
_ALIGN = re.compile(r'\balign="(left|right|center)"')


def inline_styles(html: str) -> str:
    """Each opening tag of ``INLINE_STYLES`` without a style gets its style (and its ``align``
    as ``text-align``, which every client honours)."""

    def styled(match: re.Match[str]) -> str:
        tag, attributes = match.group(1), match.group(2)
        if "style=" in attributes:
            return match.group(0)
        style = INLINE_STYLES[tag]
        aligned = _ALIGN.search(attributes)
        if aligned:
            style += f"text-align:{aligned.group(1)};"
        elif tag == "th":
            style += "text-align:left;"
        return f'<{tag} style="{style}"{attributes}>'

    return _OPENING_TAG.sub(styled, html)


def template_names() -> list[str]:
    """Every mail template, as ``<language>/<name>.j2`` files."""
    return sorted(p.stem for p in (TEMPLATES / "en").glob("*.j2"))


def render(
    template: str, language: str, context: dict[str, Any], time_zone: ZoneInfo | None = None
) -> RenderedMail:
    """R13: the mail in the language (English when we have no such language), subject, plain
    text and HTML, dates in ``time_zone``."""
    lang = language if language in LANGUAGES else "en"
    full = {**context, **formatters(lang, time_zone or ZoneInfo("UTC")), "lang": lang}
    if context.get("offering"):  # products by name, never by code (issue 15)
        full["offering"] = formats.product_name(context["offering"], lang)
    if isinstance(context.get("entitlements"), Mapping):  # R35 in words
        full["still_allowed"], full["no_longer_allowed"] = entitlement_lists(
            context["entitlements"], lang
        )
    text_template = _environment(False).get_template(f"{lang}/{template}.j2")
    html_template = _environment(True).get_template(f"{lang}/{template}.j2")
    # A subject is one line whatever a name or a number contains (no header injection).
    subject = " ".join(_block(text_template, "subject", full).split())
    signature = LABELS[lang]["signature"]
    text = f"{_block(text_template, 'text', full).strip()}\n\n-- \n{signature}\n"
    body = Markup(inline_styles(_block(html_template, "html", full)))  # noqa: S704 - autoescaped
    html = (
        _environment(True)
        .get_template("layout.html.j2")
        .render(lang=lang, subject=subject, body=body, signature=signature)
    )
    return RenderedMail(subject, text, html)


def invoice_payers(addresses: Iterable[str], members: Iterable[Member]) -> list[Member]:
    """R11: addresses on an invoice that are nobody's in the projection still get the invoice,
    as payers, in the account's language."""
    known = {m.email.lower() for m in members}
    return [Member(a, "", "", frozenset({"payer"})) for a in addresses if a.lower() not in known]


def mail_context(
    payload: dict[str, Any],
    *,
    account_name: str | None,
    offering: str | None,
    links: DocumentLinks,
    now: datetime,
) -> dict[str, Any]:
    """What every template of an event sees: the payload, the account's name, the product, and
    signed links (issue 15, ``shared.signed_links``) to the invoice's or credit note's PDF that
    open in a browser without a bearer token until ``links.lifetime`` after ``now``.

    The product is the event's own ``offering`` when it carries one (invoicing's invoice events
    do), else the subscription's as this service learnt it (``OrderPlaced``, another topic, so
    perhaps not yet). An invoice's mail also links its page in the portal (``invoice_page_url``),
    which asks the reader to sign in, so that link needs no signature."""
    context: dict[str, Any] = {"account_name": account_name, **payload}
    context["offering"] = payload.get("offering") or offering
    context["link_days"] = links.lifetime.days
    if payload.get("invoice_id"):
        invoice_id = uuid.UUID(str(payload["invoice_id"]))
        context["pdf_url"] = links.url("invoice", invoice_id, now)
        context["invoice_page_url"] = links.invoice_page(invoice_id)
    if payload.get("credit_note_id"):
        note = uuid.UUID(str(payload["credit_note_id"]))
        context["credit_note_url"] = links.url("credit-note", note, now)
    return context


def personal(context: dict[str, Any], recipient: Recipient) -> dict[str, Any]:
    return {
        **context,
        "recipient_name": recipient.name or recipient.email,
        "recipient_roles": recipient.roles,
    }


@dataclass(frozen=True)
class Account:
    """What notifications knows of an account (from ``AccountOpened``)."""

    name: str | None
    language: str
    time_zone: str


@dataclass(frozen=True)
class PlannedMail:
    """One mail of an event to one address, rendered when the event is handled (R13)."""

    recipient: Recipient
    mail: RenderedMail


def plan_mails(
    event_type: str,
    payload: Contract,
    *,
    members: Iterable[Member],
    before: Iterable[Member] = (),
    account: Account | None,
    offering: str | None,
    links: DocumentLinks,
    now: datetime,
) -> list[PlannedMail]:
    """The mails an event causes: one per address (R12), chosen by the routing table and the
    roles people hold (R9-R11), each in the person's language and the account's time zone
    (R13)."""
    routes = routing().get(event_type, ())
    receivers = list(members)
    if any(route.addressee_only for route in routes):
        addressee = str(getattr(payload, "email", "")).lower()
        receivers = [m for m in receivers if m.email.lower() == addressee]
    if isinstance(payload, INVOICE_MAILS):
        # R11: the payer addresses printed on the invoice receive it too (R7: at most five).
        receivers += invoice_payers(payload.payer_emails, receivers)
    zone = time_zone_of(account.time_zone if account else None, getattr(payload, "time_zone", None))
    context = mail_context(
        payload.model_dump(),
        account_name=account.name if account else None,
        offering=offering,
        links=links,
        now=now,
    )
    planned = []
    for recipient in recipients(routes, receivers, before):
        language = language_of(recipient.language, account.language if account else None)
        mail = render(recipient.template, language, personal(context, recipient), zone)
        planned.append(PlannedMail(recipient, mail))
    return planned


# --- events that wait for their cause ---------------------------------------------------------

# One account's events are in order within a topic, not across topics: lifecycle's
# SubscriptionActivated (caused by OrderPlaced or TrialConverted, both on ordering's topic behind
# every earlier RolesChanged) may arrive before the roles snapshot that makes someone an admin.
# Waiting for the cause routes it by roles at least as new as the order's, so an admin appointed
# before the order gets the access mail (R10).
ROUTED_AFTER_CAUSE = frozenset({"SubscriptionActivated"})


def people_cause(account_id: uuid.UUID) -> str:
    """What an event waits for until the account's people are known (its first RolesChanged)."""
    return f"people:{account_id}"


def event_cause(event_id: uuid.UUID) -> str:
    """What an event waits for until the event that caused it has been handled."""
    return f"event:{event_id}"


def routed_after_cause(event_type: str, causation_id: uuid.UUID | None) -> bool:
    return event_type in ROUTED_AFTER_CAUSE and causation_id is not None


# --- who may read the mail log (R8) -------------------------------------------------------------

MAIL_LOG_READERS = frozenset({"buyer"})


def require_mail_log_reader(kind: str, roles: Iterable[str]) -> None:
    """R8: operators and the buyer read an account's mail log; a member without the role is
    refused (403), anyone else learns nothing of the account (404)."""
    if kind == "operator":
        return
    held = frozenset(roles)
    if not held:
        raise not_found("account")
    if not held & MAIL_LOG_READERS:
        allowed = sorted(MAIL_LOG_READERS)
        raise Forbidden(
            "role-required",
            "Your role does not allow this",
            f"Only {' or '.join(allowed)} may do this (R8).",
            rule="R8",
            required_roles=allowed,
        )


# --- when a postponed mail is tried again -----------------------------------------------------

RETRY_DELAYS = (5, 30, 120, 300, 600)  # seconds after the 1st, 2nd, ... failed attempt
RETRY_CEILING = 900


def retry_delay(attempts: int) -> timedelta:
    """Backoff after ``attempts`` failed attempts (0-based count before this failure)."""
    return timedelta(
        seconds=RETRY_DELAYS[attempts] if attempts < len(RETRY_DELAYS) else RETRY_CEILING
    )


ROLE_NAMES = {
    "buyer": "buyer",
    "primary_admin": "primary admin",
    "secondary_admin": "secondary admins",
    "payer": "payers",
}


def routing_document() -> str:
    """The routing table as Markdown (docs/notifications-routing.md is this, verbatim)."""
    lines = [
        "# Who gets which e-mail",
        "",
        "Generated from `services/notifications/routing.json` by",
        "`python -m services.notifications.routing_doc`; a unit test fails when this file and",
        "the table differ. The code routes by the same table.",
        "",
        "| event | mail (template) | kind | received by |",
        "|-------|-----------------|------|-------------|",
    ]
    for event_type, routes in sorted(routing().items()):
        for route in routes:
            who = ", ".join(ROLE_NAMES[r] for r in ROLES if r in route.roles)
            if route.new_holders_only:
                who += " (only who newly holds the role)"
            if route.addressee_only:
                who = "the person who asked (any role), at the address in the event"
            lines.append(f"| `{event_type}` | `{route.template}` | {route.kind} | {who} |")
    lines += [
        "",
        "Rules the table obeys (the service refuses to start with a table that breaks them):",
        "",
        "- **R9** the buyer receives every billing, invoice and renewal mail.",
        "- **R10** admins (primary and secondary) receive only `product` and `user_management`",
        "  mail; billing and renewal mail reaches an admin only when that admin is the buyer.",
        "- **R11** payers receive only `invoice` mail: the payers of the account's roles, and",
        "  every address printed on the invoice (`payer_emails`), in the account's language.",
        "- **R12** one mail per address per event. When an event routes different mails to",
        "  different roles (`StageChanged`), a person holding several of them gets the first",
        "  route's mail, in table order: a buyer who is also an admin gets the buyer's mail",
        "  (it states the stage and what it still allows, R35). The same event delivered twice",
        "  queues nothing the second time (inbox), and `(event, address)` is unique.",
        "- **RolesChanged** (a full snapshot) is compared with the previous snapshot: whoever",
        "  newly holds the primary-admin or a secondary-admin role gets `admin_appointed`",
        "  (so a new account's first admin, a promotion to primary admin and a newly added",
        "  admin are told). Losing a role, becoming buyer or payer, or an unchanged snapshot",
        "  mails nobody.",
        "- **SignInLinkRequested** [ours, issue 16] is `personal` mail: the sign-in link goes to",
        "  the one address that asked for it, whatever role the person holds; nobody else.",
        "- **R13** the mail is in the person's language (`en` or `nb`), else the account's,",
        "  else English; dates in the account's time zone; money formatted for the language.",
        "",
    ]
    return "\n".join(lines)
