"""The mail-sender port and its SMTP adapter (aiosmtplib), one reused connection per worker.

A mail is handed over in two steps so the caller can record, durably, the moment after which
the server may hold the mail: ``begin`` (MAIL FROM, RCPT TO: nothing is delivered yet, and a
5xx here is a clean permanent refusal) and ``finish`` (DATA: the server takes responsibility
when it answers 250). If the connection breaks while we wait for that answer we cannot know
whether the mail was accepted: ``Unconfirmed``.

Headers are structured objects (``email.message.EmailMessage``, ``email.policy.SMTP``,
``headerregistry.Address`` for From and To), never formatted header lines. The standard
library's own header classes are not enough on their own: they decode any encoded word found
in a value (``=?utf-8?q?=0D=0ABcc:...?=`` becomes CR LF ``Bcc:``) and, before CPython 3.11.10
/ 3.12.5, write the decoded line break out verbatim, so a name could inject headers even through
an ``Address`` display name. The Subject and the display names therefore go through header
classes of ours (registered in the policy's ``header_factory``) that take the value as literal
text: whitespace and control characters (CR, LF, U+0085, U+2028, U+2029, ...) collapse to one
space, and every word that is not plain ASCII, or that looks like an encoded word, is written
as an RFC 2047 encoded word, so the receiver decodes exactly the text we meant.

What goes on the wire is written by ``wire_mail`` (issue 17: the email package's header
registry and generator were a third of a hand-over's CPU): the same header lines, written by
the same functions as those header classes' ``fold`` (``_address_line``, ``_fold``), and the
two parts of ``compose``'s ``multipart/alternative``, each 7-bit or quoted-printable. ``compose``
stays as the reference the tests hold ``wire_mail`` to: both parse back identically.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
import unicodedata
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.errors import MessageDefect
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, Protocol

import aiosmtplib
from aiosmtplib.email import quote_address

if TYPE_CHECKING:
    from email._header_value_parser import TokenList

Security = Literal["none", "starttls", "tls"]


class PermanentFailure(Exception):
    """The server refused the mail for good (5xx): recorded, never retried."""


class TransientFailure(Exception):
    """The mail was not handed over (connection, timeout, 4xx): retried later."""


class Unreachable(TransientFailure):
    """No connection to the server: nothing else can be sent now either."""


class Unconfirmed(Exception):
    """The connection broke after the message was sent and before the server answered."""


@dataclass(frozen=True)
class OutgoingMail:
    """A mail as it goes on the wire (``wire_mail``): its recipient and Message-ID (for logs
    and fakes) and the bytes of the message, CRLF line ends, 7-bit."""

    recipient: str
    message_id: str
    data: bytes


class MailSender(Protocol):
    async def begin(self, sender: str, recipient: str) -> None: ...
    async def finish(self, message: OutgoingMail) -> None: ...
    async def abort(self) -> None: ...
    async def close(self) -> None: ...


# --- headers ---------------------------------------------------------------------------------

MAX_LINE = 78  # RFC 5322's recommended line length, kept by every header we write
_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_VCHAR = frozenset(chr(c) for c in range(0x21, 0x7F))
_EW_BYTES = 45  # UTF-8 bytes per encoded word: "=?utf-8?b?" + 60 base64 chars + "?=" = 72


def header_text(value: str) -> str:
    """A header value as one line of text: every run of whitespace, line breaks and other
    control or format characters (CR, LF, TAB, U+0085, U+2028, U+2029, U+200B...) is one
    space."""
    cleaned = "".join(
        " " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Zs") else c for c in value
    )
    return " ".join(cleaned.split())


def _plain(word: str, allowed: frozenset[str]) -> bool:
    """A word a receiver reads as written: allowed ASCII only, nothing an RFC 2047 decoder
    would take for an encoded word, short enough to fit a line."""
    return len(word) <= 40 and set(word) <= allowed and "=?" not in word and "?=" not in word


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 "B" encoded words, each within a line, split between characters."""
    words: list[str] = []
    chunk = b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _EW_BYTES:
            words.append(chunk.decode("utf-8"))
            chunk = b""
        chunk += encoded
    words.append(chunk.decode("utf-8"))
    return [f"=?utf-8?b?{base64.b64encode(w.encode()).decode('ascii')}?=" for w in words]


