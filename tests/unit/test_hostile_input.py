"""Hostile input and operator mistakes, answered in shared/ (issue 12, findings 4, 5, 9)."""

from __future__ import annotations

import asyncpg
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field, ValidationError

from shared import problems
from shared.config import DEVELOPMENT_JWT_SECRET, Settings
from shared.problems import INFRASTRUCTURE_ERRORS
from shared.schemas import MultilineText, Text
from tests.unit.test_compose_file import COMPOSE_FILE

REFUSED = {
    "NUL": "a\u0000b",
    "CR": "a\rb",
    "LF": "a\nb",
    "ESC": "a\x1bb",
    "DEL": "a\x7fb",
    "NEL (U+0085)": "a\u0085b",
    "LINE SEPARATOR": "a\u2028b",
    "PARAGRAPH SEPARATOR": "a\u2029b",
    "RIGHT-TO-LEFT OVERRIDE": "invoice\u202efdp.exe",
    "FIRST STRONG ISOLATE": "a\u2068b",
}
ACCEPTED = ["Fjord AS", "Ærlig Øl & Å-bakeri", "Ōsaka 株式会社", "Zoë 👩‍💻", "O'Brien-Smith"]


class Form(BaseModel):
    name: Text = Field(max_length=200)
    notes: MultilineText | None = None


@pytest.mark.parametrize("text", REFUSED.values(), ids=REFUSED.keys())
def test_every_text_field_refuses_control_characters(text: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Form(name=text)
    assert [e["loc"] for e in refused.value.errors()] == [("name",)]


@pytest.mark.parametrize("text", ACCEPTED)
def test_names_in_any_script_are_accepted(text: str) -> None:
    assert Form(name=text).name == text


def test_free_text_keeps_its_line_breaks_and_nothing_else() -> None:
    assert Form(name="x", notes="line one\nline two").notes == "line one\nline two"
    with pytest.raises(ValidationError):
        Form(name="x", notes="line one\r\nBcc: evil@example.com")


def app_raising(error: Exception) -> FastAPI:
    app = FastAPI()
    problems.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.InternalClientError("unexpected connection_lost() call"),
        ConnectionRefusedError(111, "Connect call failed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_database_restart_answers_503_with_retry_after(error: Exception) -> None:
    """Finding 5: a problem document with Retry-After, never a plain-text 500; and the
    consumers count the same errors as infrastructure (nacked, never dead-lettered)."""
    answer = TestClient(app_raising(error), raise_server_exceptions=False).get("/boom")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["type"].endswith(":service-unavailable")
    assert isinstance(error, INFRASTRUCTURE_ERRORS)


def test_an_assertion_in_product_code_answers_a_500_problem() -> None:
    answer = TestClient(app_raising(AssertionError()), raise_server_exceptions=False).get("/boom")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["correlation_id"]


def test_the_public_development_secret_is_refused_unless_development_mode_is_on() -> None:
    """Finding 9: one development secret everywhere, accepted only when asked for."""
    assert Settings().jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET
    refusal = Settings().refusal()
    assert refusal is not None and "PLATFORM_DEVELOPMENT_MODE=true" in refusal
    assert Settings(jwt_secret="short").refusal() is not None
    assert Settings(development_mode=True).refusal() is None
    assert Settings(jwt_secret="x" * 40).refusal() is None


def test_compose_uses_the_same_development_secret() -> None:
    env = yaml.safe_load(COMPOSE_FILE.read_text())["x-environment"]
    assert DEVELOPMENT_JWT_SECRET in env["PLATFORM_JWT_SECRET"]
    assert env["PLATFORM_DEVELOPMENT_MODE"] == "${PLATFORM_DEVELOPMENT_MODE:-false}"
