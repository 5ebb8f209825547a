"""What one order must cost at least on this stack: the CPU of each unit of work alone.

Not a test. Measures, each in isolation on the running backing stack (`make up`), the CPU
time (this process + the other side: the PostgreSQL backend, the Kafka broker, the HTTP
server process) of the units an order is made of, with the same libraries and settings as
the services (asyncpg, aiokafka with acks=all and idempotence, uvicorn + FastAPI on uvloop
and httptools, an SMTP hand-over of a message whose bytes are ready; for comparison also
one composed by the `email` package first, as notifications did before issue 17):

    .venv/bin/python -m bench.floor [--n 2000]

and prints what an order would cost if it did nothing but the units it must do, for the
counts given (`--http 2 --transactions 20 --statements 60 --produced 12 --consumed 20
--mails 5`, the issue's target of 20 commits, the records and mails an order has today):
the floor under the figures of `bench/e2e.py` for this machine and these libraries. The
last line: `floor <ms> ms CPU/order`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.e2e import _listener_pid, _ticks
from tests.support import create_database, drop_database, find_backing, free_port, unique

TICK = os.sysconf("SC_CLK_TCK")


def say(line: str) -> None:
    print(f"[floor] {line}", file=sys.stderr, flush=True)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(n: int, work: Callable[[], Awaitable[None]], *others: int) -> tuple[float, float]:
    """(this process, the other processes) CPU ms per unit over ``n`` units of ``work``."""
    mine, theirs = own_cpu(), sum(_ticks(pid) for pid in others)
    await work()
    mine_ms = (own_cpu() - mine) * 1000 / n
    theirs_ms = (sum(_ticks(pid) for pid in others) - theirs) * 1000 / TICK / n
    return mine_ms, theirs_ms


async def postgres(dsn: str, n: int) -> dict[str, tuple[float, float]]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS floor (id uuid PRIMARY KEY, body jsonb)")
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))

        async def statements() -> None:
            for _ in range(n):
                await conn.fetchval("SELECT 1")

        async def transactions() -> None:
            for _ in range(n):
                async with conn.transaction():
                    await conn.execute("INSERT INTO floor VALUES ($1, '{}'::jsonb)", uuid.uuid4())

        return {
            "PostgreSQL statement (a round trip)": await measure(n, statements, backend),
            "PostgreSQL write transaction (BEGIN, INSERT, COMMIT)": await measure(
                n, transactions, backend
            ),
        }
    finally:
        await conn.close()


async def kafka(bootstrap: str, n: int) -> dict[str, tuple[float, float]]:
    broker = _listener_pid(int(bootstrap.split(",")[0].rpartition(":")[2]))
    others = (broker,) if broker else ()
    topic = unique("floor-")
    body = b'{"event_type":"OrderPlaced","payload":{' + b'"x":"' + b"y" * 600 + b'"}}'
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5
    )
    await producer.start()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        await producer.send_and_wait(topic, b"warm-up")

        async def produce() -> None:
            # as the outbox relay does: a batch of records, then wait for all of them
            for start in range(0, n, 20):
                sent = [
                    await producer.send(topic, body, key=str(i % 7).encode())
                    for i in range(start, min(n, start + 20))
                ]
                await asyncio.gather(*sent)

        produced = await measure(n, produce, *others)
        await consumer.start()

        async def consume() -> None:
            seen = 0
            while seen < n:
                batches = await consumer.getmany(timeout_ms=1000, max_records=100)
                seen += sum(len(records) for records in batches.values())
            await consumer.commit()

        consumed = await measure(n, consume, *others)
        return {
            "Kafka record produced (acks=all, batches of 20)": produced,
            "Kafka record consumed (batches, one offset commit)": consumed,
        }
    finally:
        await producer.stop()
        await consumer.stop()


HTTP_APP = textwrap.dedent(
    """
    import sys, uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel

    class Order(BaseModel):
        offering: str
        term: str
        seats: int

    app = FastAPI()

    @app.post("/orders", status_code=201)
    async def place(order: Order) -> dict[str, object]:
        return {"offering": order.offering, "seats": order.seats}

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


async def http(n: int) -> dict[str, tuple[float, float]]:
    port = free_port()
    server = await asyncio.create_subprocess_exec(sys.executable, "-c", HTTP_APP, str(port))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    await client.get("/docs")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)  # the server is starting: poll until it answers

            async def requests() -> None:
                for _ in range(n):
                    answer = await client.post(
                        "/orders", json={"offering": "revit", "term": "annual", "seats": 2}
                    )
                    answer.raise_for_status()

            return {
                "HTTP POST with a JSON body (client; server)": await measure(
                    n, requests, server.pid
                )
            }
    finally:
        server.terminate()
        await server.wait()


