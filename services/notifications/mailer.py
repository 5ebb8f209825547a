"""The mail-sender port and its SMTP adapter (aiosmtplib), one reused connection per worker.

A mail is handed over in two steps so the caller can record, durably, the moment after which
the server may hold the mail: ``begin`` (MAIL FROM, RCPT TO: nothing is delivered yet, and a
5xx here is a clean permanent refusal) and ``finish`` (DATA: the server takes responsibility
when it answers 250). If the connection breaks while we wait for that answer we cannot know
whether the mail was accepted: ``Unconfirmed``.

Header values are set through ``email.message.EmailMessage`` with the default policy, which
refuses CR/LF in any header, so no name, subject or address can inject headers.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from typing import Literal, Protocol

import aiosmtplib
from aiosmtplib.email import flatten_message

Security = Literal["none", "starttls", "tls"]


class PermanentFailure(Exception):
    """The server refused the mail for good (5xx): recorded, never retried."""


class TransientFailure(Exception):
    """The mail was not handed over (connection, timeout, 4xx): retried later."""


class Unreachable(TransientFailure):
    """No connection to the server: nothing else can be sent now either."""


class Unconfirmed(Exception):
    """The connection broke after the message was sent and before the server answered."""


class MailSender(Protocol):
    async def begin(self, sender: str, recipient: str) -> None: ...
    async def finish(self, message: EmailMessage) -> None: ...
    async def abort(self) -> None: ...
    async def close(self) -> None: ...


def compose(
    *, sender: str, recipient: str, subject: str, text: str, html: str, message_key: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    # A stable Message-ID per delivery lets a receiving server drop a resend.
    message["Message-ID"] = make_msgid(idstring=message_key, domain="subscription-platform")
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def _describe(error: aiosmtplib.SMTPResponseException) -> str:
    """The reply code and the server's words without an echoed address (no personal data)."""
    return f"{error.code} {error.message.split('<')[0].strip()}"[:200]


class SmtpSender:
    """One SMTP connection, opened on first use and reused until it breaks."""

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
        self._mail_options: list[str] = []

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
        self._mail_options = ["BODY=8BITMIME"] if smtp.supports_extension("8BITMIME") else []
        self._smtp = smtp
        return smtp

    async def begin(self, sender: str, recipient: str) -> None:
        smtp = await self._connected()
        try:
            await smtp.mail(sender, options=self._mail_options)
            await smtp.rcpt(recipient)
        except aiosmtplib.SMTPResponseException as error:
            await self.abort()
            if 500 <= error.code < 600:
                raise PermanentFailure(_describe(error)) from error
            raise TransientFailure(_describe(error)) from error
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            await self.close()
            raise Unreachable(f"envelope: {type(error).__name__}") from error

    async def finish(self, message: EmailMessage) -> None:
        smtp = self._smtp
        if smtp is None or not smtp.is_connected:
            # The connection dropped after MAIL/RCPT: a new one has no envelope, so DATA would be
            # refused (503) and look permanent. Nothing was handed over: try the mail again.
            await self.close()
            raise TransientFailure("connection lost before DATA")
        cte = "8bit" if self._mail_options else "7bit"
        try:
            await smtp.data(flatten_message(message, cte_type=cte))
        except aiosmtplib.SMTPResponseException as error:
            # The server answered: it did not take the mail.
            if 500 <= error.code < 600:
                raise PermanentFailure(_describe(error)) from error
            raise TransientFailure(_describe(error)) from error
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            await self.close()
            raise Unconfirmed(f"data: {type(error).__name__}") from error

    async def abort(self) -> None:
        """Drop a begun transaction (RSET) but keep the connection."""
        if self._smtp is None or not self._smtp.is_connected:
            return
        try:
            await self._smtp.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            await self.close()

    async def close(self) -> None:
        if self._smtp is not None:
            smtp, self._smtp = self._smtp, None
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    smtp.close()
