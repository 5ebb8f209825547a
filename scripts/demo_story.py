"""The demo's story (``make demo``): the whole life of one subscription on a fresh test clock.

A purchase, a year, a renewal, auto-renew turned off, the renewal window and its reminders, the
lapse at 23:59:59 local, Expired, Suspended, Cancelled: every step goes through the services'
public APIs, time moves only through the test clock, and the terminal shows a live timeline read
from the four ``*.events`` topics (each business event and each mail as it happens).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.auth import issue_token
from shared.config import Settings
from shared.contracts import Envelope
from shared.time.clock import SystemClock
from shared.topics import PRODUCERS, Topics

ZONE_NAME = "Europe/Oslo"
ZONE = ZoneInfo(ZONE_NAME)
PORTS = {"ordering": 8001, "invoicing": 8002, "lifecycle": 8003, "notifications": 8004}
MAIL_UI = "http://127.0.0.1:1080"
STEP_TIMEOUT = 90.0


class DemoFailed(Exception):
    pass


# --- output ---------------------------------------------------------------------------------


class Out:
    """Plain text when stdout is not a terminal (or NO_COLOR is set); a little colour on one."""

    def __init__(self) -> None:
        self.colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.started = time.monotonic()

    def paint(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.colour else text

    def line(self, text: str = "") -> None:
        print(text, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def chapter(self, title: str, note: str) -> None:
        self.line()
        self.line(self.paint("1", f"== {title} "))
        self.line(self.paint("2", f"   {note}"))

    def clock(self, now: datetime, step: int, status: str) -> None:
        text = f"   ~~ clock {local(now)}  step {step:<3d} {status:9s} [+{self.elapsed():5.1f} s]"
        self.line(self.paint("2;36", text))

    def event(self, at: datetime, kind: str, summary: str) -> None:
        self.line(f"   {local(at)}  {self.paint('1;33', f'{kind:24s}')} {summary}")

    def mail(self, at: datetime, recipient: str, roles: str, template: str, subject: str) -> None:
        head = self.paint("1;32", f"{'mail':24s}")
        self.line(f"   {local(at)}  {head} to {recipient} ({roles}): {template} - {subject!r}")


def local(at: datetime) -> str:
    return at.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S %Z").ljust(24)


def money(currency: str, amount: str | Decimal) -> str:
    return f"{currency} {Decimal(amount):,.2f}"


def role_names(roles: list[str]) -> str:
    return ", ".join(r.replace("_", " ") for r in roles)


# --- the event feed -------------------------------------------------------------------------


def summarise(e: Envelope) -> str:
    p = e.payload
    match e.event_type:
        case "AccountOpened":
            return (
                f"{p['name']}, {p['country']}, {p['currency']}, language {p['language']}, "
                f"{p['time_zone']}, on test clock {str(p['test_clock_id'])[:8]}"
            )
        case "RolesChanged":
            admins = ", ".join(a["email"] for a in p["secondary_admins"]) or "none"
            return (
                f"buyer {p['buyer']['email']}, primary admin {p['primary_admin']['email']}, "
                f"secondary admins: {admins}"
            )
        case "OrderPlaced":
            return (
                f"order {p['order_number']}: {p['offering']} {p['term']}, {p['seats']} seats, "
                f"{p['payment_method']}, auto-renew {'on' if p['auto_renew'] else 'off'}"
            )
        case "InvoiceIssued":
            return (
                f"invoice {p['invoice_number']} ({p['purpose']}): "
                f"{money(p['currency'], p['gross_total'])} incl. VAT "
                f"{money(p['currency'], p['vat_total'])}, due {p['due_date']}"
            )
        case "PaymentSucceeded":
            return f"{money(p['currency'], p['amount'])} charged by {p['method']}"
        case "PaymentFailed":
            return f"{money(p['currency'], p['amount'])} by {p['method']} failed: {p['reason']}"
        case "InvoicePaid":
            return f"invoice {p['invoice_number']} paid"
        case "SubscriptionActivated" | "SubscriptionRenewed":
            return (
                f"{p['offering']} {p['term']}, {p['seats']} seats, "
                f"expires {local_short(p['expires_at'])}, renews {local_short(p['renews_at'])}"
            )
        case "RenewalWindowOpened":
            return (
                f"renewal can be bought until {local_short(p['renews_at'])}; "
                f"auto-renew {'on' if p['auto_renew'] else 'off'}"
            )
        case "RenewalDue":
            return (
                f"renew {p['offering']} {p['term']} {p['seats']} seats by {p['payment_method']}, "
                f"until {local_short(p['period_ends_at'])}"
            )
        case "AutoRenewChanged":
            return f"auto-renew {'on' if p['auto_renew'] else 'off'}"
        case "RenewalReminderDue":
            return f"{p['days_before']} days before expiry ({local_short(p['expires_at'])})"
        case "StageChanged":
            rights = ", ".join(
                f"{RIGHTS.get(k, k)} {v.replace('_', ' ')}" for k, v in p["entitlements"].items()
            )
            nxt = f"; next stage {local_short(p['next_stage_at'])}" if p["next_stage_at"] else ""
            return f"{p['from_stage']} -> {p['to_stage']} ({p['reason']}); {rights}{nxt}"
        case "SubscriptionReactivated":
            return f"{p['from_stage']} -> active ({p['reason']})"
        case "EmailFailed":
            return f"to {p['recipient']}: {p['reason']}"
        case _:
            return ""


RIGHTS = {
    "product_access": "access",
    "user_management": "users",
    "downloads_uploads": "downloads",
    "insight_reporting": "reporting",
    "product_support": "support",
}


def local_short(value: str) -> str:
    return datetime.fromisoformat(value).astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class Feed:
    """The four ``*.events`` topics read from their end offsets, filtered by the demo's account."""

    consumer: AIOKafkaConsumer
    partitions: list[TopicPartition]
    account_id: uuid.UUID | None = None
    pending: list[Envelope] = field(default_factory=list)
    seen: list[Envelope] = field(default_factory=list)

    @classmethod
    async def open(cls, settings: Settings) -> Feed:
        topics = [Topics(settings.topic_prefix).events(p) for p in PRODUCERS]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            described = await admin.describe_topics(topics)
        finally:
            await admin.close()
        partitions = [
            TopicPartition(topic["topic"], partition["partition"])
            for topic in described
            if topic["error_code"] == 0
            for partition in topic["partitions"]
        ]
        if not partitions:
            raise DemoFailed(f"no partitions found for {', '.join(topics)}")
        await consumer.start()
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # resolve "the end" now, before the story begins
        return cls(consumer, partitions)

    async def close(self) -> None:
        await self.consumer.stop()

    async def read(self, timeout_ms: int) -> None:
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=1000)
        for records in batches.values():
            for record in records:
                try:
                    envelope = Envelope.model_validate_json(record.value)
                except ValueError:
                    continue
                if envelope.account_id == self.account_id:
                    self.pending.append(envelope)
                    self.seen.append(envelope)

    async def catch_up(self, timeout: float = 5.0) -> None:
        """Read everything published so far (the end offsets of this moment)."""
        ends = await self.consumer.end_offsets(self.partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = [await self.consumer.position(tp) for tp in self.partitions]
            if all(pos >= ends[tp] for pos, tp in zip(positions, self.partitions, strict=True)):
                return
            await self.read(timeout_ms=100)

    def take(self, before: datetime | None = None) -> list[Envelope]:
        """Unprinted events (those before ``before`` only), by business time, then as recorded."""
        chosen = [e for e in self.pending if before is None or e.occurred_at < before]
        self.pending = [e for e in self.pending if e not in chosen]
        return sorted(chosen, key=lambda e: (e.occurred_at, e.recorded_at))  # causes first


# --- the story ------------------------------------------------------------------------------


def url(service: str, path: str) -> str:
    return f"http://127.0.0.1:{PORTS[service]}{path}"


class Story:
    def __init__(self, http: httpx.AsyncClient, feed: Feed, out: Out) -> None:
        self.http = http
        self.feed = feed
        self.out = out
        token = issue_token(
            Settings(), SystemClock(), subject=uuid.uuid4(), kind="operator", ttl=timedelta(hours=1)
        )
        self.operator = {"Authorization": f"Bearer {token}"}
        self.clock_id = ""
        self.clock_now: datetime | None = None

    async def call(
        self, method: str, service: str, path: str, who: dict[str, str], body: Any = None
    ) -> dict[str, Any]:
        headers = dict(who)
        if method != "GET":
            headers["Idempotency-Key"] = str(uuid.uuid4())
        response = await self.http.request(method, url(service, path), headers=headers, json=body)
        if response.status_code >= 400:
            raise DemoFailed(f"{method} {service}{path}: {response.status_code} {response.text}")
        data: dict[str, Any] = response.json()
        return data

    def show(self, events: list[Envelope]) -> None:
        for e in events:
            if e.event_type == "EmailSent":
                p = e.payload
                self.out.mail(
                    e.occurred_at,
                    p["recipient"],
                    role_names(p["roles"]),
                    p["template"],
                    p["subject"],
                )
            else:
                self.out.event(e.occurred_at, e.event_type, summarise(e))

    async def watch(self, what: str) -> None:
        """Until the clock is ready: its time ticking through the steps, each event as it comes."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            # Events first, then the clock: whatever was read happened at or before its time.
            await self.feed.catch_up()
            clock = await self.call(
                "GET", "lifecycle", f"/v1/test-clocks/{self.clock_id}", self.operator
            )
            now, status = datetime.fromisoformat(clock["now"]), clock["status"]
            if now != self.clock_now:
                self.show(self.feed.take(before=now))
                self.out.clock(now, clock["step"], status)
                self.clock_now = now
            self.show(self.feed.take())
            if status == "ready":
                self.out.clock(now, clock["step"], "ready")
                return
            if time.monotonic() > deadline:
                raise DemoFailed(f"the test clock did not settle ({what}) in {STEP_TIMEOUT:.0f} s")
            await self.feed.read(timeout_ms=250)

    async def advance(self, to: datetime, what: str) -> None:
        await self.call(
            "POST",
            "lifecycle",
            f"/v1/test-clocks/{self.clock_id}/advance",
            self.operator,
            {"to": to.isoformat()},
        )
        await self.watch(what)

    async def play(self) -> Summary:
        out = self.out
        start = datetime.now(ZONE).replace(hour=10, minute=30, second=0, microsecond=0)
        tag = uuid.uuid4().hex[:6]
        buyer = f"kari.nordmann+{tag}@example.com"
        admin = f"ola.hansen+{tag}@example.com"

        out.chapter(
            "1. A purchase",
            f"A fresh test clock frozen at {local(start).strip()}; Fjord Arkitekter AS (Norway, "
            "nb) buys AutoCAD, annual, 3 seats, by card, auto-renew on; Ola is secondary admin.",
        )
        clock = await self.call(
            "POST",
            "lifecycle",
            "/v1/test-clocks",
            self.operator,
            {"frozen_time": start.isoformat(), "name": f"demo {tag}"},
        )
        self.clock_id = clock["id"]
        await self.watch("clock created")
        account = await self.call(
            "POST",
            "ordering",
            "/v1/accounts",
            self.operator,
            {
                "name": "Fjord Arkitekter AS",
                "country": "NO",
                "currency": "NOK",
                "language": "nb",
                "time_zone": ZONE_NAME,
                "test_clock_id": self.clock_id,
                "buyer": {"email": buyer, "name": "Kari Nordmann"},
            },
        )
        self.feed.account_id = uuid.UUID(account["id"])
        kari = {"Authorization": f"Bearer {account['token']}"}
        ola = await self.call(
            "POST",
            "ordering",
            f"/v1/accounts/{account['id']}/users",
            kari,
            {"email": admin, "name": "Ola Hansen"},
        )
        await self.call(
            "POST",
            "ordering",
            f"/v1/accounts/{account['id']}/secondary-admins",
            kari,
            {"user_id": ola["user_id"]},
        )
        order = await self.call(
            "POST",
            "ordering",
            f"/v1/accounts/{account['id']}/orders",
            kari,
            {"offering": "autocad", "term": "annual", "seats": 3, "payment_method": "card"},
        )
        subscription_path = f"/v1/subscriptions/{order['subscription_id']}"
        await self.advance(start + timedelta(minutes=30), "the purchase settles")

        sub = await self.call("GET", "lifecycle", subscription_path, kari)
        renews = datetime.fromisoformat(sub["renews_at"])
        out.chapter(
            "2. A year passes",
            f"The renewal window opens 90 days ahead; on {local(renews).strip()} the "
            "subscription renews itself: renewal invoice, card charged, mails.",
        )
        await self.advance(renews + timedelta(hours=12), "a year later")

        out.chapter(
            "3. Kari turns auto-renew off",
            "Full access until the expiry date; the subscription will lapse instead of renewing.",
        )
        await self.call(
            "PUT", "ordering", f"{subscription_path}/auto-renew", kari, {"auto_renew": False}
        )
        await self.advance(renews + timedelta(hours=12, minutes=5), "auto-renew off settles")

        sub = await self.call("GET", "lifecycle", subscription_path, kari)
        expires = datetime.fromisoformat(sub["expires_at"])
        out.chapter(
            "4. The renewal window and the reminders",
            f"The window opens 90 days before the renewal date; reminders 45, 30 and 4 days "
            f"before the expiry at {local(expires).strip()}.",
        )
        await self.advance(expires - timedelta(hours=1), "the window and the reminders")

        out.chapter(
            "5. The lapse, Expired -> Suspended -> Cancelled",
            "Not renewed: expiry at 23:59:59 local, 15 days Expired, 30 days Suspended, then "
            "Cancelled.",
        )
        await self.advance(expires + timedelta(days=50), "the expiry process")
        final = await self.call("GET", "lifecycle", subscription_path, kari)
        return Summary(order["order_number"], final["stage"], buyer, admin, self.feed.seen)


@dataclass
class Summary:
    order_number: str
    final_stage: str
    buyer: str
    admin: str
    events: list[Envelope]

    def print(self, out: Out) -> None:
        out.line()
        out.line(out.paint("1", "== Summary"))
        out.line(f"   order:     {self.order_number}")
        for e in self.events:
            if e.event_type == "InvoiceIssued":
                p = e.payload
                out.line(
                    f"   invoice:   {p['invoice_number']} ({p['purpose']}) "
                    f"{money(p['currency'], p['gross_total'])} incl. VAT "
                    f"{money(p['currency'], p['vat_total'])}, issued {local_short(p['issued_at'])}"
                )
        stages = ["active"] + [
            e.payload["to_stage"] for e in self.events if e.event_type == "StageChanged"
        ]
        out.line(f"   stages:    {' -> '.join(stages)} (now {self.final_stage})")
        mails = [e.payload for e in self.events if e.event_type == "EmailSent"]
        per_role = Counter(role for m in mails for role in m["roles"])
        per_person = Counter((m["recipient"], role_names(m["roles"])) for m in mails)
        out.line(
            f"   mails:     {len(mails)} sent; per role: "
            + ", ".join(f"{role.replace('_', ' ')} {n}" for role, n in sorted(per_role.items()))
        )
        for (recipient, roles), n in sorted(per_person.items()):
            out.line(f"              {n:3d} to {recipient} ({roles})")


async def run(services_ready_in: float) -> None:
    out = Out()
    settings = Settings()
    feed = await Feed.open(settings)
    try:
        async with httpx.AsyncClient(timeout=15) as http:
            summary = await Story(http, feed, out).play()
    finally:
        await feed.close()
    summary.print(out)
    out.line()
    out.line(f"   Read every mail in the mail catcher's web UI: {MAIL_UI}")
    out.line(
        f"   The story took {out.elapsed():.1f} s once the services were up "
        f"(starting or checking them took {services_ready_in:.1f} s)."
    )