def _tokens(text: str, allowed: frozenset[str]) -> list[str]:
    """Plain words as they are; each run of other words as encoded words (the spaces inside a
    run are encoded with it, since a decoder drops the space between two encoded words)."""
    tokens: list[str] = []
    run: list[str] = []
    for word in text.split(" ") if text else []:
        if _plain(word, allowed):
            if run:
                tokens += _encoded_words(" ".join(run))
                run = []
            tokens.append(word)
        else:
            run.append(word)
    if run:
        tokens += _encoded_words(" ".join(run))
    return tokens


def _fold(name: str, tokens: list[str], linesep: str) -> str:
    """``Name: token token...`` folded at spaces so no line exceeds ``MAX_LINE``."""
    lines = [f"{name}:"]
    for token in tokens:
        if len(lines[-1]) + 1 + len(token) > MAX_LINE and lines[-1] != f"{name}:":
            lines.append("")
        lines[-1] += f" {token}"
    return linesep.join(lines) + linesep


class LiteralTextHeader(BaseHeader):
    """An unstructured header (Subject) whose value is literal text, never decoded."""

    max_count = 1

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        kwds["decoded"] = header_text(str(value))
        kwds["parse_tree"] = None

    def fold(self, *, policy: Policy) -> str:
        return _fold(self.name, _tokens(str(self), _VCHAR), policy.linesep)


class SingleAddressHeader(BaseHeader):
    """From or To: exactly one ``Address``, its display name literal text."""

    max_count = 1

    @classmethod
    def parse(cls, value: Address, kwds: dict[str, Any]) -> None:
        if not isinstance(value, Address):
            raise TypeError("From and To take one email.headerregistry.Address")
        address = mailbox(header_text(value.display_name), value.addr_spec)
        kwds["decoded"] = str(address)
        kwds["parse_tree"] = None
        kwds["address"] = address

    def init(
        self,
        name: str,
        *,
        parse_tree: TokenList,
        defects: Iterable[MessageDefect],
        address: Address | None = None,
    ) -> None:
        super().init(name, parse_tree=parse_tree, defects=defects)
        if address is None:
            raise TypeError("an address header needs its Address")
        self.address = address

    def fold(self, *, policy: Policy) -> str:
        return _address_line(self.name, self.address, policy.linesep)


def _address_line(name: str, address: Address, linesep: str) -> str:
    """``From:`` or ``To:`` with one address, its display name literal text."""
    tokens = _tokens(address.display_name, _ATEXT)
    spec = address.addr_spec
    return _fold(name, [*tokens, f"<{spec}>"] if tokens else [spec], linesep)


def mailbox(display_name: str, addr_spec: str) -> Address:
    """An address; ``ValueError`` unless ``addr_spec`` is one plain ASCII mailbox."""
    if not addr_spec or not set(addr_spec) <= _VCHAR or "=?" in addr_spec:
        raise ValueError("not a plain address")
    address = Address(display_name=display_name, addr_spec=addr_spec)  # parses, or ValueError
    if address.addr_spec != addr_spec or not address.domain:
        raise ValueError("not a plain address")
    return address


def _registry() -> HeaderRegistry:
    registry = HeaderRegistry()
    registry.map_to_type("subject", LiteralTextHeader)
    registry.map_to_type("from", SingleAddressHeader)
    registry.map_to_type("to", SingleAddressHeader)
    return registry


# email.policy.SMTP (CRLF line ends) with our Subject, From and To classes.
MAIL_POLICY = email_policy.SMTP.clone(header_factory=_registry())


def message_id_for(delivery_id: object, domain: str = "subscription-platform") -> str:
    """The Message-ID of a delivery, chosen once when it is queued and stored with it: every
    copy of the mail, resends after a crash included, carries the same one."""
    return f"<{delivery_id}@{domain}>"


