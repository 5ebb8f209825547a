"""What the notifications integration tests share: publishing events, an own maildev, and an
SMTP server that refuses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from shared.config import Settings
from shared.contracts import (
    PRODUCER_OF,
    AccountOpened,
    Contract,
    Envelope,
    Person,
    RolesChanged,
    new_envelope,
)
from shared.runtime import create_app, load_spec
from shared.time.clock import Clock
from shared.topics import Topics
from tests.support import REPO, Backing, Deployment, MailCatcher, free_port, wait_for


def address(role: str) -> str:
    return f"{role}-{uuid.uuid4().hex[:12]}@example.com"


def person(email: str, language: str = "en") -> Person:
    return Person(user_id=uuid.uuid4(), email=email, name=email.split("-")[0], language=language)


def envelope(account_id: uuid.UUID, event: Contract) -> Envelope:
    now = datetime.now(UTC)
    return new_envelope(
        event=event,
        producer=PRODUCER_OF[type(event).__name__],
        account_id=account_id,
        occurred_at=now,
        recorded_at=now,
    )


def opening(account_id: uuid.UUID, roles: RolesChanged, language: str = "en") -> list[Envelope]:
    """AccountOpened and the first roles snapshot, as ordering publishes them."""
    opened = AccountOpened(
        name="Fjord Arkitekter AS",
        country="NO",
        currency="NOK",
        language=language,
        time_zone="Europe/Oslo",
    )
    return [envelope(account_id, opened), envelope(account_id, roles)]


async def publish(backing: Backing, dep: Deployment, *envelopes: Envelope) -> None:
    """Each on its producer's topic, keyed by account (as the outbox relay does)."""
    topics = Topics(dep.prefix)
    producer = AIOKafkaProducer(bootstrap_servers=backing.kafka, enable_idempotence=True)
    await producer.start()
    try:
        for env in envelopes:
            await producer.send_and_wait(
                topics.events(env.producer),
                value=env.model_dump_json().encode(),
                key=str(env.account_id).encode(),
            )
    finally:
        await producer.stop()


def notifications_settings(dep: Deployment, **changes: object) -> Settings:
    return Settings(**{**dep.settings("notifications").model_dump(), **changes})


@contextlib.asynccontextmanager
async def notifications_app(
    settings: Settings, clock: Clock | None = None
) -> AsyncIterator[FastAPI]:
    app = create_app(load_spec("notifications"), settings, clock)
    async with app.router.lifespan_context(app):
        yield app


def maildev_binary() -> Path | None:
    """$MAILDEV_BIN, else the stack's install in this checkout, else in /work/main."""
    candidates = [
        os.environ.get("MAILDEV_BIN", ""),
        str(REPO / ".local/mail/node_modules/maildev/bin/maildev"),
        "/work/main/.local/mail/node_modules/maildev/bin/maildev",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


class OwnMaildev:
    """A maildev of the test's own, on free ports, that the test may stop and start."""

    def __init__(self, backing: Backing, directory: Path) -> None:
        binary = maildev_binary()
        if binary is None:
            pytest.skip("maildev is not installed (set MAILDEV_BIN)")
        self.binary = binary
        self.directory = directory
        self.smtp_port = free_port()
        self.web_port = free_port()
        self.catcher = MailCatcher(
            replace(backing, mail_api=f"http://127.0.0.1:{self.web_port}", mail_kind="maildev")
        )
        self.process: asyncio.subprocess.Process | None = None

    @property
    def smtp_url(self) -> str:
        return f"smtp://127.0.0.1:{self.smtp_port}"

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            "node",
            str(self.binary),
            *("--smtp", str(self.smtp_port), "--web", str(self.web_port)),
            *("--ip", "127.0.0.1", "--web-ip", "127.0.0.1"),
            *("--mail-directory", str(self.directory)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        async def answers() -> bool:
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(f"{self.catcher.base}/email")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(answers, timeout=30, what="own maildev")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), 10)
        self.process = None


