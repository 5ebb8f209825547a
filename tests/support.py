"""Finding and using the backing services in tests (DESIGN.md, "Running it").

Order: addresses in the environment (``KAFKA_BOOTSTRAP_SERVERS``, ``POSTGRES_DSN``, ``SMTP_URL``,
``MAIL_API_URL``) > testcontainers when a Docker engine answers > the local stack
(``deploy/local/stack up``). Every test run gets its own databases and its own topic prefix, so
runs never see each other's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

from shared.config import DEFAULT_PORTS, Settings

REPO = Path(__file__).resolve().parent.parent
STACK = REPO / "deploy" / "local" / "stack"
T = TypeVar("T")


@dataclass(frozen=True)
class Backing:
    kafka: str
    postgres_dsn: str  # a server DSN whose user may CREATE DATABASE
    smtp_url: str
    mail_api: str  # base URL of the mail catcher's HTTP API
    mail_kind: str  # "maildev" or "mailpit"


def _docker_answers() -> bool:
    if not shutil.which("docker"):  # no CLI: ask the API itself (DOCKER_HOST or the default)
        try:
            import docker  # type: ignore[import-untyped]

            return bool(docker.from_env(timeout=5).ping())
        except Exception:
            return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def find_backing() -> tuple[Backing, Callable[[], None]]:
    """Returns the backing services and a function that releases what was started for them."""
    env = os.environ
    if env.get("KAFKA_BOOTSTRAP_SERVERS") and env.get("POSTGRES_DSN"):
        return (
            Backing(
                kafka=env["KAFKA_BOOTSTRAP_SERVERS"],
                postgres_dsn=env["POSTGRES_DSN"],
                smtp_url=env.get("SMTP_URL", "smtp://127.0.0.1:1025"),
                mail_api=env.get("MAIL_API_URL", "http://127.0.0.1:1080"),
                mail_kind=env.get("MAIL_API_KIND", "maildev"),
            ),
            lambda: None,
        )
    if env.get("PLATFORM_TESTS_USE_DOCKER", "1") == "1" and _docker_answers():
        return _containers()
    subprocess.run([str(STACK), "up"], check=True)
    return (
        Backing(
            kafka="127.0.0.1:9092",
            postgres_dsn="postgresql://platform:platform@127.0.0.1:5432/postgres",
            smtp_url="smtp://127.0.0.1:1025",
            mail_api="http://127.0.0.1:1080",
            mail_kind="maildev",
        ),
        lambda: None,
    )


def _containers() -> tuple[Backing, Callable[[], None]]:  # pragma: no cover - needs Docker
    """Kafka, PostgreSQL and Mailpit as containers: the official images unless KAFKA_IMAGE,
    POSTGRES_IMAGE, MAILPIT_IMAGE name others (``deploy/images/build env``: built here without a
    registry). Kafka is configured as in deploy/docker-compose.yml, its external listener
    advertised on a host port chosen before start."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import (
        ExecWaitStrategy,
        HttpWaitStrategy,
        LogMessageWaitStrategy,
    )

    env = os.environ
    kafka_port = free_port()
    kafka = (
        DockerContainer(env.get("KAFKA_IMAGE", "apache/kafka:4.1.1"))
        .with_bind_ports(9094, kafka_port)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS="PLAINTEXT://:9092,CONTROLLER://:9093,EXTERNAL://:9094",
            KAFKA_ADVERTISED_LISTENERS=(
                f"PLAINTEXT://localhost:9092,EXTERNAL://127.0.0.1:{kafka_port}"
            ),
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=(
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT"
            ),
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_INTER_BROKER_LISTENER_NAME="PLAINTEXT",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            KAFKA_NUM_PARTITIONS="3",
        )
        .waiting_for(LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(120))
    )
    postgres = (
        DockerContainer(env.get("POSTGRES_IMAGE", "postgres:16"))
        .with_envs(POSTGRES_USER="platform", POSTGRES_PASSWORD="platform", POSTGRES_DB="postgres")
        .with_command("postgres -c max_connections=200")
        .with_exposed_ports(5432)
        # Over TCP: while the init scripts run, the server listens on its Unix socket only.
        .waiting_for(
            ExecWaitStrategy(
                ["pg_isready", "-h", "127.0.0.1", "-U", "platform", "-d", "postgres"]
            ).with_startup_timeout(60)
        )
    )
    mail = (
        DockerContainer(env.get("MAILPIT_IMAGE", "axllent/mailpit:v1.27"))
        .with_exposed_ports(1025, 8025)
        .waiting_for(HttpWaitStrategy(8025, "/readyz").with_startup_timeout(60))
    )
    started: list[DockerContainer] = []

    def stop() -> None:
        for container in reversed(started):
            with contextlib.suppress(Exception):
                container.stop()

    try:
        for container in (kafka, postgres, mail):
            started.append(container)
            container.start()
    except BaseException:
        stop()
        raise
    pg_host, pg_port = postgres.get_container_host_ip(), postgres.get_exposed_port(5432)
    mail_host = mail.get_container_host_ip()
    backing = Backing(
        kafka=f"127.0.0.1:{kafka_port}",
        postgres_dsn=f"postgresql://platform:platform@{pg_host}:{pg_port}/postgres",
        smtp_url=f"smtp://{mail_host}:{mail.get_exposed_port(1025)}",
        mail_api=f"http://{mail_host}:{mail.get_exposed_port(8025)}",
        mail_kind="mailpit",
    )
    return backing, stop