def compose(
    *,
    sender: str,
    recipient: str,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    date: datetime,
) -> EmailMessage:
    """The mail, every header a structured value. ``sender`` may carry a display name
    (``Name <address>``); ``ValueError`` for an address that is not one plain mailbox.
    ``date`` (timezone-aware, from the business clock when the mail was queued) is the ``Date``
    header, the same on every copy, as the Message-ID is."""
    if date.tzinfo is None:
        raise ValueError("a mail's date is timezone-aware")
    message = EmailMessage(policy=MAIL_POLICY)
    name, addr = parseaddr(sender)
    message["From"] = mailbox(name, addr if name or "<" in sender else sender)
    message["To"] = mailbox("", recipient)
    message["Subject"] = header_text(subject)  # the policy refuses line breaks before ours
    message["Date"] = format_datetime(date.astimezone(UTC))
    if not set(message_id) <= _VCHAR or not message_id.startswith("<"):
        raise ValueError("not a Message-ID")
    message["Message-ID"] = message_id
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


CRLF = "\r\n"


@lru_cache(maxsize=16)
def _from_line(sender: str) -> str:
    """The ``From`` line of the configured sender (one per process: parsed once)."""
    name, addr = parseaddr(sender)
    address = mailbox(name, addr if name or "<" in sender else sender)
    return _address_line(
        "From", mailbox(header_text(address.display_name), address.addr_spec), CRLF
    )


def _part(subtype: str, text: str) -> bytes:
    """One text part, as ``EmailMessage.set_content`` chooses for it under ``email.policy.SMTP``
    but never 8-bit: 7-bit when every line is ASCII and at most 78 bytes long, else
    quoted-printable (``binascii.b2a_qp``: lines of at most 76, trailing white space, ``=``
    and every non-ASCII byte encoded). The body's line ends are CRLF."""
    lines = text.encode("utf-8").splitlines()  # bytes: \n, \r and \r\n only, as email does
    body = b"\r\n".join(lines) + b"\r\n"
    if max((len(line) for line in lines), default=0) <= MAX_LINE and body.isascii():
        cte = "7bit"
    else:
        cte, body = "quoted-printable", binascii.b2a_qp(body, istext=True)
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}'
    return head.encode("ascii") + b"\r\n\r\n" + body


def wire_mail(
    *,
    sender: str,
    recipient: str,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    date: datetime,
) -> OutgoingMail:
    """``compose``'s mail as bytes, written directly: the same header lines (the same checks,
    folding and encoded words: no value can add, end or split a header), a
    ``multipart/alternative`` of the text and the HTML part. ``ValueError`` as ``compose``."""
    if date.tzinfo is None:
        raise ValueError("a mail's date is timezone-aware")
    if not set(message_id) <= _VCHAR or not message_id.startswith("<"):
        raise ValueError("not a Message-ID")
    parts = [_part("plain", text), _part("html", html)]
    boundary = f"=_{uuid.uuid4().hex}"  # "=_" never occurs in quoted-printable text
    while any(boundary.encode("ascii") in part for part in parts):
        boundary = f"=_{uuid.uuid4().hex}"
    head = "".join(
        (
            _from_line(sender),
            _address_line("To", mailbox("", recipient), CRLF),
            _fold("Subject", _tokens(header_text(subject), _VCHAR), CRLF),
            f"Date: {format_datetime(date.astimezone(UTC))}\r\n",
            f"Message-ID: {message_id}\r\n",
            "MIME-Version: 1.0\r\n",
            f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n',
        )
    )
    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    data = b"".join(
        (
            head.encode("ascii"),
            delimiter,  # the empty line that ends the header, then the first boundary
            parts[0],
            delimiter,
            parts[1],
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        )
    )
    return OutgoingMail(recipient, message_id, data)


def _describe(error: aiosmtplib.SMTPResponseException) -> str:
    """The reply code and the server's words without an echoed address (no personal data)."""
    return f"{error.code} {error.message.split('<')[0].strip()}"[:200]


# "Bad sequence of commands" (e.g. Postfix's "503 5.5.1 Error: nested MAIL command"): the
# session, not the mail, is at fault. Transient, and the session is dropped.
PROTOCOL_SEQUENCE = frozenset({503})


def _refusal(error: aiosmtplib.SMTPResponseException) -> TransientFailure | PermanentFailure:
    """A reply is permanent only when it is a 5xx about the mail itself: 4xx and
    protocol-sequence replies are transient."""
    if 500 <= error.code < 600 and error.code not in PROTOCOL_SEQUENCE:
        return PermanentFailure(_describe(error))
    return TransientFailure(_describe(error))


