"""Tracing is exported over OTLP/HTTP when an endpoint is configured and off otherwise (issue
14). Each case runs in a fresh interpreter (a tracer provider is installed once per process)
against a real HTTP listener standing in for the collector."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
from shared import tracing
print("configured" if tracing.configure("invoicing") else "off")
with tracing.span("invoicing", "gateway charge", kind=tracing.CLIENT, parent=""):
    print(tracing.current_traceparent())
tracing.shutdown()
"""


class Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # http.server's name for it
        body = self.rfile.read(int(self.headers["Content-Length"] or 0))
        Collector.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[str]:
    Collector.received = []
    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def run(env: dict[str, str]) -> list[str]:
    clean = {"PATH": "/usr/bin:/bin", **env}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split()


def test_spans_go_to_the_configured_otlp_endpoint(collector: str) -> None:
    configured, traceparent = run({"OTEL_EXPORTER_OTLP_ENDPOINT": collector})
    assert configured == "configured"
    version, _, _, flags = traceparent.split("-")
    assert version == "00" and int(flags, 16) & 1  # recorded: the sampled flag
    ((path, body),) = Collector.received
    assert path == "/v1/traces"
    assert b"gateway charge" in body and b"invoicing" in body  # span name, service.name


def test_without_an_endpoint_nothing_is_recorded_or_sent(collector: str) -> None:
    configured, traceparent = run({})
    assert configured == "off"
    assert traceparent == "None"  # the no-op tracer: no context made up
    assert Collector.received == []