SINK = textwrap.dedent(
    """
    import asyncio, sys
    from bench.e2e import Sink
    async def main():
        server = await asyncio.start_server(Sink().serve, "127.0.0.1", int(sys.argv[1]))
        async with server:
            await server.serve_forever()
    asyncio.run(main())
    """
)


async def smtp(n: int) -> dict[str, tuple[float, float]]:
    import aiosmtplib

    port = free_port()
    sink = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SINK, str(port), cwd=Path.cwd()
    )
    try:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        deadline = time.monotonic() + 30
        while True:
            try:
                await client.connect()
                break
            except (aiosmtplib.SMTPConnectError, OSError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)  # the sink is starting: poll until it answers

        def composed(i: int) -> EmailMessage:
            message = EmailMessage()
            message["From"] = "Platform <billing@example.com>"
            message["To"] = f"buyer-{i}@example.com"
            message["Subject"] = f"Ordrebekreftelse ORD-{i:06d}"
            message.set_content("Takk for bestillingen.\n" * 20)
            message.add_alternative("<p>Takk for bestillingen.</p>" * 20, subtype="html")
            return message

        ready = bytes(composed(0))

        async def handed_over() -> None:
            for i in range(n):
                await client.sendmail("billing@example.com", [f"buyer-{i}@example.com"], ready)

        async def with_the_email_package() -> None:
            for i in range(n):
                await client.send_message(composed(i))

        try:
            return {
                "Mail handed over (SMTP, one connection, bytes ready)": await measure(
                    n, handed_over, sink.pid
                ),
                "Mail composed by the email package and handed over": await measure(
                    n, with_the_email_package, sink.pid
                ),
            }
        finally:
            await client.quit()
    finally:
        sink.terminate()
        await sink.wait()


async def run(args: argparse.Namespace) -> str:
    backing, stop = find_backing()
    name = unique("bench_floor_")
    dsn = await create_database(backing.postgres_dsn, name)
    costs: dict[str, tuple[float, float]] = {}
    try:
        say(f"PostgreSQL ({urlsplit(dsn).netloc.rpartition('@')[2]}), {args.n} of each")
        costs |= await postgres(dsn, args.n)
        say(f"Kafka ({backing.kafka})")
        costs |= await kafka(backing.kafka, args.n)
        say("HTTP (uvicorn + FastAPI in a process of its own)")
        costs |= await http(args.n)
        say("SMTP (the benchmark's sink in a process of its own)")
        costs |= await smtp(args.n // 2)
    finally:
        await drop_database(backing.postgres_dsn, name)
        stop()
    print(f"CPU ms per unit, on {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.2f}):")
    print(f"  {'unit':56s} {'here':>7s} {'other side':>10s} {'total':>7s}")
    for unit, (mine, theirs) in costs.items():
        print(f"  {unit:56s} {mine:7.3f} {theirs:10.3f} {mine + theirs:7.3f}")
    counts = {
        "HTTP POST with a JSON body (client; server)": args.http,
        "PostgreSQL write transaction (BEGIN, INSERT, COMMIT)": args.transactions,
        "PostgreSQL statement (a round trip)": args.statements,
        "Kafka record produced (acks=all, batches of 20)": args.produced,
        "Kafka record consumed (batches, one offset commit)": args.consumed,
        "Mail handed over (SMTP, one connection, bytes ready)": args.mails,
    }
    print("An order made of nothing but these units:")
    total = 0.0
    for unit, count in counts.items():
        mine, theirs = costs[unit]
        # the client side of an HTTP request is the load generator's, not the platform's
        each = theirs if unit.startswith("HTTP") else mine + theirs
        total += count * each
        print(f"  {count:4d} x {unit:56s} {count * each:7.2f} ms")
    return f"floor {total:.1f} ms CPU/order"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="units of each kind to time")
    parser.add_argument("--http", type=int, default=2)
    parser.add_argument("--transactions", type=int, default=20)
    parser.add_argument("--statements", type=int, default=60)
    parser.add_argument("--produced", type=int, default=12)
    parser.add_argument("--consumed", type=int, default=20)
    parser.add_argument("--mails", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency; measured on asyncio's loop then
        print(asyncio.run(run(args)), flush=True)
    else:
        print(uvloop.run(run(args)), flush=True)


if __name__ == "__main__":
    main()
