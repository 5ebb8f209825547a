"""Issue 17: the pipelined SMTP connection (``mailer._Pipeline``) reads replies in the order of
the commands however the bytes arrive: several replies in one segment, one reply split over
segments, multi-line replies; a broken or malformed stream is an error, never a reply."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from services.notifications.mailer import _Pipeline


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False
        self.protocol: asyncio.BaseProtocol | None = None

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def test_replies_come_out_in_order_however_the_bytes_are_cut() -> None:
    transport = Transport()
    pipe = _Pipeline(transport, timeout=1)
    assert transport.protocol is pipe
    pipe.write(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    pipe.data_received(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n35")
    assert await pipe.reply() == (250, "2.1.0 Ok")
    pending = asyncio.ensure_future(pipe.reply())
    assert await pending == (250, "2.1.5 Ok")
    third = asyncio.ensure_future(pipe.reply())
    await asyncio.sleep(0)
    assert not third.done()  # "35" is not a reply yet
    pipe.data_received(b"4 End data with <CR><LF>.<CR><LF>\r\n")
    assert await third == (354, "End data with <CR><LF>.<CR><LF>")
    pipe.data_received(b"250-first line\r\n250-second")
    pipe.data_received(b" line\r\n250 last\n")  # a bare LF ends a line too
    assert await pipe.reply() == (250, "first line\nsecond line\nlast")
    assert transport.written == [b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"]


async def test_a_broken_connection_fails_the_waiting_reply_and_every_later_write() -> None:
    pipe = _Pipeline(Transport(), timeout=1)
    waiting = asyncio.ensure_future(pipe.reply())
    await asyncio.sleep(0)
    pipe.connection_lost(None)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await waiting
    assert not pipe.is_connected
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        pipe.write(b"RSET\r\n")


async def test_a_malformed_reply_is_an_error_not_a_reply() -> None:
    transport = Transport()
    pipe = _Pipeline(transport, timeout=1)
    pipe.data_received(b"2x0 nonsense\r\n")
    with pytest.raises(aiosmtplib.SMTPResponseException):
        await pipe.reply()
    assert transport.closed


async def test_no_reply_within_the_timeout_is_a_timeout() -> None:
    pipe = _Pipeline(Transport(), timeout=0.01)
    with pytest.raises(TimeoutError):
        await pipe.reply()


async def test_a_reply_already_read_is_not_lost_when_more_arrive_before_it_is_taken() -> None:
    """What aiosmtplib's protocol cannot do (it keeps one reply and drops what comes while
    that one waits to be taken): here every reply waits its turn."""
    pipe = _Pipeline(Transport(), timeout=1)
    pipe.data_received(b"250 one\r\n")
    pipe.data_received(b"250 two\r\n")
    pipe.data_received(b"354 three\r\n")
    assert [await pipe.reply() for _ in range(3)] == [(250, "one"), (250, "two"), (354, "three")]