class _Pipeline(asyncio.Protocol):
    """An SMTP connection set up by aiosmtplib (connect, EHLO) and then taken over, when the
    server announces PIPELINING (RFC 2920): commands are written together and their replies
    read in order (aiosmtplib keeps one reply at a time and drops what comes meanwhile)."""

    def __init__(self, transport: asyncio.Transport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout
        self.buffer = bytearray()
        self.lines: list[str] = []
        self.replies: deque[tuple[int, str]] = deque()
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        transport.set_protocol(self)

    @property
    def is_connected(self) -> bool:
        return self.error is None and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\n")) >= 0:
            line = bytes(self.buffer[:end]).rstrip(b"\r")
            del self.buffer[: end + 1]
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
                self._fail(aiosmtplib.SMTPResponseException(-1, "malformed reply"))
                return
            self.lines.append(line[4:].decode("utf-8", "surrogateescape"))
            if line[3:4] != b"-":
                self.replies.append((int(line[:3]), "\n".join(self.lines)))
                self.lines = []
        if len(self.buffer) > 65536:
            self._fail(aiosmtplib.SMTPResponseException(-1, "reply too long"))
        self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("unexpected EOF"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected("connection lost"))

    def _fail(self, error: Exception) -> None:
        self.error = self.error or error
        self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def write(self, data: bytes) -> None:
        if not self.is_connected:
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        self.transport.write(data)

    async def reply(self) -> tuple[int, str]:
        """The next reply, in the order of the commands; an error once the connection broke
        (or ``TimeoutError`` after ``timeout`` seconds without one)."""
        while not self.replies:
            if self.error is not None:
                raise self.error
            self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.waiter, self.timeout)
        return self.replies.popleft()

    async def command(self, line: bytes, expected: tuple[int, ...] = (250,)) -> None:
        self.write(line + b"\r\n")
        code, text = await self.reply()
        if code not in expected:
            raise aiosmtplib.SMTPResponseException(code, text)

    def close(self) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected("closed"))


def _path(address: str) -> bytes:
    """``<address>`` for MAIL FROM / RCPT TO (a display name dropped, as aiosmtplib does)."""
    quoted = quote_address(address)
    if not quoted.isascii() or any(c in quoted for c in "\r\n\0"):
        raise ValueError("not a plain address")
    return quoted.encode("ascii")


def _dot_stuffed(data: bytes) -> bytes:
    """The message for DATA: a line starting with "." gets another, then the final ".".
    ``wire_mail``'s lines end in CRLF, and so does its last."""
    return _LEADING_DOT.sub(b"..", data) + b".\r\n"


_LEADING_DOT = re.compile(rb"(?m)^\.")


