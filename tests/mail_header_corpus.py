"""Hostile and awkward header texts (issue 12, finding 1): what a name or subject may hold that
must never add, end or split a header. Shared by the unit and the SMTP-level tests."""

from __future__ import annotations

INJECTED = "Bcc: evil@attacker.example"


def _encoded_line_breaks() -> list[str]:
    """CR LF hidden in every encoded-word form: q and b, either case, utf-8 and iso-8859-1."""
    words: list[str] = []
    for charset in ("utf-8", "UTF-8", "iso-8859-1", "ISO-8859-1"):
        words += [
            f"=?{charset}?q?Fjord=0D=0ABcc:_evil@attacker.example?=",
            f"=?{charset}?Q?Fjord=0d=0aBcc:=20evil@attacker.example?=",
            f"=?{charset}?q?=0A?=Bcc: evil@attacker.example",
            f"=?{charset}?b?RmpvcmQNCkJjYzogZXZpbEBhdHRhY2tlci5leGFtcGxl?=",  # Fjord\r\nBcc: ...
            f"=?{charset}?B?DQpCY2M6IGV2aWxAYXR0YWNrZXIuZXhhbXBsZQ==?=",  # \r\nBcc: ...
        ]
    return words


CORPUS: list[str] = [
    "Fjord\r\nBcc: evil@attacker.example",
    "Fjord\rBcc: evil@attacker.example",
    "Fjord\nBcc: evil@attacker.example",
    "Fjord\r\n\r\nbody starts here",
    *_encoded_line_breaks(),
    "=?utf-8?q?Fjord?= =?utf-8?q?=0D=0A?= =?utf-8?q?Bcc:_evil@attacker.example?=",
    "Fjord\u0085Bcc: evil@attacker.example",
    "Fjord\u2028Bcc: evil@attacker.example",
    "Fjord\u2029Bcc: evil@attacker.example",
    "Fjord\x0bBcc:\x0cevil@attacker.example\x00",
    'Fjord "AS" <evil@attacker.example>, Cc: other@attacker.example',
    "Fjord =? ?= ?=\\ =?",
    "Ærlige Øyvind & Åse AS",
    "Fjørd Arkitekter 株式会社 🏔️",
    "x" * 2000,
    ("Fjord Arkitekter AS " * 60).strip(),
    "Æ" * 500,
]
