"""Issue 12, finding 1: no name, subject or address can add, end or split a mail header. Every
header is a structured value written by ``mailer.compose``; the corpus is parsed back from the
bytes that go on the wire."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import getaddresses

import pytest
from aiosmtplib.email import flatten_message

from services.notifications.mailer import MAIL_POLICY, compose, header_text
from tests.mail_header_corpus import CORPUS

HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"]
DATE = datetime(2026, 11, 29, 13, 5, tzinfo=UTC)


def wire(subject: str, sender: str = "Subscriptions <no-reply@subscriptions.example>") -> bytes:
    message = compose(
        sender=sender,
        recipient="kari@example.com",
        subject=subject,
        text="text",
        html="<p>html</p>",
        message_id="<1b4e28ba-2fa1-11d2-883f-0016d3cca427@subscription-platform>",
        date=DATE,
    )
    return flatten_message(message, cte_type="8bit")


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@pytest.mark.parametrize("name", CORPUS, ids=range(len(CORPUS)))
def test_no_text_in_a_subject_adds_or_splits_a_header(name: str) -> None:
    raw = wire(f"You are now an administrator of {name}")
    head = raw.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    assert all(len(line) <= 78 for line in lines)
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert all(0x20 <= byte < 0x7F for byte in head.replace(b"\r\n", b""))  # 7-bit headers
    # every line is a known header or a continuation (starts with white space)
    assert [line.split(b":")[0].decode() for line in lines if line[:1] not in b" \t"] == HEADERS
    message = parsed(raw)
    assert message.get_all("To") == ["kari@example.com"]
    assert message["Bcc"] is None and message["Cc"] is None
    assert message["Subject"] == f"You are now an administrator of {header_text(name)}"
    assert message.get_body(("plain",)).get_content().strip() == "text"  # type: ignore[union-attr]


@pytest.mark.parametrize("name", CORPUS, ids=range(len(CORPUS)))
def test_a_display_name_is_literal_text_and_each_address_header_one_address(name: str) -> None:
    """From and To take ``headerregistry.Address`` objects under ``MAIL_POLICY``; the
    standard library's own address header would decode the encoded CR LF (CPython < 3.11.10)."""
    if "\r" in name or "\n" in name:
        with pytest.raises(ValueError):  # the standard library refuses a literal CR or LF
            Address(display_name=name, addr_spec="kari@example.com")
        name = header_text(name)
    message = EmailMessage(policy=MAIL_POLICY)
    message["From"] = Address(display_name=name, addr_spec="no-reply@subscriptions.example")
    message["To"] = Address(display_name=name, addr_spec="kari@example.com")
    message.set_content("text")
    raw = flatten_message(message)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    back = email.message_from_bytes(raw, policy=email.policy.compat32)  # raw header values
    expected = {"From": "no-reply@subscriptions.example", "To": "kari@example.com"}
    for header, addr_spec in expected.items():
        [(display, address)] = getaddresses(back.get_all(header) or [])
        # decoded as RFC 2047 says: adjacent encoded words join without the space between
        # (CPython 3.11's own address parser keeps that space)
        decoded = str(make_header(decode_header(display)))
        assert (decoded, address) == (header_text(name), addr_spec)
    assert back.keys() == [
        "From",
        "To",
        "Content-Type",
        "Content-Transfer-Encoding",
        "MIME-Version",
    ]


def test_header_text_collapses_every_line_break_and_control_character() -> None:
    assert header_text("a\r\nb\rc\nd\u0085e\u2028f\u2029g\x00h\tI  J\u200bK") == (
        "a b c d e f g h I J K"
    )


@pytest.mark.parametrize(
    "recipient",
    [
        "x@example.com\r\nBcc: evil@attacker.example",
        "x@example.com, evil@attacker.example",
        "Kari <x@example.com>",
        "=?utf-8?q?x=0D=0A?=@example.com",
        "x",
        "",
    ],
)
def test_an_address_that_is_not_one_plain_mailbox_is_refused(recipient: str) -> None:
    with pytest.raises(ValueError):
        compose(
            sender="no-reply@subscriptions.example",
            recipient=recipient,
            subject="s",
            text="t",
            html="h",
            message_id="<a@subscription-platform>",
            date=DATE,
        )
