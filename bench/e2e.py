"""End-to-end benchmark (not a test): N sign-ups + orders through HTTP, until each is done.

    .venv/bin/python -m bench.e2e --orders 500 [--concurrency 16 | --rate 50]

Needs the backing stack (Kafka, PostgreSQL) up: the addresses come from the environment
(``KAFKA_BOOTSTRAP_SERVERS``, ``POSTGRES_DSN``) or the local stack (``deploy/local/stack``).
It starts the four services itself as their own processes (fresh databases, a fresh topic
prefix, production poll intervals) and its own SMTP sink (an asyncio SMTP server in this
process that accepts and discards), so the mail catcher is never the limit.

Done for an order: its confirmation ("Order confirmation <number>"), its payment receipt (the
invoice is paid) and its product-access mail (the subscription is active) have been handed to
the sink; checked once more against the databases at the end. See bench/README.md for what
each figure means. The last line reads
``e2e <completed orders/s> orders/s, <CPU ms> ms CPU/order, <commits> commits/order``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.topics import Topics
from tests.support import (
    Deployment,
    ServiceProcess,
    create_database,
    deployment,
    drop_database,
    find_backing,
    free_port,
)

SERVICES = ("ordering", "invoicing", "lifecycle", "notifications")
TICK = os.sysconf("SC_CLK_TCK")
DONE_KINDS = frozenset({"confirmation", "receipt", "access"})


def say(line: str) -> None:
    print(f"[e2e] {line}", file=sys.stderr, flush=True)


# --- the SMTP sink ------------------------------------------------------------------------


@dataclass
class Sink:
    """An SMTP server that accepts everything and keeps, per recipient, when each kind of mail
    arrived (first copy) and the order numbers of the confirmations."""

    messages: int = 0
    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    order_numbers: dict[str, str] = field(default_factory=dict)
    message_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, recipients: list[str], data: bytes) -> None:
        now = time.monotonic()
        self.messages += 1
        head = data.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
        subject = _header(head, "Subject")
        message_id = _header(head, "Message-ID")
        if message_id:
            if message_id in self.message_ids:
                self.duplicates += 1
            self.message_ids.add(message_id)
        kind = _kind(subject)
        if kind is None:
            return
        for rcpt in recipients:
            kinds = self.seen.setdefault(rcpt, {})
            kinds.setdefault(kind, now)
            if kind == "confirmation":
                self.order_numbers[rcpt] = subject.rsplit(" ", 1)[-1]
        self.changed.set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def reply(line: bytes) -> None:
            writer.write(line + b"\r\n")

        reply(b"220 bench sink")
        recipients: list[str] = []
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250-bench\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    recipients = []
                    reply(b"250 ok")
                elif verb == b"RCPT":
                    address = line.split(b":", 1)[1].strip().strip(b"<>").split(b">")[0]
                    recipients.append(address.decode("ascii", "replace").lower())
                    reply(b"250 ok")
                elif verb == b"DATA":
                    reply(b"354 go on")
                    await writer.drain()
                    data = await reader.readuntil(b"\r\n.\r\n")
                    self.record(recipients, data)
                    recipients = []
                    reply(b"250 queued")
                elif verb == b"QUIT":
                    reply(b"221 bye")
                    break
                else:  # RSET, NOOP and anything else
                    recipients = [] if verb == b"RSET" else recipients
                    reply(b"250 ok")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _header(head: str, name: str) -> str:
    found = re.search(rf"^{name}:[ \t]*(.*(?:\r\n[ \t].*)*)", head, re.MULTILINE | re.IGNORECASE)
    return re.sub(r"\r\n[ \t]+", " ", found.group(1)).strip() if found else ""


def _kind(subject: str) -> str | None:
    if subject.startswith("Order confirmation "):
        return "confirmation"
    if subject.startswith("Receipt for invoice "):
        return "receipt"
    if subject.endswith(" is ready: download and activate"):
        return "access"
    return None


# --- CPU by process -----------------------------------------------------------------------


def _ticks(pid: int, children: bool = False) -> int:
    """utime + stime (+ reaped children's when asked) of a process, in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    rest = stat.rsplit(")", 1)[1].split()
    own = int(rest[11]) + int(rest[12])
    return own + (int(rest[13]) + int(rest[14]) if children else 0)


def _listener_pid(port: int) -> int | None:
    """The process listening on this local TCP port (to find Kafka's broker)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cols = row.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


def _ms(ticks: int) -> float:
    return ticks * 1000 / TICK


# --- the platform --------------------------------------------------------------------------


@dataclass
class Platform:
    dep: Deployment
    processes: dict[str, list[ServiceProcess]]
    sink: Sink
    server_dsn: str

    def url(self, service: str, n: int = 0) -> str:
        group = self.processes[service]
        return f"http://127.0.0.1:{group[n % len(group)].port}"


async def backends(server_dsn: str, databases: Iterable[str]) -> dict[int, str]:
    """PostgreSQL backend pid -> database, for the services' databases."""
    conn = await asyncpg.connect(server_dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid, datname FROM pg_stat_activity WHERE datname = ANY($1::text[])",
            list(databases),
        )
        return {int(r["pid"]): str(r["datname"]) for r in rows}
    finally:
        await conn.close()


async def commits(server_dsn: str, databases: Iterable[str]) -> dict[str, int]:
    conn = await asyncpg.connect(server_dsn)
    try:
        rows = await conn.fetch(
            "SELECT datname, xact_commit FROM pg_stat_database WHERE datname = ANY($1::text[])",
            list(databases),
        )
        return {str(r["datname"]): int(r["xact_commit"]) for r in rows}
    finally:
        await conn.close()


async def settled_commits(server_dsn: str, databases: Iterable[str]) -> dict[str, int]:
    """Commit counts once the stopped services' backends have reported theirs (at exit)."""
    last = await commits(server_dsn, databases)
    for _ in range(20):
        await asyncio.sleep(0.5)  # statistics arrive asynchronously; read until they settle
        now = await commits(server_dsn, databases)
        if now == last:
            return now
        last = now
    return last


async def end_offsets(kafka: str, prefix: str) -> dict[str, int]:
    """Records in each of the run's topics (end offsets summed over partitions)."""
    from aiokafka.admin import AIOKafkaAdminClient

    topics = Topics(prefix)
    names = [*topics.all_topics(), topics.test_clocks()]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    parts = [
        TopicPartition(d["topic"], p["partition"])
        for d in described
        if not d.get("error_code")
        for p in d["partitions"]
    ]
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(parts) if parts else {}
    finally:
        await consumer.stop()
    totals: dict[str, int] = {}
    for tp, offset in ends.items():
        totals[tp.topic] = totals.get(tp.topic, 0) + offset
    return totals


async def group_offsets(kafka: str) -> dict[TopicPartition, int]:
    """End offsets of the broker's ``__consumer_offsets`` partitions (where groups commit)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        described = await admin.describe_topics(["__consumer_offsets"])
    finally:
        await admin.close()
    parts = [
        TopicPartition(d["topic"], p["partition"])
        for d in described
        if not d.get("error_code")
        for p in d["partitions"]
    ]
    if not parts:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, exclude_internal_topics=False)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()


def _offset_commit_key(key: bytes | None) -> tuple[str, str, int] | None:
    """(group, topic, partition) of an offset-commit record's key (key versions 0 and 1);
    None for the group-metadata records kept in the same topic."""
    if not key or len(key) < 2:
        return None
    version = int.from_bytes(key[:2], "big")
    if version > 1:
        return None
    at = 2
    fields: list[str] = []
    for _ in range(2):
        size = int.from_bytes(key[at : at + 2], "big")
        fields.append(key[at + 2 : at + 2 + size].decode(errors="replace"))
        at += 2 + size
    return fields[0], fields[1], int.from_bytes(key[at : at + 4], "big")


async def offset_commits(
    kafka: str, prefix: str, start: dict[TopicPartition, int], end: dict[TopicPartition, int]
) -> dict[str, tuple[int, int]]:
    """Offset commits of the run's consumer groups between two ``group_offsets`` readings:
    group -> (commit requests, partition offsets written). One request commits every partition
    the member holds; requests are told apart by (group, record timestamp)."""
    wanted = {tp: end[tp] for tp in end if end[tp] > start.get(tp, 0)}
    if not wanted:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka, enable_auto_commit=False, exclude_internal_topics=False
    )
    await consumer.start()
    requests: dict[str, set[int]] = {}
    written: dict[str, int] = {}
    try:
        consumer.assign(list(wanted))
        for tp in wanted:
            consumer.seek(tp, start.get(tp, 0))
        while [tp for tp, stop in wanted.items() if await consumer.position(tp) < stop]:
            batches = await consumer.getmany(timeout_ms=1000)
            if not batches:
                break
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= wanted[tp] or record.value is None:
                        continue
                    parsed = _offset_commit_key(record.key)
                    if parsed is None or not parsed[0].startswith(prefix):
                        continue
                    group = parsed[0].removeprefix(prefix)
                    requests.setdefault(group, set()).add(record.timestamp)
                    written[group] = written.get(group, 0) + 1
    finally:
        await consumer.stop()
    return {group: (len(requests[group]), written[group]) for group in sorted(requests)}


# --- the load ------------------------------------------------------------------------------


@dataclass
class Order:
    n: int
    email: str
    started: float = 0.0
    accepted: float = 0.0
    account: str = ""
    order: str = ""


async def post(client: httpx.AsyncClient, url: str, **request: Any) -> dict[str, Any]:
    for attempt in range(20):
        try:
            response = await client.post(url, **request)
        except httpx.TransportError:
            await asyncio.sleep(0.05 * (attempt + 1))
            continue
        if response.status_code == 201:
            return dict(response.json())
        if response.status_code < 500 and response.status_code != 429:
            raise RuntimeError(f"POST {url}: {response.status_code} {response.text[:300]}")
        await asyncio.sleep(0.05 * (attempt + 1))  # same Idempotency-Key: a safe repeat
    raise RuntimeError(f"POST {url}: no answer after 20 attempts")


async def buy(client: httpx.AsyncClient, platform: Platform, order: Order, run: str) -> None:
    base = platform.url("ordering", order.n)
    order.started = time.monotonic()
    account = await post(
        client,
        f"{base}/v1/accounts",
        headers={"Idempotency-Key": f"{run}-a-{order.n}"},
        json={
            "name": f"Bench {order.n} AS",
            "country": "NO",
            "currency": "NOK",
            "language": "en",
            "time_zone": "Europe/Oslo",
            "buyer": {"email": order.email, "name": f"Buyer {order.n}"},
        },
    )
    order.account = account["id"]
    placed = await post(
        client,
        f"{base}/v1/accounts/{order.account}/orders",
        headers={
            "Authorization": f"Bearer {account['token']}",
            "Idempotency-Key": f"{run}-o-{order.n}",
        },
        json={"offering": "revit", "term": "annual", "seats": 1, "payment_method": "card"},
    )
    order.order = placed["id"]
    order.accepted = time.monotonic()


async def drive(
    platform: Platform, orders: list[Order], run: str, concurrency: int, rate: float | None
) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        if rate is None:
            queue = iter(orders)

            async def worker() -> None:
                for order in queue:
                    await buy(client, platform, order, run)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return
        gate = asyncio.Semaphore(concurrency)
        start = time.monotonic()

        async def one(order: Order) -> None:
            async with gate:
                await buy(client, platform, order, run)

        tasks = []
        for index, order in enumerate(orders):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the open-loop schedule, not a synchronisation
            tasks.append(asyncio.create_task(one(order)))
        await asyncio.gather(*tasks)


def done_at(sink: Sink, order: Order) -> float | None:
    kinds = sink.seen.get(order.email)
    if kinds is None or not DONE_KINDS <= kinds.keys():
        return None
    return max(kinds.values())


async def progress(platform: Platform, orders: list[Order], finished: asyncio.Event) -> None:
    start = time.monotonic()
    while not finished.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), 2.0)
        accepted = sum(1 for o in orders if o.accepted)
        done = sum(1 for o in orders if done_at(platform.sink, o) is not None)
        say(
            f"{time.monotonic() - start:6.1f} s: accepted {accepted}/{len(orders)}, "
            f"done {done}, mails {platform.sink.messages}"
        )


async def all_done(sink: Sink, orders: list[Order], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(o.accepted and done_at(sink, o) is not None for o in orders):
        left = deadline - time.monotonic()
        if left <= 0:
            missing = sum(1 for o in orders if done_at(sink, o) is None)
            raise TimeoutError(f"{missing} orders not done after {timeout:.0f} s")
        sink.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sink.changed.wait(), min(left, 1.0))


async def verify(platform: Platform, orders: list[Order]) -> None:
    """Every order: one invoice, paid; one subscription, active; one confirmation sent."""
    dbs = platform.dep.databases
    accounts = [uuid.UUID(o.account) for o in orders]
    order_ids = [uuid.UUID(o.order) for o in orders]
    checks = {
        "invoicing": (
            "SELECT count(*) FROM invoices WHERE order_id = ANY($1) AND status = 'paid'",
            order_ids,
        ),
        "lifecycle": (
            "SELECT count(*) FROM subscriptions WHERE account_id = ANY($1) AND stage = 'active'",
            accounts,
        ),
        "notifications": (
            """SELECT count(*) FROM deliveries WHERE account_id = ANY($1)
               AND template = 'order_confirmation' AND status = 'sent'""",
            accounts,
        ),
    }
    for service, (sql, ids) in checks.items():
        conn = await asyncpg.connect(dbs[service])
        try:
            found = int(await conn.fetchval(sql, ids))
        finally:
            await conn.close()
        if found != len(orders):
            raise AssertionError(f"{service}: {found} of {len(orders)} orders done")


# --- pgbench -------------------------------------------------------------------------------


def _pgbench_binary() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True):
        return str(candidate)
    return None


async def pgbench(server_dsn: str, seconds: int) -> float | None:
    """Commits per second of 8 clients, one INSERT a transaction, in a database of its own."""
    binary = _pgbench_binary()
    if binary is None:
        say("pgbench not found: no PostgreSQL bound")
        return None
    name = f"bench_pgbench_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(server_dsn, name)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v int, at timestamptz)")
        finally:
            await conn.close()
        parts = urlsplit(dsn)
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
            script.write("INSERT INTO t (v, at) VALUES (:client_id, now());\n")
        env = {**os.environ, "PGPASSWORD": parts.password or ""}
        args = [
            binary,
            "-n",
            "-c",
            "8",
            "-j",
            "2",
            "-T",
            str(seconds),
            "-f",
            script.name,
            "-h",
            parts.hostname or "127.0.0.1",
            "-p",
            str(parts.port or 5432),
            "-U",
            parts.username or "postgres",
            name,
        ]
        done = await asyncio.to_thread(
            subprocess.run, args, env=env, capture_output=True, text=True, timeout=seconds + 60
        )
        os.unlink(script.name)
        found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
        if done.returncode != 0 or not found:
            say(f"pgbench failed: {done.stderr[-500:]}")
            return None
        return float(found.group(1))
    finally:
        await drop_database(server_dsn, name)


# --- the run -------------------------------------------------------------------------------


@dataclass
class Snapshot:
    cpu: dict[str, int]  # process group -> ticks
    commits: dict[str, int]  # database -> xact_commit
    offsets: dict[str, int]  # topic -> records
    rusage: float  # this process (load generator and sink), seconds


async def snapshot(
    platform: Platform, pg_backends: dict[int, str], shared_pids: dict[str, int]
) -> Snapshot:
    cpu: dict[str, int] = {}
    for service, group in platform.processes.items():
        cpu[service] = sum(_ticks(p.process.pid) for p in group if p.process)
    names = {name.rpartition("/")[2]: s for s, name in platform.dep.databases.items()}
    for pid, database in pg_backends.items():
        key = f"postgres ({names[database]})"
        cpu[key] = cpu.get(key, 0) + _ticks(pid)
    for label, pid in shared_pids.items():
        cpu[label] = _ticks(pid, children=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return Snapshot(
        cpu=cpu,
        commits=await commits(platform.server_dsn, names),
        offsets=await end_offsets(platform.dep.backing.kafka, platform.dep.prefix),
        rusage=usage.ru_utime + usage.ru_stime,
    )


def start_profilers(platform: Platform, directory: str | None) -> list[subprocess.Popen[bytes]]:
    """py-spy on every service process while the load runs (collapsed stacks, one file each)."""
    if not directory:
        return []
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    Path(directory).mkdir(parents=True, exist_ok=True)
    started = []
    for service, group in platform.processes.items():
        for index, p in enumerate(group):
            if p.process is None:
                continue
            out = Path(directory) / f"{service}-{index}.txt"
            started.append(
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--idle",
                        "--format",
                        "raw",
                        "--rate",
                        "200",
                        "-p",
                        str(p.process.pid),
                        "-o",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    say(f"profiling into {directory}")
    return started


def stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
    for spy in profilers:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    for spy in profilers:
        spy.wait(60)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def run(args: argparse.Namespace) -> str:
    backing, release = find_backing()
    sink = Sink()
    server = await asyncio.start_server(sink.serve, "127.0.0.1", 0)
    sink_port = server.sockets[0].getsockname()[1]
    backing = replace(backing, smtp_url=f"smtp://127.0.0.1:{sink_port}")
    log_dir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    run_id = uuid.uuid4().hex[:8]
    try:
        async with deployment(backing, SERVICES) as dep:
            dep.extra_env.update(
                {  # production's intervals, not the tests' quick ones
                    "PLATFORM_OUTBOX_POLL_SECONDS": "1.0",
                    "PLATFORM_DELIVERY_POLL_SECONDS": "1.0",
                    "PLATFORM_CONSUMER_BACKOFF_SECONDS": "0.2",
                    "PLATFORM_LOG_LEVEL": "WARNING",
                    **dict(kv.split("=", 1) for kv in args.env),
                }
            )
            processes = {
                s: [ServiceProcess(dep, s, log_dir)]
                + [ServiceProcess(dep, s, log_dir, free_port()) for _ in range(args.replicas - 1)]
                for s in SERVICES
            }
            platform = Platform(dep, processes, sink, backing.postgres_dsn)
            everything = [p for group in processes.values() for p in group]
            say(f"starting {len(everything)} service processes (logs in {log_dir})")
            for p in everything:
                p.start()
            try:
                await asyncio.gather(*(p.wait_ready(timeout=120) for p in everything))
                return await measure(args, platform, run_id)
            finally:
                for p in everything:
                    p.stop()
    finally:
        server.close()
        release()


async def warm_up(platform: Platform, run_id: str) -> None:
    """A few orders through every path first (imports, pools, topics, consumer groups)."""
    warm = [Order(n=-1 - i, email=f"warm-{run_id}-{i}@example.com") for i in range(4)]
    await drive(platform, warm, f"{run_id}w", 4, None)
    await all_done(platform.sink, warm, 120)


async def measure(args: argparse.Namespace, platform: Platform, run_id: str) -> str:
    backing = platform.dep.backing
    shared_pids = {}
    for label, address in (
        ("kafka (shared)", backing.kafka.split(",")[0]),
        (
            "postgres, exited backends (shared)",
            urlsplit(backing.postgres_dsn).netloc.rpartition("@")[2],
        ),
    ):
        pid = _listener_pid(int(address.rpartition(":")[2]))
        if pid is not None:
            shared_pids[label] = pid
    say("warming up (4 orders)")
    await warm_up(platform, run_id)
    pg_backends = await backends(
        platform.server_dsn, [d.rpartition("/")[2] for d in platform.dep.databases.values()]
    )
    orders = [Order(n=n, email=f"bench-{run_id}-{n}@example.com") for n in range(args.orders)]
    mode = f"rate {args.rate}/s" if args.rate else f"concurrency {args.concurrency}"
    say(f"{args.orders} orders, {mode}; load average {os.getloadavg()[0]:.2f}")
    profilers = start_profilers(platform, args.profile)
    group_offsets_before = await group_offsets(backing.kafka)
    before = await snapshot(platform, pg_backends, shared_pids)
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    finished = asyncio.Event()
    reporter = asyncio.create_task(progress(platform, orders, finished))
    try:
        await drive(platform, orders, run_id, args.concurrency, args.rate)
        accepted_s = max(o.accepted for o in orders) - start
        await all_done(platform.sink, orders, args.timeout)
    finally:
        finished.set()
        await reporter
    completed_s = max(done_at(platform.sink, o) or 0.0 for o in orders) - start
    load_after = os.getloadavg()[0]
    stop_profilers(profilers)
    # CPU now; then stop the services so their backends flush their statistics (PostgreSQL
    # sends a backend's counts at most once a second, and at exit) before commits are read.
    after_cpu = await snapshot(platform, pg_backends, shared_pids)
    group_offsets_after = await group_offsets(backing.kafka)
    await verify(platform, orders)
    for group in platform.processes.values():
        for p in group:
            p.stop()
    after_commits = await settled_commits(platform.server_dsn, before.commits)
    tps = await pgbench(platform.server_dsn, args.pgbench_seconds) if args.pgbench_seconds else None

    n = len(orders)
    latencies = [(done_at(platform.sink, o) or 0.0) - o.started for o in orders]
    confirm = [platform.sink.seen[o.email]["confirmation"] - o.started for o in orders]
    lines = [
        f"orders: {n} ({mode}), {args.replicas} process(es) per service, "
        f"load average {load_before:.2f} -> {load_after:.2f} on {os.cpu_count()} CPUs",
        *(
            [
                "note: the machine was busy before the load (load average above half the CPUs): "
                "orders/s and latencies are not comparable with other runs; compare CPU ms/order "
                "and commits/order (bench/README.md, 'A shared machine')"
            ]
            if load_before > (os.cpu_count() or 1) / 2
            else []
        ),
        f"accepted: {n / accepted_s:.1f} orders/s ({accepted_s:.1f} s)",
        f"completed: {n / completed_s:.1f} orders/s ({completed_s:.1f} s)",
        "order -> confirmation handed to SMTP: "
        + ", ".join(f"p{q} {percentile(confirm, q) * 1000:.0f} ms" for q in (50, 95, 99)),
        "order -> done (paid, active, all three mails): "
        + ", ".join(f"p{q} {percentile(latencies, q) * 1000:.0f} ms" for q in (50, 95, 99))
        + f", mean {statistics.fmean(latencies) * 1000:.0f} ms",
        f"mails: {platform.sink.messages} ({platform.sink.messages / n:.2f}/order incl. warm-up), "
        f"repeated Message-IDs {platform.sink.duplicates}",
        "CPU ms per order by process:",
    ]
    ours = 0.0
    for key in after_cpu.cpu:
        ms = _ms(after_cpu.cpu[key] - before.cpu.get(key, 0)) / n
        if "shared" not in key:
            ours += ms
        lines.append(f"  {key:36s} {ms:8.2f}")
    bench_ms = (after_cpu.rusage - before.rusage) * 1000 / n
    lines.append(f"  {'bench (load generator + sink)':36s} {bench_ms:8.2f}")
    lines.append(f"  {'services + their backends':36s} {ours:8.2f}")
    lines.append("commits per order by database:")
    total_commits = 0.0
    names = {name.rpartition("/")[2]: s for s, name in platform.dep.databases.items()}
    for database, value in after_commits.items():
        mine = 1 if names[database] != "ordering" else 0  # verify()'s query
        delta = (value - before.commits[database] - mine) / n
        total_commits += delta
        lines.append(f"  {names[database]:36s} {delta:8.2f}")
    lines.append(f"  {'all':36s} {total_commits:8.2f}")
    lines.append("Kafka records per order by topic:")
    total_records = 0.0
    for topic, value in sorted(after_cpu.offsets.items()):
        delta = (value - before.offsets.get(topic, 0)) / n
        total_records += delta
        if delta:
            lines.append(f"  {topic.removeprefix(platform.dep.prefix):36s} {delta:8.2f}")
    lines.append(f"  {'all':36s} {total_records:8.2f}")
    lines.append("Kafka offset commits per order by consumer group (requests / partition offsets):")
    commits_by_group = await offset_commits(
        backing.kafka, platform.dep.prefix, group_offsets_before, group_offsets_after
    )
    all_requests = sum(r for r, _ in commits_by_group.values()) / n
    all_written = sum(w for _, w in commits_by_group.values()) / n
    for consumer_group, (requests, written) in commits_by_group.items():
        lines.append(f"  {consumer_group:36s} {requests / n:8.2f} / {written / n:.2f}")
    lines.append(f"  {'all':36s} {all_requests:8.2f} / {all_written:.2f}")
    orders_s = n / completed_s
    if tps is not None:
        bound = tps / total_commits
        lines.append(
            f"pgbench (8 clients, one INSERT a transaction, {args.pgbench_seconds} s): "
            f"{tps:.0f} commits/s -> at {total_commits:.1f} commits/order a bound of "
            f"{bound:.0f} orders/s; we reach {100 * orders_s / bound:.1f} % of it"
        )
    for line in lines:
        print(line, flush=True)
    return (
        f"e2e {orders_s:.1f} orders/s, {ours:.1f} ms CPU/order, {total_commits:.1f} commits/order"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200)
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int, default=16, help="orders in flight (closed loop)")
    load.add_argument("--rate", type=float, help="orders started per second (open loop)")
    parser.add_argument("--replicas", type=int, default=1, help="processes per service")
    parser.add_argument("--pgbench-seconds", type=int, default=10, help="0: no pgbench")
    parser.add_argument("--profile", help="a directory: py-spy every service during the load")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for done")
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=value for every service (repeatable)"
    )
    args = parser.parse_args(argv)
    if args.rate is not None:
        args.concurrency = max(args.concurrency, 256)
    print(asyncio.run(run(args)), flush=True)


if __name__ == "__main__":
    main()