def database_url(server_dsn: str, name: str) -> str:
    base, _, _ = server_dsn.rpartition("/")
    return f"{base}/{name}"


async def create_database(server_dsn: str, name: str) -> str:
    conn = await asyncpg.connect(server_dsn, timeout=30)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"', timeout=60)
    finally:
        await conn.close(timeout=5)
    return database_url(server_dsn, name)


async def drop_database(server_dsn: str, name: str, seconds: float = 30.0) -> None:
    """Drop a test database, never waiting past ``seconds`` (a teardown must not hang).

    Its sessions are ended first (``pg_terminate_backend``, then ``WITH (FORCE)``). A backend
    PostgreSQL runs itself (autovacuum on a fresh database) may not be ours to terminate: then
    try again shortly; if time runs out, the uniquely named database is left for the next
    clean-up rather than failing a passed test."""
    deadline = time.monotonic() + seconds
    conn = await asyncpg.connect(server_dsn, timeout=10)
    try:
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            left = max(1.0, deadline - time.monotonic())
            try:
                await conn.execute(
                    """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                       WHERE datname = $1 AND pid <> pg_backend_pid()
                         AND backend_type = 'client backend'""",
                    name,
                    timeout=left,
                )
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=left)
                return
            except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
                await asyncio.sleep(min(0.05 * attempt, 1.0))
    finally:
        await conn.close(timeout=5)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 30.0, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Deployment:
    """One isolated deployment of the platform on the shared backing services."""

    backing: Backing
    prefix: str
    databases: dict[str, str] = field(default_factory=dict)  # service -> database URL
    ports: dict[str, int] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. PLATFORM_TEST_CLOCKS_ENABLED

    def settings(self, service: str) -> Settings:
        return Settings(
            service=service,
            database_url=self.databases[service],
            kafka_bootstrap_servers=self.backing.kafka,
            topic_prefix=self.prefix,
            smtp_url=self.backing.smtp_url,
            http_port=self.ports.get(service, DEFAULT_PORTS[service]),
            outbox_poll_seconds=0.5,
            delivery_poll_seconds=0.5,
            consumer_backoff_seconds=0.05,
        )

    def environment(self, service: str) -> dict[str, str]:
        if service == "portal":  # no database, no broker: the four services' URLs (issue 16)
            return {
                **os.environ,
                "PLATFORM_HTTP_PORT": str(self.ports["portal"]),
                "PLATFORM_PORTAL_PUBLIC_URL": self.url("portal"),
                "PLATFORM_DEVELOPMENT_MODE": "true",
                "PLATFORM_LOG_LEVEL": "WARNING",
                **{f"PLATFORM_{s.upper()}_URL": self.url(s) for s in self.databases},
                **self.extra_env,
            }
        s = self.settings(service)
        return {
            **os.environ,
            "PLATFORM_SERVICE": service,
            "PLATFORM_DATABASE_URL": s.database_url,
            "PLATFORM_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
            "PLATFORM_TOPIC_PREFIX": s.topic_prefix,
            "PLATFORM_SMTP_URL": s.smtp_url,
            "PLATFORM_HTTP_PORT": str(s.port),
            "PLATFORM_OUTBOX_POLL_SECONDS": "0.5",
            "PLATFORM_DELIVERY_POLL_SECONDS": "0.5",
            "PLATFORM_CONSUMER_BACKOFF_SECONDS": "0.05",
            "PLATFORM_LOG_LEVEL": "WARNING",
            "PLATFORM_DEVELOPMENT_MODE": "true",  # the tests sign with the development secret
            "PLATFORM_INVOICING_PUBLIC_URL": self.url("invoicing")
            if "invoicing" in self.ports
            else "http://127.0.0.1:8002",
            **(
                {"PLATFORM_PORTAL_PUBLIC_URL": self.url("portal")} if "portal" in self.ports else {}
            ),
            **self.extra_env,
        }

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"