class RefusingSmtp:
    """A minimal SMTP server that keeps the command sequence as a real one does.

    Answers 550 to RCPT TO for addresses starting with "reject-" and accepts everything else;
    a MAIL FROM inside an open transaction gets Postfix's "503 5.5.1 Error: nested MAIL
    command". It records every RCPT by address, the raw bytes of every message it received
    (``received``) and each session's commands (``sessions``). ``refuse_mail_503`` answers the
    next so many MAIL FROMs with 503 (bad sequence); ``stall_data`` takes the next message and
    never answers it (``stalled`` is set then), as a server would while its client dies.

    ``pipelining=True`` announces PIPELINING (RFC 2920) and behaves as a server may then: the
    replies to MAIL FROM and RCPT TO are held until the group's last command (DATA, RSET, ...)
    arrives, so a client that waits for each reply before its next command never gets one;
    DATA without an accepted recipient gets Postfix's "554 5.5.1 Error: no valid recipients"."""

    def __init__(self, *, pipelining: bool = False) -> None:
        self.pipelining = pipelining
        self.port = free_port()
        self.rcpts: list[str] = []
        self.accepted: list[str] = []
        self.received: list[bytes] = []
        self.sessions: list[list[str]] = []
        self.refuse_mail_503 = 0
        self.stall_data = False
        self.stalled = asyncio.Event()
        self.server: asyncio.Server | None = None

    @property
    def smtp_url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RefusingSmtp:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held: list[str] = []

        def say(line: str) -> None:
            if self.pipelining and verb in ("MAIL", "RCPT"):
                held.append(line)  # answered with the group's last command
                return
            for reply in [*held, line]:
                writer.write(f"{reply}\r\n".encode())
            held.clear()

        commands: list[str] = []
        self.sessions.append(commands)
        verb = ""
        say("220 refusing.test ESMTP")
        recipient = ""
        in_mail = False
        valid = False  # an accepted recipient in this transaction
        try:
            while line := await reader.readline():
                command = line.decode().strip()
                verb = command[:4].upper()
                commands.append(verb)
                if verb in ("EHLO", "HELO"):
                    say("250-refusing.test")
                    if self.pipelining:
                        say("250-PIPELINING")
                    say("250 8BITMIME")
                elif verb == "MAIL":
                    if self.refuse_mail_503 > 0:
                        self.refuse_mail_503 -= 1
                        say("503 5.5.1 Error: bad sequence of commands")
                    elif in_mail:
                        say("503 5.5.1 Error: nested MAIL command")
                    else:
                        in_mail, valid = True, False
                        say("250 OK")
                elif verb == "RCPT":
                    recipient = command.split("<", 1)[1].split(">", 1)[0]
                    self.rcpts.append(recipient)
                    if not in_mail:
                        say("503 5.5.1 Error: need MAIL command")
                    elif recipient.startswith("reject-"):
                        say(f"550 5.1.1 <{recipient}>: mailbox unavailable")
                    else:
                        valid = True
                        say("250 OK")
                elif verb == "DATA" and self.pipelining and not valid:
                    say("554 5.5.1 Error: no valid recipients")
                elif verb == "DATA":
                    say("354 go ahead")
                    await writer.drain()
                    lines: list[bytes] = []
                    while (data := await reader.readline()) not in (b".\r\n", b""):
                        lines.append(data[1:] if data.startswith(b"..") else data)
                    self.received.append(b"".join(lines))
                    in_mail = False
                    if self.stall_data:
                        self.stall_data = False
                        self.stalled.set()
                        await reader.read()  # no answer, until the client goes away
                        break
                    self.accepted.append(recipient)
                    say("250 OK queued")
                elif verb == "QUIT":
                    say("221 bye")
                    await writer.drain()
                    break
                else:  # RSET, NOOP
                    if verb == "RSET":
                        in_mail = False
                    say("250 OK")
                await writer.drain()
        finally:
            writer.close()


def count(addresses: Sequence[str], of: str) -> int:
    return sum(1 for a in addresses if a == of)
