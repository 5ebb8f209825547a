"""Field types every service's HTTP models share: an answer reads the same from all four, and
every text field of a request refuses control characters the same way (a 422 naming it)."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, PlainSerializer, WithJsonSchema

# An instant as ``datetime.isoformat()`` writes it (``+00:00``, not pydantic's ``Z``): what
# clients have always read from these services.
Instant = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


# Characters no text field takes: C0/C1 controls (NUL, CR, LF, ESC, U+0085 ...), the Unicode
# line and paragraph separators, and the bidirectional overrides that make text read other
# than it is stored. A newline in free text (notes) is the one exception, where asked for.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def refuse_control_characters(value: str, allow_newlines: bool = False) -> str:
    for char in value:
        if allow_newlines and char == "\n":
            continue
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS:
            raise ValueError(f"must not contain control characters (found U+{ord(char):04X})")
    return value


def _multiline(value: str) -> str:
    return refuse_control_characters(value, allow_newlines=True)


# Every text field of every request goes through one of these (add length with Field(...)).
Text = Annotated[str, AfterValidator(refuse_control_characters)]
MultilineText = Annotated[str, AfterValidator(_multiline)]
Name = Annotated[
    str, Field(min_length=1, max_length=200), AfterValidator(refuse_control_characters)
]
