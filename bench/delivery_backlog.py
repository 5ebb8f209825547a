"""Benchmark (not a test): notifications alone handing a backlog of queued mails to a fast sink.

    .venv/bin/python -m bench.delivery_backlog [--mails 5000] [--env PLATFORM_X=y ...]

Starts notifications as its own process (fresh database and topics, production poll
intervals) against the SMTP sink of ``bench/e2e.py`` (in this process: accepts and discards,
so it is never the limit), queues ``--mails`` mails in one transaction (rows as the handlers
write them, about 4 KB of body each, one account per 10 mails) and wakes the workers, then
waits until every one is recorded ``sent``. Prints mails/s (first mail to the last handed to
the sink, and to the last recorded), CPU ms per mail of the process and of its PostgreSQL
backends, commits per mail. The issue's goal for this figure: 1,000 mails/s.

The last line reads ``delivery <mails/s> mails/s, <CPU ms> ms CPU/mail, <commits> commits/mail``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import asyncpg

from bench.e2e import Sink, _ms, _ticks, backends, commits, say, settled_commits
from tests.support import ServiceProcess, deployment, find_backing, wait_for

QUEUE = """
WITH m AS (SELECT n, gen_random_uuid() AS id FROM generate_series(1, $1) AS n),
     a AS (SELECT k, gen_random_uuid() AS account_id FROM generate_series(0, $1 / 10) AS k)
INSERT INTO deliveries (id, event_id, event_type, account_id, recipient, roles, template,
                        language, subject, body_text, body_html, next_attempt_at, created_at,
                        message_id)
SELECT m.id, gen_random_uuid(), 'OrderPlaced', a.account_id,
       'buyer-' || m.n || '@bench.example', ARRAY['buyer'], 'order_confirmation', 'en',
       'Order confirmation ORD-' || m.n, $2, $3, now(), now(),
       '<' || m.id || '@subscription-platform>'
FROM m JOIN a ON a.k = m.n / 10
"""


async def measure(args: argparse.Namespace) -> str:
    backing, release = find_backing()
    sink = Sink()
    server = await asyncio.start_server(sink.serve, "127.0.0.1", 0)
    backing = replace(backing, smtp_url=f"smtp://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    log_dir = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    try:
        async with deployment(backing, ("notifications",)) as dep:
            dep.extra_env.update(
                {
                    "PLATFORM_OUTBOX_POLL_SECONDS": "1.0",
                    "PLATFORM_DELIVERY_POLL_SECONDS": "1.0",
                    "PLATFORM_LOG_LEVEL": "WARNING",
                    **dict(kv.split("=", 1) for kv in args.env),
                }
            )
            process = ServiceProcess(dep, "notifications", log_dir)
            process.start()
            try:
                await process.wait_ready(timeout=120)
                assert process.process is not None
                pid = process.process.pid
                dsn = dep.databases["notifications"]
                database = dsn.rpartition("/")[2]
                conn = await asyncpg.connect(dsn)
                try:
                    pg = await backends(backing.postgres_dsn, [database])
                    before_cpu = _ticks(pid) + sum(_ticks(p) for p in pg)
                    before_commits = (await commits(backing.postgres_dsn, [database]))[database]
                    text, html = "Text of the mail. " * 60, "<p>Html of the mail.</p>" * 120
                    say(f"queueing {args.mails} mails (load average {os.getloadavg()[0]:.2f})")
                    load_before = os.getloadavg()[0]
                    async with conn.transaction():
                        await conn.execute(QUEUE, args.mails, text, html)
                        await conn.execute("SELECT pg_notify('deliveries', '')")
                    start = time.monotonic()
                    while sink.messages < args.mails:
                        sink.changed.clear()
                        try:
                            await asyncio.wait_for(sink.changed.wait(), args.timeout)
                        except TimeoutError:
                            raise TimeoutError(f"{sink.messages} of {args.mails} mails") from None
                    handed = time.monotonic() - start

                    polls = 0

                    async def all_recorded() -> bool:
                        nonlocal polls
                        polls += 1  # each a commit in the database: not counted below
                        query = "SELECT count(*) FROM deliveries WHERE status = 'sent'"
                        return bool(await conn.fetchval(query) >= args.mails)

                    await wait_for(all_recorded, timeout=args.timeout, what="every mail sent")
                    recorded = time.monotonic() - start
                    load_after = os.getloadavg()[0]
                    pg = await backends(backing.postgres_dsn, [database]) | pg
                    cpu = _ticks(pid) + sum(_ticks(p) for p in pg) - before_cpu
                finally:
                    await conn.close()
            finally:
                process.stop()
            after = await settled_commits(backing.postgres_dsn, [database])
    finally:
        server.close()
        release()
    n = args.mails
    per_commit = (after[database] - before_commits - 1 - polls) / n  # without ours
    print(f"mails: {n}, load average {load_before:.2f} -> {load_after:.2f} on {os.cpu_count()}")
    print(f"handed to the sink: {n / handed:.0f} mails/s ({handed:.1f} s)")
    print(f"recorded sent: {n / recorded:.0f} mails/s ({recorded:.1f} s)")
    print(f"repeated Message-IDs at the sink: {sink.duplicates}")
    print(f"CPU ms per mail (process + its backends): {_ms(cpu) / n:.2f}")
    print(f"commits per mail: {per_commit:.2f}")
    return (
        f"delivery {n / recorded:.0f} mails/s, {_ms(cpu) / n:.2f} ms CPU/mail, "
        f"{per_commit:.2f} commits/mail"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=120, help="seconds without a mail")
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=value for the service (repeatable)"
    )
    line = asyncio.run(measure(parser.parse_args(argv)))
    print(line, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
