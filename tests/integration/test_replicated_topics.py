"""Replicated topics: a broker of a three-node cluster dies under load and nothing is lost.

The cluster is the local stack's ``deploy/local/stack up kafka --brokers 3`` (own ports 9192-9194
and state dir, beside the single broker the other tests use). Ordering and invoicing run in
process against it with replication factor 3 and ``min.insync.replicas`` 2 (from ``Settings``);
their producers write with ``acks=all``. A stream of orders is placed; once invoicing is under
way the broker leading ordering's first partition is SIGKILLed. Every order must still get
exactly one invoice, and both outboxes must drain: with two replicas in sync, every
acknowledged write survives the loss of one broker and writing goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.config import Settings
from shared.contracts import Envelope
from shared.runtime import create_app, load_spec
from shared.topics import Topics
from tests.integration.conftest import read_topic
from tests.integration.ordering_helpers import Ordering, SettableClock
from tests.support import STACK, Backing, deployment, wait_for

pytestmark = pytest.mark.integration

BROKERS = 3
REPLICAS = 3
MIN_IN_SYNC = 2
ORDERS = 60
KILL_AFTER_INVOICES = 15
STACK_HOME = Path(os.environ.get("STACK_HOME", STACK.parent.parent.parent / ".local"))
FIRST_PORT = int(os.environ.get("KAFKA_CLUSTER_PORT_LOCAL", "9192"))


@dataclasses.dataclass(frozen=True)
class Cluster:
    bootstrap: str

    def node_pid(self, node: int) -> int:
        """The JVM of ``node``, as the stack recorded it (checked against its command line)."""
        pid = int((STACK_HOME / "kafka-cluster" / f"node-{node}" / "kafka.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert f"-Dstack.component=kafka-node-{node}".encode() in cmdline, cmdline
        return pid


def _stack(*args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STACK), *args, "--brokers", str(BROKERS)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **env},
    )


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """The three-broker cluster: started for this module unless it already runs; stopped
    afterwards if this module started it, else made whole again (the killed node restarted)."""
    ports = [FIRST_PORT + i for i in range(BROKERS)]
    was_running = all(_listening(p) for p in ports)
    try:
        started = _stack("up", "kafka")
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"the three-broker cluster could not start: {error}")
    if started.returncode != 0:
        pytest.skip(
            "the three-broker cluster could not start (deploy/local/stack up kafka --brokers 3):\n"
            + (started.stdout + started.stderr)[-2000:]
        )
    try:
        yield Cluster(",".join(f"127.0.0.1:{p}" for p in ports))
    finally:
        if was_running:
            _stack("up", "kafka")
        else:  # a node is dead: the last ones cannot shut down cleanly without a quorum
            _stack("down", "kafka", STOP_TIMEOUT="10")


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    return admin


async def _all_brokers_registered(bootstrap: str) -> None:
    async def registered() -> bool:
        admin = await _admin(bootstrap)
        try:
            described = await admin.describe_cluster()
            return len(described["brokers"]) == BROKERS
        finally:
            await admin.close()

    await wait_for(registered, timeout=60, what=f"{BROKERS} brokers in the cluster")


def replicated(dep_settings: Settings, bootstrap: str) -> Settings:
    return dep_settings.model_copy(
        update={
            "kafka_bootstrap_servers": bootstrap,
            "topic_replication_factor": REPLICAS,
            "topic_min_insync_replicas": MIN_IN_SYNC,
        }
    )


@contextlib.asynccontextmanager
async def platform(
    backing: Backing, cluster: Cluster
) -> AsyncIterator[tuple[Ordering, dict[str, str], Topics]]:
    """Ordering (with an HTTP client) and invoicing in process, on the cluster, replicated."""
    on_cluster = dataclasses.replace(backing, kafka=cluster.bootstrap)
    async with deployment(on_cluster, ("ordering", "invoicing")) as dep:
        clock = SettableClock()
        ordering_settings = replicated(dep.settings("ordering"), cluster.bootstrap)
        ordering_app = create_app(load_spec("ordering"), ordering_settings, clock)
        invoicing_app = create_app(
            load_spec("invoicing"), replicated(dep.settings("invoicing"), cluster.bootstrap)
        )
        async with (
            ordering_app.router.lifespan_context(ordering_app),
            invoicing_app.router.lifespan_context(invoicing_app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=ordering_app), base_url="http://ordering"
            ) as client,
        ):
            runtime = ordering_app.state.runtime
            ordering = Ordering(client, runtime.pool, ordering_settings, clock, runtime.producer)
            yield ordering, dep.databases, Topics(dep.prefix)


async def _leader_of(bootstrap: str, topic: str, partition: int) -> int:
    admin = await _admin(bootstrap)
    try:
        (description,) = await admin.describe_topics([topic])
        return int(
            next(p["leader"] for p in description["partitions"] if p["partition"] == partition)
        )
    finally:
        await admin.close()


async def _count(pool: Any, sql: str) -> int:
    return int(await pool.fetchval(sql))


async def test_the_platform_creates_every_topic_with_the_configured_replication(
    backing: Backing, cluster: Cluster
) -> None:
    await _all_brokers_registered(cluster.bootstrap)
    async with platform(backing, cluster) as (_, _databases, topics):
        names = [*topics.all_topics(), topics.test_clocks()]
        admin = await _admin(cluster.bootstrap)
        try:
            described = {d["topic"]: d for d in await admin.describe_topics(names)}
            configs = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
            )
        finally:
            await admin.close()
    assert sorted(described) == sorted(names)
    for name, description in described.items():
        assert description["partitions"], name
        for partition in description["partitions"]:
            assert len(partition["replicas"]) == REPLICAS, (name, partition)
    min_isr = {
        resource[3]: value
        for response in configs
        for resource in response.resources
        for (key, value, *_rest) in resource[4]
        if key == "min.insync.replicas"
    }
    assert min_isr == dict.fromkeys(names, str(MIN_IN_SYNC))


async def test_a_broker_killed_under_load_loses_no_order_and_no_invoice(
    backing: Backing, cluster: Cluster
) -> None:
    await _all_brokers_registered(cluster.bootstrap)
    async with platform(backing, cluster) as (ordering, databases, topics):
        invoicing_pool = await _pool(databases["invoicing"])
        try:
            account, buyer, _ = await ordering.open_account()
            killed = asyncio.Event()

            async def place_all() -> None:  # half before the kill, half while a broker is dead
                for n in range(ORDERS):
                    if n == ORDERS // 2:
                        await killed.wait()
                    await ordering.order(account, buyer, seats=1 + n % 3)

            placing = asyncio.create_task(place_all())

            async def invoicing_under_way() -> bool:
                invoices = await _count(invoicing_pool, "SELECT count(*) FROM invoices")
                return invoices >= KILL_AFTER_INVOICES

            await wait_for(invoicing_under_way, timeout=60, what="the first invoices")
            victim = await _leader_of(cluster.bootstrap, topics.events("ordering"), 0)
            invoices_at_kill = await _count(invoicing_pool, "SELECT count(*) FROM invoices")
            os.kill(cluster.node_pid(victim), signal.SIGKILL)
            killed.set()
            killed_at = time.monotonic()
            await placing

            async def all_invoiced() -> bool:
                return await _count(invoicing_pool, "SELECT count(*) FROM invoices") >= ORDERS

            await wait_for(all_invoiced, timeout=90, what=f"{ORDERS} invoices after the kill")

            async def drained() -> bool:
                unpublished = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
                return (
                    await _count(ordering.pool, unpublished) == 0
                    and await _count(invoicing_pool, unpublished) == 0
                )

            await wait_for(drained, timeout=60, what="both outboxes drained")
            converged = time.monotonic() - killed_at
            print(
                f"\nkilled broker {victim} at {invoices_at_kill}/{ORDERS} invoices;"
                f" {ORDERS - ORDERS // 2} orders placed after it;"
                f" converged {converged:.1f}s after the kill"
            )

            assert await _count(ordering.pool, "SELECT count(*) FROM orders") == ORDERS
            assert await _count(invoicing_pool, "SELECT count(*) FROM invoices") == ORDERS
            assert (
                await _count(invoicing_pool, "SELECT count(DISTINCT order_id) FROM invoices")
                == ORDERS
            )
            relayed = {
                "ordering": await _count(ordering.pool, "SELECT count(*) FROM outbox"),
                "invoicing": await _count(invoicing_pool, "SELECT count(*) FROM outbox"),
            }
        finally:
            await invoicing_pool.close()

        # What the survivors hold: every order and every invoice announced (a retried send may
        # repeat a record, never lose one). Read before the deployment ends (it deletes its
        # topics).
        placed = await _events(cluster.bootstrap, topics.events("ordering"), relayed["ordering"])
        issued = await _events(cluster.bootstrap, topics.events("invoicing"), relayed["invoicing"])
    placed = [e for e in placed if e.event_type == "OrderPlaced"]
    issued = [e for e in issued if e.event_type == "InvoiceIssued"]
    assert len({e.payload["order_id"] for e in placed}) == ORDERS
    assert len({e.payload["invoice_id"] for e in issued}) == ORDERS


async def _pool(dsn: str) -> Any:
    import asyncpg

    return await asyncpg.create_pool(dsn, min_size=1, max_size=2)


async def _events(bootstrap: str, topic: str, relayed: int) -> list[Envelope]:
    """The envelopes on ``topic``; the outbox relayed ``relayed`` of them, each acknowledged by
    ``acks=all``, so at least that many are there to read."""
    records = await read_topic(bootstrap, topic, expected=relayed, timeout=30)
    assert len(records) >= relayed, f"{topic}: {len(records)} records, {relayed} relayed"
    return [Envelope.model_validate_json(r.value) for r in records]