@contextlib.asynccontextmanager
async def deployment(backing: Backing, services: tuple[str, ...]) -> AsyncIterator[Deployment]:
    dep = Deployment(backing=backing, prefix=unique("t") + ".")
    names = {s: unique(f"test_{s}_") for s in services if s != "portal"}  # the portal: no DB
    try:
        for service, name in names.items():
            dep.databases[service] = await create_database(backing.postgres_dsn, name)
        for service in services:
            dep.ports[service] = free_port()
        yield dep
    finally:
        for name in names.values():
            with contextlib.suppress(Exception):
                await drop_database(backing.postgres_dsn, name)
        with contextlib.suppress(Exception):  # hygiene only: a broker that restarts stays quick
            await asyncio.wait_for(delete_topics(backing.kafka, dep.prefix), 20)


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete the deployment's topics, so a long-lived local broker does not collect thousands
    of them run after run (and take minutes to restart)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """A service as its own OS process (``python -m services.<name>``), as in production."""

    def __init__(
        self, dep: Deployment, service: str, log_dir: Path, port: int | None = None
    ) -> None:
        """``port``: a replica's own HTTP port (the deployment's port for the service if None)."""
        self.dep = dep
        self.service = service
        self.port = port or dep.ports[service]
        self.log_path = log_dir / f"{service}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        env = {**self.dep.environment(self.service), "PLATFORM_HTTP_PORT": str(self.port)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.service}"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, timeout: float = 60.0) -> None:
        async def ready() -> bool:
            if self.process is None or self.process.poll() is not None:
                tail = self.log_path.read_text()[-3000:]
                raise AssertionError(f"{self.service} exited during start-up:\n{tail}")
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    response = await client.get(f"http://127.0.0.1:{self.port}/ready")
                    return response.status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(ready, timeout=timeout, what=f"{self.service} /ready")

    def kill(self) -> None:
        """SIGKILL: no clean-up, as in a crash."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class MailCatcher:
    """Reads caught mail over the catcher's HTTP API (maildev locally, Mailpit in Docker)."""

    def __init__(self, backing: Backing) -> None:
        self.base = backing.mail_api.rstrip("/")
        self.kind = backing.mail_kind

    async def messages(self) -> list[dict[str, Any]]:
        """Each mail as {"to": [addresses], "subject", "text", "html", "date" and "message_id"
        (the raw Date and Message-ID headers)}."""
        async with httpx.AsyncClient(timeout=5) as client:
            if self.kind == "mailpit":
                data = (await client.get(f"{self.base}/api/v1/messages?limit=1000")).json()
                found = []
                for m in data.get("messages", []):
                    # The list carries a 250-character Snippet; the whole text is per message.
                    full = (await client.get(f"{self.base}/api/v1/message/{m['ID']}")).json()
                    found.append(
                        {
                            "to": [a["Address"] for a in full.get("To") or []],
                            "subject": full.get("Subject", ""),
                            "text": full.get("Text", ""),
                            "html": full.get("HTML", ""),
                            "date": full.get("Date", ""),
                            "message_id": full.get("MessageID", ""),
                        }
                    )
                return found
            data = (await client.get(f"{self.base}/email")).json()
            return [
                {
                    "to": [a["address"] for a in m.get("to") or []],
                    "subject": m.get("subject", ""),
                    "text": m.get("text", ""),
                    "html": m.get("html", ""),
                    "date": (m.get("headers") or {}).get("date", ""),
                    "message_id": (m.get("headers") or {}).get("message-id", ""),
                }
                for m in data
            ]

    async def to(self, address: str) -> list[dict[str, Any]]:
        return [m for m in await self.messages() if address in m["to"]]
