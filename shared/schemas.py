"""Field types every service's HTTP models share, so an answer reads the same from all four."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import PlainSerializer, WithJsonSchema

# An instant as ``datetime.isoformat()`` writes it (``+00:00``, not pydantic's ``Z``): what
# clients have always read from these services.
Instant = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
