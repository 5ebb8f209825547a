"""Issue 17: ``mailer.wire_mail`` writes the mail's bytes directly (the email package's header
registry and generator were a third of a hand-over). Held to the reference, ``mailer.compose``
flattened by aiosmtplib as before: for every template in both languages, every name of the
header-injection corpus (issue 12) and bodies chosen to hit each encoding rule, both parse back
with the email package to the same headers, the same two parts, the same charset and content."""

from __future__ import annotations

import email
import email.policy
import uuid
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any

import pytest
from aiosmtplib.email import flatten_message

from services.notifications import domain
from services.notifications.mailer import compose, header_text, message_id_for, wire_mail
from shared.config import Settings
from tests.mail_header_corpus import CORPUS
from tests.unit.test_notifications_mails import CASES, rendered

HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"]
DATE = datetime(2026, 11, 29, 13, 5, tzinfo=UTC)
MESSAGE_ID = message_id_for(uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427"))
SENDER = "Subscriptions <no-reply@subscriptions.example>"


def both(**fields: Any) -> tuple[bytes, bytes]:
    """The reference's bytes (8-bit and 7-bit servers alike) and ``wire_mail``'s."""
    mail = {
        "sender": SENDER,
        "recipient": "kari@example.com",
        "subject": "s",
        "text": "text",
        "html": "<p>html</p>",
        "message_id": MESSAGE_ID,
        "date": DATE,
        **fields,
    }
    reference = flatten_message(compose(**mail), cte_type="8bit")
    return reference, wire_mail(**mail).data


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def reading(raw: bytes) -> dict[str, object]:
    """What a receiver reads: every header but the boundary, each part's type, charset and
    content (line ends as the parser gives them)."""
    message = parsed(raw)
    return {
        **{name: message.get_all(name) for name in HEADERS[:-1]},
        "type": message.get_content_type(),
        "defects": message.defects,
        "parts": [
            (p.get_content_type(), p.get_content_charset(), p.get_content(), p.defects)
            for p in message.iter_parts()
        ],
    }


def head_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def assert_safe_head(raw: bytes) -> None:
    lines = head_lines(raw)
    assert all(len(line) <= 78 for line in lines)
    assert all(0x20 <= byte < 0x7F for line in lines for byte in line)  # 7-bit, no CR or LF
    # every line is a known header or a continuation (starts with white space)
    assert [line.split(b":")[0].decode() for line in lines if line[:1] not in b" \t"] == HEADERS


@pytest.mark.parametrize(("event_type", "template"), CASES)
@pytest.mark.parametrize("language", domain.LANGUAGES)
def test_every_template_reads_the_same_as_the_email_packages_mail(
    event_type: str, template: str, language: str
) -> None:
    mail = rendered(template, event_type, language)
    reference, wire = both(
        sender=Settings().mail_from, subject=mail.subject, text=mail.text, html=mail.html
    )
    assert_safe_head(wire)
    read = reading(wire)
    assert read == reading(reference)
    assert read["Message-ID"] == [MESSAGE_ID]
    assert read["Date"] == ["Sun, 29 Nov 2026 13:05:00 +0000"]
    assert [(t, c) for t, c, _, _ in read["parts"]] == [  # type: ignore[attr-defined]
        ("text/plain", "utf-8"),
        ("text/html", "utf-8"),
    ]
    assert wire.isascii()  # 7-bit: any server takes it, 8BITMIME or not


@pytest.mark.parametrize("name", CORPUS, ids=range(len(CORPUS)))
def test_no_name_in_a_subject_or_a_display_name_adds_or_splits_a_header(name: str) -> None:
    reference, wire = both(
        subject=f"You are now an administrator of {name}",
        sender=f"{header_text(name)} <no-reply@subscriptions.example>".replace('"', ""),
    )
    assert_safe_head(wire)
    assert reading(wire) == reading(reference)
    message = parsed(wire)
    assert message["Bcc"] is None and message["Cc"] is None
    assert message["Subject"] == f"You are now an administrator of {header_text(name)}"
    # the display name decoded as RFC 2047 says (adjacent encoded words join)
    back = email.message_from_bytes(wire, policy=email.policy.compat32)
    reference_back = email.message_from_bytes(reference, policy=email.policy.compat32)
    for header in ("From", "To"):
        [(display, address)] = getaddresses(back.get_all(header) or [])
        [(expected, expected_address)] = getaddresses(reference_back.get_all(header) or [])
        assert str(make_header(decode_header(display))) == str(make_header(decode_header(expected)))
        assert address == expected_address


@pytest.mark.parametrize(
    "body",
    [
        "",
        "plain ASCII\nin two lines\n",
        "x" * 78 + "\n" + "y" * 79,  # at and over the line limit
        "Blåbær og æøå, ÆØÅ\n",  # 8-bit text in short lines
        "trailing space \ntrailing tab\t\nan = sign and =_ and =?utf-8?q?x?=\n",
        ".\n..\n.starts with a dot\nFrom the start\n",
        "-- \nsignature\n",
        "cr\rlf\ncrlf\r\nvt\x0bff\x0cls\u2028ps\u2029nel\x85end",  # what splitlines splits
        "ø" * 300,  # one long non-ASCII line
        "\n\n\nblank lines\n\n",
    ],
)
def test_each_body_encoding_reads_back_as_the_email_packages(body: str) -> None:
    reference, wire = both(text=body, html=f"<p>{body}</p>")
    assert reading(wire) == reading(reference)
    assert wire.isascii()


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
        wire_mail(
            sender="no-reply@subscriptions.example",
            recipient=recipient,
            subject="s",
            text="t",
            html="h",
            message_id="<a@subscription-platform>",
            date=DATE,
        )


@pytest.mark.parametrize("message_id", ["<a@b>\r\nBcc: x@y", "a@b", "<a b@c>"])
def test_a_message_id_that_is_not_one_token_is_refused(message_id: str) -> None:
    with pytest.raises(ValueError):
        wire_mail(
            sender="no-reply@subscriptions.example",
            recipient="kari@example.com",
            subject="s",
            text="t",
            html="h",
            message_id=message_id,
            date=DATE,
        )


def test_the_boundary_never_occurs_in_a_part() -> None:
    """A text that contains the first boundary tried makes the writer choose another."""
    first = uuid.UUID("00000000-0000-4000-8000-000000000000")
    text = f"--=_{first.hex}\n"
    with pytest.MonkeyPatch.context() as patch:
        draws = iter([first, uuid.uuid4()])
        patch.setattr(uuid, "uuid4", lambda: next(draws))
        raw = wire_mail(
            sender=SENDER,
            recipient="kari@example.com",
            subject="s",
            text=text,
            html="h",
            message_id=MESSAGE_ID,
            date=DATE,
        ).data
    assert f'boundary="=_{first.hex}"' not in raw.decode()
    [plain, _] = parsed(raw).iter_parts()
    assert plain.get_content().replace("\r\n", "\n") == text
