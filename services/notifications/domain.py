"""Notifications' rules, with no I/O: who receives which event (R9-R12) and how it reads (R13)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

ROUTING_FILE = Path(__file__).parent / "routing.json"
TEMPLATES = Path(__file__).parent / "templates"
LANGUAGES = ("en", "nb")


@dataclass(frozen=True)
class Route:
    template: str
    roles: frozenset[str]


@cache
def routing() -> dict[str, Route]:
    """The routing table is data (routing.json): event type -> template and receiving roles."""
    raw = json.loads(ROUTING_FILE.read_text())
    return {
        event_type: Route(entry["template"], frozenset(entry["roles"]))
        for event_type, entry in raw.items()
        if not event_type.startswith("_")
    }


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
    roles: tuple[str, ...]  # the roles for which this person receives the mail


def recipients(route: Route, members: list[Member]) -> list[Recipient]:
    """R12: one mail per address per event, however many roles the person holds."""
    chosen: dict[str, Recipient] = {}
    for member in members:
        matching = member.roles & route.roles
        if not matching:
            continue
        key = member.email.lower()
        previous = chosen.get(key)
        roles = set(matching) | set(previous.roles if previous else ())
        chosen[key] = Recipient(member.email, member.name, member.language, tuple(sorted(roles)))
    return sorted(chosen.values(), key=lambda r: r.email.lower())


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


@cache
def _environment() -> Environment:
    """HTML templates (``*.html.j2``) are autoescaped; plain-text ones are not HTML."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render(template: str, language: str, context: dict[str, Any]) -> RenderedMail:
    """R13: the mail in the recipient's language (English when we have no such language)."""
    lang = language if language in LANGUAGES else "en"
    subject = _environment().get_template(f"{lang}/{template}.subject.j2").render(context)
    text = _environment().get_template(f"{lang}/{template}.txt.j2").render(context)
    html = _environment().get_template(f"{lang}/{template}.html.j2").render(context)
    # A subject is one line whatever a name or a number contains (no header injection).
    return RenderedMail(" ".join(subject.split()), text, html)


def local_time(instant: datetime, time_zone: str) -> str:
    """R13: dates in the account's time zone."""
    return instant.astimezone(ZoneInfo(time_zone)).strftime("%Y-%m-%d %H:%M %Z")
