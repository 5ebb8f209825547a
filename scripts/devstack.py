"""Run the four services on the local stack, and the demo: ``python scripts/devstack.py --help``.

start   start ordering, invoicing, lifecycle and notifications in the background
        (logs in .local/logs/<service>.log); idempotent
stop    stop them
status  one line per service
demo    start what is needed, then take one purchase end to end and show each step
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("STACK_HOME", REPO / ".local"))
SERVICES = {"ordering": 8001, "invoicing": 8002, "lifecycle": 8003, "notifications": 8004}
MAIL_UI = "http://127.0.0.1:1080"
T = TypeVar("T")


def say(message: str) -> None:
    print(f"[devstack] {message}", flush=True)


def pid_file(service: str) -> Path:
    return STATE / "run" / f"{service}.pid"


def running_pid(service: str) -> int | None:
    try:
        pid = int(pid_file(service).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def healthy(service: str) -> bool:
    try:
        response = httpx.get(f"http://127.0.0.1:{SERVICES[service]}/ready", timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def start() -> None:
    (STATE / "run").mkdir(parents=True, exist_ok=True)
    (STATE / "logs").mkdir(parents=True, exist_ok=True)
    for service, port in SERVICES.items():
        if running_pid(service) or healthy(service):
            say(f"{service}: already running on :{port}")
            continue
        log = (STATE / "logs" / f"{service}.log").open("ab")
        env = {
            **os.environ,
            "PLATFORM_SERVICE": service,
            "PLATFORM_HTTP_PORT": str(port),
            "PLATFORM_DATABASE_URL": f"postgresql://platform:platform@127.0.0.1:5432/{service}",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pid_file(service).write_text(str(process.pid))
    started = time.monotonic()
    for service, port in SERVICES.items():
        while not healthy(service):
            if running_pid(service) is None:
                log_path = STATE / "logs" / f"{service}.log"
                tail = "\n".join(log_path.read_text().splitlines()[-20:])
                sys.exit(
                    f"[devstack] {service} stopped during start-up:\n{tail}\n"
                    f"Is the stack up? Run: deploy/local/stack up"
                )
            if time.monotonic() - started > 90:
                sys.exit(
                    f"[devstack] {service} not ready after 90 s; see .local/logs/{service}.log"
                )
            time.sleep(0.2)
        say(f"{service}: ready on http://127.0.0.1:{port} (API docs at /docs)")


def stop() -> None:
    for service in SERVICES:
        pid = running_pid(service)
        if pid is None:
            say(f"{service}: not running")
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while running_pid(service) and time.monotonic() < deadline:
            time.sleep(0.1)
        if running_pid(service):
            os.kill(pid, signal.SIGKILL)
        pid_file(service).unlink(missing_ok=True)
        say(f"{service}: stopped")


def status() -> int:
    missing = 0
    for service, port in SERVICES.items():
        ok = healthy(service)
        missing += not ok
        say(f"{service:14s} {'ready' if ok else 'not running':12s} :{port}")
    return 3 if missing else 0


async def wait_for(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.2)
    sys.exit(f"[demo] gave up waiting for {what} after {timeout:.0f} s; see .local/logs/")


def url(service: str, path: str) -> str:
    return f"http://127.0.0.1:{SERVICES[service]}{path}"


async def demo() -> None:
    started = time.monotonic()
    buyer = f"kari.nordmann+{uuid.uuid4().hex[:6]}@example.com"
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            url("ordering", "/v1/accounts"),
            headers={"Idempotency-Key": str(uuid.uuid4())},
            json={
                "name": "Fjord Arkitekter AS",
                "country": "NO",
                "currency": "NOK",
                "language": "nb",
                "time_zone": "Europe/Oslo",
                "buyer": {"email": buyer, "name": "Kari Nordmann"},
            },
        )
        response.raise_for_status()
        account = response.json()
        auth = {"Authorization": f"Bearer {account['token']}"}
        say(f"account opened: {account['name']} ({account['id']}), buyer {buyer}")

        response = await http.post(
            url("ordering", f"/v1/accounts/{account['id']}/orders"),
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
            json={"offering": "autocad", "term": "annual", "seats": 1, "payment_method": "card"},
        )
        response.raise_for_status()
        order = response.json()
        print(f"  order number:     {order['order_number']}  (AutoCAD, annual, 1 seat, card)")

        async def paid_invoice() -> dict[str, Any] | None:
            r = await http.get(
                url("invoicing", f"/v1/accounts/{account['id']}/invoices"), headers=auth
            )
            items = [i for i in r.json().get("items", []) if i["status"] == "paid"]
            return items[0] if items else None

        invoice = await wait_for(paid_invoice, "the invoice")
        print(
            f"  invoice:          {invoice['invoice_number']}  total "
            f"{invoice['currency']} {Decimal(invoice['gross_total']):,.2f} incl. VAT "
            f"{Decimal(invoice['vat_total']):,.2f} (25 % MVA), paid by card"
        )

        async def subscription() -> dict[str, Any] | None:
            r = await http.get(
                url("lifecycle", f"/v1/subscriptions/{order['subscription_id']}"), headers=auth
            )
            return r.json() if r.status_code == 200 else None

        sub = await wait_for(subscription, "the subscription")
        zone = ZoneInfo(sub["time_zone"])
        expires = datetime.fromisoformat(sub["expires_at"]).astimezone(zone)
        print(
            f"  subscription:     {sub['stage']}, expires {expires:%Y-%m-%d %H:%M:%S} "
            f"{sub['time_zone']} (renews the next day at 00:00 with auto-renew on)"
        )

        async def mail() -> dict[str, Any] | None:
            r = await http.get(
                url("notifications", f"/v1/accounts/{account['id']}/emails"), headers=auth
            )
            sent = [d for d in r.json().get("items", []) if d["status"] == "sent"]
            return sent[0] if sent else None

        delivery = await wait_for(mail, "the confirmation mail")
        print(
            f'  confirmation:     "{delivery["subject"]}" -> {delivery["recipient"]} '
            f"({', '.join(delivery['roles'])})"
        )
    say(f"purchase taken end to end in {time.monotonic() - started:.1f} s")
    say(f"read the mail in the mail catcher: {MAIL_UI}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["start", "stop", "status", "demo"])
    args = parser.parse_args()
    if args.command == "start":
        start()
    elif args.command == "stop":
        stop()
    elif args.command == "status":
        return status()
    else:
        start()
        asyncio.run(demo())
    return 0


if __name__ == "__main__":
    sys.exit(main())
