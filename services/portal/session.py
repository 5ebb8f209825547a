"""The portal's session cookie and its protection of forms.

The session is a signed cookie (HMAC-SHA256 over its JSON, ``HttpOnly``, ``SameSite=Lax``,
``Secure`` over https): who signed in, to which account, and the bearer token the services
accept for that person. Nothing is stored on the server; the session ends when the bearer
token expires (ordering's token lifetime) or at sign-out.

Forms carry a CSRF token: the HMAC of a random value kept in its own cookie (a signed double
submit), checked on every POST. ``SameSite=Lax`` already keeps other sites' POSTs from carrying
the cookies; the token is the second lock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Literal
from urllib.parse import urlsplit

SESSION_COOKIE = "portal_session"
CSRF_COOKIE = "portal_csrf"
# Where a signed-out visitor was going (issue 15 [links]): kept by the browser that asked for a
# sign-in link, across the mail round trip, and read once when that link is used.
NEXT_COOKIE = "portal_next"
NEXT_MAX_AGE = 30 * 60  # the sign-in link lives 15 minutes; a little slack to read the mail
SIGN_IN_PATHS = ("/sign-in", "/sign-out", "/operator/sign-in")
Kind = Literal["user", "operator"]


@dataclass(frozen=True)
class Session:
    kind: Kind
    subject: str
    token: str
    expires: int  # unix seconds: the bearer token's expiry
    account_id: str | None = None
    account_name: str = ""
    time_zone: str = "UTC"
    name: str = ""
    email: str = ""
    language: str = "en"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, data: bytes) -> str:
    return _b64(hmac.new(key, data, hashlib.sha256).digest())


def seal(key: bytes, session: Session) -> str:
    body = json.dumps(asdict(session), separators=(",", ":")).encode()
    return f"{_b64(body)}.{_mac(key, body)}"


def unseal(key: bytes, cookie: str | None, now: float | None = None) -> Session | None:
    """The session in a cookie, or None when it is missing, forged, malformed or expired."""
    if not cookie or "." not in cookie:
        return None
    body_text, mac = cookie.rsplit(".", 1)
    try:
        body = _unb64(body_text)
    except ValueError:
        return None
    if not hmac.compare_digest(_mac(key, body), mac):
        return None
    try:
        session = Session(**json.loads(body))
    except (ValueError, TypeError):
        return None
    if session.expires <= (now if now is not None else time.time()):
        return None
    return session


def new_csrf_nonce() -> str:
    return secrets.token_urlsafe(24)


def csrf_token(key: bytes, nonce: str) -> str:
    return _mac(key, b"csrf:" + nonce.encode())


def csrf_ok(key: bytes, nonce: str | None, token: str | None) -> bool:
    if not nonce or not token:
        return False
    return hmac.compare_digest(csrf_token(key, nonce), token)


def safe_path(target: str | None) -> str:
    """A path of this site, else ``/`` (no open redirect). Refused: anything with a scheme or
    host (``https://evil``, ``//evil``, ``/\\evil``), whitespace or control characters (browsers
    drop a tab or newline, so ``/<TAB>/evil`` would become ``//evil``), non-ASCII and over-long
    values."""
    if not target or len(target) > 2048 or not target.isascii():
        return "/"
    if any(c <= " " or c in "\\\x7f" for c in target):
        return "/"
    if not target.startswith("/") or target.startswith("//"):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return "/"
    return target


def safe_next(target: str | None) -> str:
    """Where to send the browser after sign-in: a path of this site (``safe_path``) that is not
    a sign-in page itself (no loop), else ``/``."""
    path = safe_path(target)
    if any(path == p or path.startswith((p + "/", p + "?")) for p in SIGN_IN_PATHS):
        return "/"
    return path
