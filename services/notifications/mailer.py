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

import base64
import binascii
import unicodedata
import uuid
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


class SmtpSender:
    """One SMTP connection, opened on first use and reused until it breaks.

    A transaction left open by any error (the caller's included, e.g. a database error between
    ``begin`` and ``finish``) is reset (RSET, or a new connection if that fails) before the
    next MAIL FROM; a protocol-sequence reply drops the connection."""

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
        self._open = False  # MAIL FROM sent and the transaction not finished or reset

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
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
        self._smtp = smtp
        self._open = False
        return smtp

    async def _refused(self, error: aiosmtplib.SMTPResponseException) -> Exception:
        if error.code in PROTOCOL_SEQUENCE:
            await self.close()  # the session's state is not what we think: start afresh
        else:
            await self.abort()
        return _refusal(error)

    async def begin(self, sender: str, recipient: str) -> None:
        if self._open:
            await self.abort()  # an earlier hand-over stopped half-way
        smtp = await self._connected()
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

    async def abort(self) -> None:
        """Drop a begun transaction (RSET) but keep the connection; a new one if RSET fails."""
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
        if self._smtp is not None:
            smtp, self._smtp = self._smtp, None
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    smtp.close()
