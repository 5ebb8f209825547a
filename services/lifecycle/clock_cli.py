"""Test clocks from the command line (operators): ``python -m services.lifecycle.clock_cli``.

    create --at 2030-01-01T09:00:00+01:00 [--name NAME]   prints the clock id
    advance CLOCK_ID --to 2031-01-01T00:00:00+01:00        waits until the system has settled
    show CLOCK_ID

It mints a short-lived operator token with PLATFORM_JWT_SECRET (so it needs the same secret as
the services) and talks to lifecycle at --url (default http://127.0.0.1:8003).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx

from shared.auth import issue_token
from shared.config import Settings
from shared.time.clock import SystemClock

from .schemas import TestClockView


def operator_headers() -> dict[str, str]:
    token = issue_token(
        Settings(service="lifecycle"),
        SystemClock(),
        subject=uuid.uuid4(),
        kind="operator",
        ttl=timedelta(minutes=30),
    )
    return {"Authorization": f"Bearer {token}"}


def call(method: str, url: str, body: dict[str, Any] | None = None) -> TestClockView:
    response = httpx.request(method, url, json=body, headers=operator_headers(), timeout=10)
    if response.status_code >= 400:
        sys.exit(f"{response.status_code}: {response.text}")
    return TestClockView.model_validate_json(response.content)


def wait_ready(base: str, clock_id: uuid.UUID, timeout: float) -> TestClockView:
    started = time.monotonic()
    last_now: datetime | None = None
    while True:
        clock = call("GET", f"{base}/v1/test-clocks/{clock_id}")
        if clock.now != last_now:
            now = clock.now.isoformat()
            print(f"  {clock.status:9s} now {now} (step {clock.step})", flush=True)
            last_now = clock.now
        if clock.status == "ready":
            return clock
        if time.monotonic() - started > timeout:
            sys.exit(f"still advancing after {timeout:.0f} s; see the services' logs")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Operate test clocks.")
    parser.add_argument("--url", default="http://127.0.0.1:8003")
    parser.add_argument("--timeout", type=float, default=120)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create")
    create.add_argument("--at", required=True, type=datetime.fromisoformat)
    create.add_argument("--name", default="test clock")
    advance = commands.add_parser("advance")
    advance.add_argument("clock_id", type=uuid.UUID)
    advance.add_argument("--to", required=True, type=datetime.fromisoformat)
    show = commands.add_parser("show")
    show.add_argument("clock_id", type=uuid.UUID)
    args = parser.parse_args(argv)
    if args.command == "create":
        if args.at.tzinfo is None:
            parser.error("--at needs an offset, e.g. 2030-01-01T09:00:00+01:00")
        clock = call(
            "POST",
            f"{args.url}/v1/test-clocks",
            {"frozen_time": args.at.isoformat(), "name": args.name},
        )
        wait_ready(args.url, clock.id, args.timeout)
        print(clock.id)
    elif args.command == "advance":
        if args.to.tzinfo is None:
            parser.error("--to needs an offset, e.g. 2031-01-01T00:00:00+01:00")
        call(
            "POST",
            f"{args.url}/v1/test-clocks/{args.clock_id}/advance",
            {"to": args.to.isoformat()},
        )
        wait_ready(args.url, args.clock_id, args.timeout)
    else:
        print(call("GET", f"{args.url}/v1/test-clocks/{args.clock_id}").model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
