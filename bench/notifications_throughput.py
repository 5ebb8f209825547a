"""Benchmark (not a test): mails per second from a backlog of 10,000 events to a mail catcher.

    KAFKA_BOOTSTRAP_SERVERS=... POSTGRES_DSN=... \
        .venv/bin/python bench/notifications_throughput.py \
        [--events 10000] [--accounts 100] [--concurrency 8] [--batch 50]

Uses its own maildev on free ports (never the shared one) and its own database and topics.
Two phases, so each limit shows on its own:

1. consume: the backlog of ``OrderPlaced`` events (plus each account's opening) is in Kafka
   before the service starts; the service (delivery workers off) routes, renders and queues one
   mail per event: events per second.
2. deliver: the service starts with its delivery workers on the queued backlog: mails per
   second accepted by the catcher (each one: lease, MAIL/RCPT, hand-over commit, DATA,
   sent + EmailSent commit).

Then it reads the catcher back to check every address got its mail once, and times the parts
of one mail (rendering, a commit, an SMTP transaction) to say what limits the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.notifications import domain
from services.notifications.mailer import SmtpSender, wire_mail
from shared.config import Settings
from shared.contracts import RolesChanged
from shared.runtime import create_app, load_spec
from shared.signed_links import DocumentLinks
from shared.topics import Topics
from tests.integration.notifications_support import (
    OwnMaildev,
    envelope,
    opening,
    person,
)
from tests.notifications_samples import order_placed
from tests.support import deployment, find_backing


async def wait_until(probe: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("benchmark did not finish in time")


async def publish_backlog(kafka: str, topics: Topics, events: int, accounts: int) -> int:
    """Returns how many mails the backlog causes."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka, enable_idempotence=True, linger_ms=20, max_batch_size=262144
    )
    await producer.start()
    try:
        ids = [uuid.uuid4() for _ in range(accounts)]
        buyers = {a: f"bench-{a.hex[:12]}@example.com" for a in ids}
        pending = []
        for account in ids:
            roles = RolesChanged(
                buyer=person(buyers[account]), primary_admin=person(buyers[account])
            )
            for env in opening(account, roles):
                pending.append(
                    await producer.send(
                        topics.events(env.producer),
                        value=env.model_dump_json().encode(),
                        key=str(account).encode(),
                    )
                )
        for n in range(events):
            account = ids[n % accounts]
            env = envelope(account, order_placed(f"ORD-B{n:06d}", buyers[account]))
            pending.append(
                await producer.send(
                    topics.events(env.producer),
                    value=env.model_dump_json().encode(),
                    key=str(account).encode(),
                )
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return events + accounts  # one order confirmation per event + one admin mail per account


async def parts(settings: Settings, smtp_url: str, pool: asyncpg.Pool) -> dict[str, float]:
    """Milliseconds of each part of one mail, measured alone."""
    context = domain.personal(
        domain.mail_context(
            order_placed().model_dump(),
            account_name="A",
            offering=None,
            links=DocumentLinks("http://x", b"k" * 32),
            now=datetime.now(UTC),
        ),
        domain.Recipient("a@example.com", "A", "nb", ("buyer",), "order_confirmation"),
    )
    t = time.perf_counter()
    for _ in range(500):
        domain.render("order_confirmation", "nb", context, ZoneInfo("Europe/Oslo"))
    render = (time.perf_counter() - t) / 500 * 1000
    async with pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE bench_commit (n int)")
        t = time.perf_counter()
        for n in range(200):
            await conn.execute("INSERT INTO bench_commit VALUES ($1)", n)
        commit = (time.perf_counter() - t) / 200 * 1000
    host, port = Settings(smtp_url=smtp_url).smtp_host_port
    sender = SmtpSender(host, port)
    message = wire_mail(
        sender="no-reply@example.com",
        recipient="probe@example.com",
        subject="s",
        text="t" * 1500,
        html="<p>h</p>" * 200,
        message_id="<bench@subscription-platform>",
        date=datetime.now(UTC),
    )
    t = time.perf_counter()
    for _ in range(200):
        await sender.begin("no-reply@example.com", "probe@example.com")
        await sender.finish(message)
    smtp = (time.perf_counter() - t) / 200 * 1000
    await sender.close()
    return {"render": render, "commit": commit, "smtp": smtp}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()

    backing, release = find_backing()
    maildev = OwnMaildev(backing, Path(tempfile.mkdtemp(prefix="bench-maildev-")))
    await maildev.start()
    try:
        async with deployment(backing, ("notifications",)) as dep:
            settings = Settings(
                **{
                    **dep.settings("notifications").model_dump(),
                    "smtp_url": maildev.smtp_url,
                    "delivery_concurrency": args.concurrency,
                    "delivery_batch_size": args.batch,
                    "database_pool_size": args.concurrency + 6,
                    "log_level": "WARNING",
                }
            )
            spec = load_spec("notifications")
            topics = Topics(dep.prefix)
            # Topics must exist before the backlog is published: a first start creates them.
            app = create_app(replace(spec, background=[]), settings)
            async with app.router.lifespan_context(app):
                pass
            mails = await publish_backlog(backing.kafka, topics, args.events, args.accounts)
            print(
                f"backlog: {args.events} OrderPlaced for {args.accounts} accounts -> {mails} mails"
            )

            async def queued(pool: asyncpg.Pool) -> bool:
                return bool(await pool.fetchval("SELECT count(*) FROM deliveries") >= mails)

            app = create_app(replace(spec, background=[]), settings)
            t = time.perf_counter()
            async with app.router.lifespan_context(app):
                pool = app.state.runtime.pool
                await wait_until(lambda: queued(pool), 600)
                first, last = await pool.fetchrow(
                    "SELECT min(created_at), max(created_at) FROM deliveries"
                )
            consume = time.perf_counter() - t
            span = (last - first).total_seconds()
            print(
                f"consume: {mails} mails queued in {consume:.1f} s with start-up and group join;"
                f" first to last queued {span:.1f} s = {mails / span:.0f} events/s"
            )

            async def all_sent(pool: asyncpg.Pool) -> bool:
                return bool(
                    await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'")
                    >= mails
                )

            app = create_app(spec, settings)
            t = time.perf_counter()
            async with app.router.lifespan_context(app):
                pool = app.state.runtime.pool
                await wait_until(lambda: all_sent(pool), 600)
                deliver = time.perf_counter() - t
                first, last = await pool.fetchrow(
                    "SELECT min(sent_at), max(sent_at) FROM deliveries"
                )
                span = (last - first).total_seconds()
                print(
                    f"deliver: {mails} mails to maildev in {deliver:.1f} s with start-up; "
                    f"first to last sent {span:.1f} s = {mails / span:.0f} mails/s "
                    f"(concurrency {args.concurrency}, batch {args.batch})"
                )
                states = await pool.fetch("SELECT status, count(*) FROM deliveries GROUP BY 1")
                print("deliveries:", {r["status"]: r["count"] for r in states})
                async with httpx.AsyncClient(timeout=300) as client:
                    caught = (await client.get(f"{maildev.catcher.base}/email")).json()
                per_address: dict[str, int] = {}
                for mail in caught:
                    for to in mail.get("to") or []:
                        per_address[to["address"]] = per_address.get(to["address"], 0) + 1
                expected = args.events // args.accounts + 1
                print(
                    f"caught: {len(caught)} mails, {len(per_address)} addresses, per address "
                    f"min {min(per_address.values())} max {max(per_address.values())} "
                    f"(expected about {expected} each)"
                )
                measured = [await parts(settings, maildev.smtp_url, pool) for _ in range(1)]
            part = {k: statistics.mean(m[k] for m in measured) for k in measured[0]}
            print(
                f"one mail alone: render {part['render']:.2f} ms, one commit "
                f"{part['commit']:.2f} ms (two per mail), SMTP transaction on a reused "
                f"connection {part['smtp']:.2f} ms"
            )
    finally:
        await maildev.stop()
        release()


if __name__ == "__main__":
    asyncio.run(main())
