"""The mail-sender port and its SMTP adapter (aiosmtplib).

Header values are set through ``email.message.EmailMessage`` with the default policy, which
refuses CR/LF in any header, so no name or subject can inject headers.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from typing import Protocol

import aiosmtplib


class PermanentFailure(Exception):
    """The server refused the mail for good (5xx): recorded, never retried."""


class TransientFailure(Exception):
    """The mail could not be handed over now (connection, timeout, 4xx): retried later."""


class MailSender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


def compose(
    *, sender: str, recipient: str, subject: str, text: str, html: str, message_key: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    # A stable Message-ID per delivery lets a receiving server drop a resend after a crash.
    message["Message-ID"] = make_msgid(idstring=message_key, domain="subscription-platform")
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


class SmtpSender:
    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout

    async def send(self, message: EmailMessage) -> None:
        try:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                timeout=self.timeout,
                start_tls=False,
            )
        except aiosmtplib.SMTPResponseException as error:
            if 500 <= error.code < 600:
                raise PermanentFailure(f"{error.code} {error.message}") from error
            raise TransientFailure(f"{error.code} {error.message}") from error
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            raise TransientFailure(f"{type(error).__name__}: {error}") from error
