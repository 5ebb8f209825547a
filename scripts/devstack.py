"""Run the four services on the local stack, and the demo: ``python scripts/devstack.py --help``.

start   start ordering, invoicing, lifecycle, notifications and the portal (:8005) in the background
        (logs in .local/logs/<service>.log) with test clocks enabled; idempotent (a service
        it started without test clocks is restarted)
stop    stop them
status  one line per service
demo    start what is needed, then play a subscription's whole life on a fresh test clock
        (scripts/demo_story.py): purchase, renewal, lapse, Expired, Suspended, Cancelled
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
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("STACK_HOME", REPO / ".local"))
SERVICES = {
    "ordering": 8001,
    "invoicing": 8002,
    "lifecycle": 8003,
    "notifications": 8004,
    "portal": 8005,  # issue 16: no database; calls the four services' APIs
}
MAIL_UI = "http://127.0.0.1:1080"


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


# What devstack gives every service besides its name, port and database: development mode and
# test clocks on (development tools, never for production) and a short timer poll, so that a test
# clock's steps settle quickly. A running service started with other flags is restarted.
FLAGS = {
    "PLATFORM_TEST_CLOCKS_ENABLED": "true",
    "PLATFORM_TIMER_POLL_SECONDS": "0.2",
    "PLATFORM_DEVELOPMENT_MODE": "true",  # the public development JWT secret is accepted
}
FLAGS_TEXT = " ".join(f"{k}={v}" for k, v in sorted(FLAGS.items()))


def flags_file(service: str) -> Path:
    return STATE / "run" / f"{service}.flags"


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
        pid = running_pid(service)
        if pid is not None:
            flags = flags_file(service).read_text() if flags_file(service).exists() else ""
            if flags == FLAGS_TEXT:
                say(f"{service}: already running on :{port}")
                continue
            say(f"{service}: running without test clocks; restarting it with {FLAGS_TEXT}")
            stop_one(service, pid)
        elif healthy(service):
            say(f"{service}: already running on :{port} (not started by devstack)")
            continue
        log = (STATE / "logs" / f"{service}.log").open("ab")
        env = {
            **os.environ,
            **FLAGS,
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
        flags_file(service).write_text(FLAGS_TEXT)
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
        what = "sign in by mailed link" if service == "portal" else "API docs at /docs"
        say(f"{service}: ready on http://127.0.0.1:{port} ({what})")


def stop_one(service: str, pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while running_pid(service) and time.monotonic() < deadline:
        time.sleep(0.1)
    if running_pid(service):
        os.kill(pid, signal.SIGKILL)
    pid_file(service).unlink(missing_ok=True)
    flags_file(service).unlink(missing_ok=True)


def stop() -> None:
    for service in SERVICES:
        pid = running_pid(service)
        if pid is None:
            say(f"{service}: not running")
            continue
        stop_one(service, pid)
        say(f"{service}: stopped")


def status() -> int:
    missing = 0
    for service, port in SERVICES.items():
        ok = healthy(service)
        missing += not ok
        say(f"{service:14s} {'ready' if ok else 'not running':12s} :{port}")
    return 3 if missing else 0


def test_clocks_enabled() -> bool:
    """Lifecycle answers 404 ``test-clocks-disabled`` (before any auth) when they are off."""
    try:
        response = httpx.get(url("lifecycle", f"/v1/test-clocks/{uuid.uuid4()}"), timeout=5)
    except httpx.HTTPError:
        return False
    return "test-clocks-disabled" not in response.text


def url(service: str, path: str) -> str:
    return f"http://127.0.0.1:{SERVICES[service]}{path}"


def demo() -> int:
    from demo_story import DemoFailed, run

    started = time.monotonic()
    start()
    ready_in = time.monotonic() - started
    if not test_clocks_enabled():
        sys.exit(
            "[demo] lifecycle on :8003 runs without test clocks and was not started by "
            "devstack: stop it, or start it with PLATFORM_TEST_CLOCKS_ENABLED=true"
        )
    try:
        asyncio.run(run(ready_in))
    except DemoFailed as error:
        sys.exit(f"[demo] {error}; see {STATE / 'logs'}/")
    return 0


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
        return demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
