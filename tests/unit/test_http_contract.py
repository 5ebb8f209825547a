"""The published HTTP contract (issue 10): every operation of every service declares what it
answers, its problem documents and the bearer scheme, with a summary written for a person."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.config import SERVICE_NAMES, Settings
from shared.problems import MEDIA_TYPE
from shared.runtime import create_app, load_spec

OPERATIONS = ("/health", "/ready", "/metrics", "/asyncapi.json")


def contract(service: str) -> dict[str, Any]:
    return create_app(load_spec(service), Settings(service=service)).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_every_success_answer_has_a_schema_and_every_operation_a_summary(service: str) -> None:
    for path, method, operation in operations(contract(service)):
        assert operation.get("summary"), f"{method} {path}: no summary"
        assert " " in operation["summary"], f"{method} {path}: a function name as summary"
        successes = {s: r for s, r in operation["responses"].items() if s.startswith("2")}
        assert successes, f"{method} {path}: no success answer"
        for status, response in successes.items():
            if status == "204":
                continue
            schemas = [c.get("schema") for c in response.get("content", {}).values()]
            assert schemas and all(schemas), f"{method} {path} {status}: no schema"


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_errors_are_declared_as_problem_documents_with_examples(service: str) -> None:
    document = contract(service)
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, method, operation in operations(document):
        if path in OPERATIONS:
            continue
        errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
        assert errors, f"{method} {path}: no problem answers declared"
        for status, response in errors.items():
            content = response["content"]
            assert list(content) == [MEDIA_TYPE], f"{method} {path} {status}: {list(content)}"
            assert content[MEDIA_TYPE]["schema"] == {"$ref": "#/components/schemas/ProblemDocument"}
            assert content[MEDIA_TYPE]["example"]["status"] == int(status)
        if operation.get("security"):
            assert "401" in errors, f"{method} {path}: secured but no 401 declared"


def test_pdf_and_metrics_declare_their_media_types() -> None:
    invoicing = contract("invoicing")
    pdf = invoicing["paths"]["/v1/invoices/{invoice_id}.pdf"]["get"]["responses"]["200"]
    assert list(pdf["content"]) == ["application/pdf"]
    metrics = invoicing["paths"]["/metrics"]["get"]["responses"]["200"]
    assert any(media.startswith("text/plain") for media in metrics["content"])


def test_an_unexpected_error_answers_a_problem_with_a_correlation_id() -> None:
    """A failing route (here: no runtime, the service was never started) answers a 500 problem
    document carrying the request's id, never a plain-text 500."""
    app = create_app(load_spec("lifecycle"), Settings(service="lifecycle"))
    app.state.runtime = None
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: nothing started
    answer = client.get("/ready", headers={"X-Request-ID": "req-42"})
    assert answer.status_code == 500
    assert answer.headers["content-type"] == MEDIA_TYPE
    body = answer.json()
    assert body["type"].endswith(":internal-error")
    assert body["correlation_id"] == "req-42"