class SmtpSender:
    """One SMTP connection, opened on first use and reused until it breaks.

    A transaction left open by any error (the caller's included, e.g. a database error between
    ``begin`` and ``finish``) is reset (RSET, or a new connection if that fails) before the
    next MAIL FROM; a protocol-sequence reply drops the connection.

    When the server announces PIPELINING (RFC 2920) on a plain connection, ``begin`` only
    notes the envelope and ``finish`` writes MAIL FROM, RCPT TO and DATA at once, reads their
    three replies in order (each checked as ``begin`` checks them one at a time: a refused
    recipient raises the same ``PermanentFailure``), then the content: two round trips a mail
    instead of four. Over TLS (untested here) and without PIPELINING, one command at a time."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 10.0,
        security: Security = "none",
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.security = security
        self.username = username
        self.password = password
        self._smtp: aiosmtplib.SMTP | None = None
        self._pipe: _Pipeline | None = None
        self._envelope: tuple[bytes, bytes] | None = None  # pipelined: written with DATA
        self._open = False  # MAIL FROM sent and the transaction not finished or reset

    @property
    def pipelining(self) -> bool:
        """Whether the current connection pipelines (False before the first connection)."""
        return self._pipe is not None

    async def _connected(self) -> aiosmtplib.SMTP | _Pipeline:
        if self._pipe is not None and self._pipe.is_connected:
            return self._pipe
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        await self.close()
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=self.security == "tls",
            start_tls=self.security == "starttls",
            username=self.username,
            password=self.password,
        )
        try:
            await smtp.connect()
            await smtp.ehlo()
        except aiosmtplib.SMTPResponseException as error:
            smtp.close()
            raise TransientFailure(_describe(error)) from error
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            smtp.close()
            raise Unreachable(f"connect: {type(error).__name__}") from error
        self._open = False
        transport = smtp.protocol.transport if smtp.protocol is not None else None
        if (
            self.security == "none"
            and smtp.supports_extension("pipelining")
            and isinstance(transport, asyncio.Transport)
        ):
            self._pipe = _Pipeline(transport, self.timeout)
            return self._pipe
        self._smtp = smtp
        return smtp

    async def _refused(self, error: aiosmtplib.SMTPResponseException) -> Exception:
        if error.code in PROTOCOL_SEQUENCE:
            await self.close()  # the session's state is not what we think: start afresh
        else:
            await self.abort()
        return _refusal(error)

    async def begin(self, sender: str, recipient: str) -> None:
        if self._open or self._envelope is not None:
            await self.abort()  # an earlier hand-over stopped half-way
        smtp = await self._connected()
        if isinstance(smtp, _Pipeline):
            self._envelope = (_path(sender), _path(recipient))  # written with DATA
            return
        try:
            self._open = True
            await smtp.mail(sender)  # the body is 7-bit (wire_mail)
            await smtp.rcpt(recipient)
        except aiosmtplib.SMTPResponseException as error:
            raise await self._refused(error) from error
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            await self.close()
            raise Unreachable(f"envelope: {type(error).__name__}") from error

    async def finish(self, message: OutgoingMail) -> None:
        if self._pipe is not None:
            return await self._finish_pipelined(self._pipe, message)
        smtp = self._smtp
        if smtp is None or not smtp.is_connected or not self._open:
            # The connection dropped after MAIL/RCPT: a new one has no envelope, so DATA would be
            # refused (503) and look permanent. Nothing was handed over: try the mail again.
            await self.close()
            raise TransientFailure("connection lost before DATA")
        try:
            await smtp.data(message.data)
        except aiosmtplib.SMTPResponseException as error:
            # The server answered: it did not take the mail.
            raise await self._refused(error) from error
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            await self.close()
            raise Unconfirmed(f"data: {type(error).__name__}") from error
        self._open = False

    async def _finish_pipelined(self, pipe: _Pipeline, message: OutgoingMail) -> None:
        envelope, self._envelope = self._envelope, None
        if envelope is None or not pipe.is_connected:
            await self.close()  # as above: nothing was handed over, try the mail again
            raise TransientFailure("connection lost before DATA")
        sender, recipient = envelope
        try:
            self._open = True
            pipe.write(b"MAIL FROM:%s\r\nRCPT TO:%s\r\nDATA\r\n" % (sender, recipient))
            replies = [await pipe.reply() for _ in range(3)]
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            await self.close()
            raise Unreachable(f"envelope: {type(error).__name__}") from error
        for (code, text), expected in zip(replies, ((250,), (250, 251), (354,)), strict=True):
            if code not in expected:
                if replies[2][0] == 354:  # waits for content after a refused envelope: drop it
                    await self.close()
                raise await self._refused(aiosmtplib.SMTPResponseException(code, text))
        try:
            pipe.write(_dot_stuffed(message.data))
            code, text = await pipe.reply()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            await self.close()
            raise Unconfirmed(f"data: {type(error).__name__}") from error
        if code != 250:  # the server answered: it did not take the mail
            raise await self._refused(aiosmtplib.SMTPResponseException(code, text))
        self._open = False

    async def abort(self) -> None:
        """Drop a begun transaction (RSET) but keep the connection; a new one if RSET fails."""
        self._envelope = None
        if self._pipe is not None:
            if self._open and self._pipe.is_connected:
                try:
                    await self._pipe.command(b"RSET")
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    await self.close()
            self._open = False
            return
        if self._smtp is None or not self._smtp.is_connected:
            self._open = False
            return
        try:
            await self._smtp.rset()
            self._open = False
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            await self.close()

    async def close(self) -> None:
        self._open = False
        self._envelope = None
        if self._pipe is not None:
            pipe, self._pipe = self._pipe, None
            if pipe.is_connected:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                    await pipe.command(b"QUIT", (221,))
            pipe.close()
        if self._smtp is not None:
            smtp, self._smtp = self._smtp, None
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    smtp.close()
