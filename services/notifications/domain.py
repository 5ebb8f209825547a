"""Notifications' rules, with no I/O: who receives which event (R9-R12), how it reads (R13),
when an event waits for its cause, who may read the mail log (R8) and when a postponed mail is
tried again."""

from __future__ import annotations

import json
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
from babel.numbers import format_currency
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template
from markupsafe import Markup

from shared.contracts import Contract, InvoiceDueSoon, InvoiceIssued, InvoiceOverdue
from shared.errors import Forbidden, not_found

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


def formatters(language: str, zone: ZoneInfo) -> dict[str, Callable[..., str]]:
    """What templates use to show money, instants, days and enum values in the language."""
    locale = LOCALES[language]
    at = " kl. " if language == "nb" else ", "

    def money(amount: Decimal | str | float, currency: str) -> str:
        return format_currency(Decimal(str(amount)), currency, locale=locale)

    def when(instant: datetime) -> str:
        local = instant.astimezone(zone)
        return f"{format_date(local.date(), 'long', locale=locale)}{at}{local:%H:%M %Z}"

    def day(value: date | datetime) -> str:
        if isinstance(value, datetime):
            value = value.astimezone(zone).date()
        return format_date(value, "long", locale=locale)

    def label(value: str) -> str:
        return LABELS[language].get(value, value)

    return {"money": money, "when": when, "day": day, "label": label}


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
    text_template = _environment(False).get_template(f"{lang}/{template}.j2")
    html_template = _environment(True).get_template(f"{lang}/{template}.j2")
    # A subject is one line whatever a name or a number contains (no header injection).
    subject = " ".join(_block(text_template, "subject", full).split())
    signature = LABELS[lang]["signature"]
    text = f"{_block(text_template, 'text', full).strip()}\n\n-- \n{signature}\n"
    body = Markup(_block(html_template, "html", full))  # noqa: S704 - autoescaped when rendered
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


def invoice_pdf_url(invoicing_url: str, invoice_id: object) -> str:
    return f"{invoicing_url.rstrip('/')}/v1/invoices/{invoice_id}.pdf"


def mail_context(
    payload: dict[str, Any], *, account_name: str | None, offering: str | None, invoicing_url: str
) -> dict[str, Any]:
    """What every template of an event sees: the payload, the account's name, the product."""
    context: dict[str, Any] = {"account_name": account_name, "offering": offering, **payload}
    if "invoice_id" in payload:
        context["pdf_url"] = invoice_pdf_url(invoicing_url, payload["invoice_id"])
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
    invoicing_url: str,
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
        invoicing_url=invoicing_url,
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
