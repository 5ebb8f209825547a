"""``/docs`` and ``/redoc`` work with no internet (issue 14): the pages name only this service's
own assets, and those answer with the right content type."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from shared.config import SERVICE_NAMES, Settings
from shared.runtime import create_app, load_spec

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def client(service: str) -> TestClient:
    return TestClient(create_app(load_spec(service), Settings(service=service)))


@pytest.mark.parametrize("service", SERVICE_NAMES)
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_page_loads_only_local_assets_and_they_answer(service: str, page: str) -> None:
    http = client(service)
    response = http.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert re.findall(r"(?:https?:)?//[\w.-]+", html) == []  # no other host, no CDN
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {a.rsplit(".", 1)[1] for a in assets} >= (
        {"js", "css", "png"} if page == "/docs" else {"js", "png"}
    )
    assert "/openapi.json" in html
    for asset in assets:
        assert urlsplit(asset).netloc == "" and asset.startswith("/docs/assets/"), asset
        answer = http.get(asset)
        assert answer.status_code == 200, asset
        suffix = "." + asset.rsplit(".", 1)[1]
        assert answer.headers["content-type"].startswith(CONTENT_TYPES[suffix]), asset
        assert len(answer.content) > 1000, asset


def test_swagger_ui_is_a_version_that_renders_openapi_3_1() -> None:
    """FastAPI writes OpenAPI 3.1, which Swagger UI renders from version 5 on."""
    http = client("ordering")
    assert http.get("/openapi.json").json()["openapi"].startswith("3.1")
    bundle = http.get("/docs/assets/swagger-ui-bundle.js").text
    assert re.search(r'PACKAGE_VERSION:"5\.\d+\.\d+"', bundle)


def test_the_docs_pages_are_not_part_of_the_api_contract() -> None:
    paths = client("invoicing").get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]
