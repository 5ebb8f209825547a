"""The Docker deployment (deploy/docker-compose.yml, deploy/Dockerfile), checked without Docker.

No engine is needed: the compose file is read with PyYAML, which resolves its anchors and ``<<``
merge keys the way Compose does; the Dockerfile and .dockerignore are read as text and
pyproject.toml with tomllib. What these tests prove is that the files agree with the code:
every ``PLATFORM_*`` variable is a real setting, each service gets its own name, database and
port, and the image starts through a console script the distribution really declares.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shared.config import DEFAULT_PORTS, SERVICE_NAMES, Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
INIT_SQL = DEPLOY / "postgres-init" / "01-databases.sql"
PYPROJECT = REPO / "pyproject.toml"

APPS = SERVICE_NAMES  # ordering, invoicing, lifecycle, notifications
BACKING = ("kafka", "postgres", "mailpit")
TOP_LEVEL_KEYS = {"name", "services", "volumes", "networks", "configs", "secrets", "include"}


# ------------------------------------------------------------------------------- helpers ---


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict), "the compose file must be a YAML mapping"
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict) and found, "the compose file must define services"
    for name, service in found.items():
        assert isinstance(service, dict), f"service {name!r} must be a mapping"
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, from either the mapping or the KEY=VALUE list form."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = [str(item).partition("=") for item in raw]
        return {key: value for key, _, value in pairs}
    assert isinstance(raw, dict)
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def published_ports(service: dict[str, Any]) -> list[tuple[int | None, int]]:
    """(host port, container port) pairs, from short ("[ip:]host:container[/proto]") or long
    syntax; the host port is None when Docker picks it."""
    pairs: list[tuple[int | None, int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, str):  # "${ORDERING_PORT:-8001}:8001": what an unset variable gives
            entry = re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", entry)
        if isinstance(entry, dict):
            published = entry.get("published")
            pairs.append((int(published) if published else None, int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        host = int(parts[-2]) if len(parts) >= 2 and parts[-2] else None
        pairs.append((host, int(parts[-1])))
    return pairs


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined, comments out."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def exec_form(instruction: str) -> list[str]:
    """The JSON array of the last INSTRUCTION (ENTRYPOINT, CMD) in the Dockerfile."""
    found = [args for keyword, args in dockerfile_instructions() if keyword == instruction]
    assert found, f"the Dockerfile has no {instruction}"
    value = json.loads(found[-1])
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), (
        f"{instruction} must use the exec (JSON array) form, got {found[-1]!r}"
    )
    return [str(v) for v in value]


def settings_variables() -> set[str]:
    return {f"PLATFORM_{field.upper()}" for field in Settings.model_fields}


# --------------------------------------------------------------------- the compose file ---


def test_compose_file_parses_as_a_compose_spec_document(compose: dict[str, Any]) -> None:
    """The YAML parses, has services, no obsolete `version:` key and no unknown top-level key
    (only the spec's keys and x- extensions such as the anchors)."""
    assert "version" not in compose
    unknown = {k for k in compose if k not in TOP_LEVEL_KEYS and not str(k).startswith("x-")}
    assert not unknown, f"unknown top-level keys: {sorted(unknown)}"
    assert set(APPS) | set(BACKING) <= set(compose["services"])


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    """Compose can start every service: each names an image to pull or a build to run."""
    missing = [name for name, s in services.items() if not (s.get("image") or s.get("build"))]
    assert not missing, f"services with neither image nor build: {missing}"


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    """Each service has an enabled healthcheck with a CMD/CMD-SHELL test, so depends_on
    `service_healthy` and `docker compose ps` mean something."""
    for name, service in services.items():
        check = service.get("healthcheck")
        assert isinstance(check, dict), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        test = check.get("test")
        assert isinstance(test, list) and len(test) >= 2, f"{name}: healthcheck test {test!r}"
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test {test!r}"


def test_variable_substitutions_all_have_defaults() -> None:
    """Every ${VAR} in the compose file has a default (${VAR:-default}), so `up` works with no
    .env file; a bare $ would be substituted by Compose, so none is left unescaped either."""
    text = COMPOSE_FILE.read_text()
    substitutions = re.findall(r"\$\{([^}]*)\}", text)
    bare = [s for s in substitutions if not re.fullmatch(r"\w+:?-.*", s)]
    assert not bare, f"substitutions without a default: {bare}"
    unescaped = re.findall(r"(?<!\$)\$(?![{$])", text)
    assert not unescaped, "a lone $ would be read as a variable; write $$"


@pytest.mark.parametrize("name", APPS)
def test_app_platform_variables_are_real_settings_fields(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    """Each PLATFORM_* variable of an app service (merged from the anchors) is PLATFORM_ + a
    field of shared.config.Settings; a typo would be silently ignored (extra="ignore")."""
    env = environment(services[name])
    used = {key for key in env if key.startswith("PLATFORM_")}
    assert used, f"{name} sets no PLATFORM_* variable"
    unknown = used - settings_variables()
    assert not unknown, f"{name} sets variables that no Settings field reads: {sorted(unknown)}"
    # The settings that differ per service or per container must all be set explicitly.
    for required in ("SERVICE", "HTTP_HOST", "HTTP_PORT", "DATABASE_URL"):
        assert f"PLATFORM_{required}" in env, f"{name} does not set PLATFORM_{required}"
    for required in ("KAFKA_BOOTSTRAP_SERVERS", "SMTP_URL", "JWT_SECRET"):
        assert f"PLATFORM_{required}" in env, f"{name} does not set PLATFORM_{required}"
    assert env["PLATFORM_HTTP_HOST"] == "0.0.0.0", "a container must listen on all interfaces"


@pytest.mark.parametrize("name", APPS)
def test_app_runs_the_service_it_is_named_after(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    """The compose name, PLATFORM_SERVICE and the command (the platform-service argument)
    all name the same service."""
    service = services[name]
    assert environment(service)["PLATFORM_SERVICE"] == name
    assert service.get("command") == [name]


@pytest.mark.parametrize("name", APPS)
def test_app_database_url_names_its_own_database_on_the_postgres_service(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    """Each service has its own database (/<name>) on the compose `postgres` service."""
    url = environment(services[name])["PLATFORM_DATABASE_URL"]
    assert url.endswith(f"/{name}"), url
    parts = urlsplit(url)
    assert parts.scheme in ("postgresql", "postgres"), url
    assert parts.hostname == "postgres" and "postgres" in services, url


@pytest.mark.parametrize("name", APPS)
def test_app_publishes_its_default_port_which_is_its_http_port(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    """The app listens on PLATFORM_HTTP_PORT and publishes exactly that port on the host, and
    that port is the service's usual one (8001-8004), as in the local setup."""
    port = DEFAULT_PORTS[name]
    assert environment(services[name])["PLATFORM_HTTP_PORT"] == str(port)
    assert published_ports(services[name]) == [(port, port)]


def test_apps_publish_ports_8001_to_8004(services: dict[str, dict[str, Any]]) -> None:
    """Together the four apps publish 8001, 8002, 8003 and 8004 on the host, no port twice."""
    hosts = [host for name in APPS for host, _ in published_ports(services[name])]
    assert None not in hosts, "an app port published on a random host port"
    assert sorted(host for host in hosts if host is not None) == [8001, 8002, 8003, 8004]


@pytest.mark.parametrize("name", APPS)
def test_app_waits_for_healthy_backing_services(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    """An app starts only after Kafka and PostgreSQL (and Mailpit for notifications) report
    healthy, since start-up runs migrations and creates topics."""
    depends = services[name].get("depends_on")
    assert isinstance(depends, dict), f"{name}: depends_on must use the long form"
    wanted = {"kafka", "postgres"} | ({"mailpit"} if name == "notifications" else set())
    for backing in wanted:
        assert backing in depends, f"{name} does not depend on {backing}"
        assert depends[backing].get("condition") == "service_healthy", (name, backing)


@pytest.mark.parametrize("name", APPS)
def test_app_reaches_kafka_and_mail_through_their_compose_names(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    """The app's Kafka bootstrap address is one the broker advertises (so the metadata it
    gets back is reachable from containers), and its SMTP host is the mailpit service."""
    env = environment(services[name])
    advertised = environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    addresses = {listener.partition("://")[2] for listener in advertised.split(",")}
    for server in env["PLATFORM_KAFKA_BOOTSTRAP_SERVERS"].split(","):
        assert server in addresses, f"{server} is not among {sorted(addresses)}"
    smtp = urlsplit(env["PLATFORM_SMTP_URL"])
    assert (smtp.scheme, smtp.hostname, smtp.port) == ("smtp", "mailpit", 1025)


@pytest.mark.parametrize("name", APPS)
def test_app_healthcheck_probes_ready_on_its_http_port(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    """Healthy means /ready answers 200 (database and broker reachable), not just alive."""
    test = " ".join(str(part) for part in services[name]["healthcheck"]["test"])
    assert "/ready" in test
    assert "PLATFORM_HTTP_PORT" in test


def test_every_image_comes_from_a_variable_defaulting_to_the_official_one() -> None:
    """Issue 13: with a registry the official images run; without one, deploy/images/build's
    local images are named by the variables (`deploy/images/build env`)."""
    text = COMPOSE_FILE.read_text()
    images = dict(re.findall(r"image: \$\{(\w+):-([^}]+)\}", text))
    assert images == {
        "PLATFORM_IMAGE": "subscription-platform:latest",
        "KAFKA_IMAGE": "apache/kafka:4.1.1",
        "POSTGRES_IMAGE": "postgres:16",
        "MAILPIT_IMAGE": "axllent/mailpit:v1.27",
    }
    assert len(re.findall(r"^\s*image:", text, re.MULTILINE)) == len(images)
    assert "BASE_IMAGE: ${PYTHON_IMAGE:-python:3.11-slim}" in text
    assert ("ARG", "BASE_IMAGE=python:3.11-slim") in dockerfile_instructions()


def test_apps_share_one_image_built_from_deploy_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    """All four apps run one image, built from deploy/Dockerfile with the repository root as
    the build context (paths are relative to the compose file's folder)."""
    images = {services[name].get("image") for name in APPS}
    assert len(images) == 1 and None not in images, images
    for name in APPS:
        build = services[name].get("build")
        assert isinstance(build, dict), f"{name}: build must be a mapping"
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        assert context == REPO, f"{name}: build context {context}"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_postgres_init_sql_creates_the_four_databases(
    services: dict[str, dict[str, Any]],
) -> None:
    """deploy/postgres-init/01-databases.sql creates exactly the databases the apps use, and the
    postgres service mounts that folder where the image runs init scripts."""
    sql = INIT_SQL.read_text()
    created = re.findall(r"^\s*CREATE\s+DATABASE\s+\"?(\w+)\"?", sql, re.IGNORECASE | re.MULTILINE)
    assert sorted(created) == sorted(APPS)
    mounts = [str(volume) for volume in services["postgres"].get("volumes") or []]
    targets = {
        (COMPOSE_FILE.parent / source).resolve(): target
        for source, target, *_ in (mount.split(":") for mount in mounts)
        if source.startswith(".")
    }
    assert targets.get(INIT_SQL.parent) == "/docker-entrypoint-initdb.d", mounts


# ----------------------------------------------------------------------- the Dockerfile ---


def test_dockerfile_entrypoint_is_a_console_script_declared_in_pyproject() -> None:
    """ENTRYPOINT is exactly a [project.scripts] entry of pyproject.toml, and that entry's
    target (module:function) exists, so `pip install .` puts it on the image's PATH."""
    entrypoint = exec_form("ENTRYPOINT")
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert len(entrypoint) == 1 and entrypoint[0] in scripts, (entrypoint, scripts)
    module, _, function = str(scripts[entrypoint[0]]).partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_dockerfile_default_command_is_a_service_name() -> None:
    """CMD, the console script's one argument, is one of the four service names."""
    assert exec_form("CMD") in ([name] for name in SERVICE_NAMES)


def test_dockerfile_runs_as_a_non_root_user() -> None:
    """The last USER instruction names a user other than root (name or uid 0)."""
    users = [args for keyword, args in dockerfile_instructions() if keyword == "USER"]
    assert users, "the Dockerfile has no USER instruction"
    user = users[-1].partition(":")[0]
    assert user not in ("root", "0"), users[-1]


def test_dockerfile_platform_variables_are_real_settings_fields() -> None:
    """ENV lines of the Dockerfile set PLATFORM_* variables Settings really reads."""
    env_args = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "ENV")
    used = set(re.findall(r"\b(PLATFORM_\w+)=", env_args))
    assert "PLATFORM_HTTP_HOST" in used
    assert used <= settings_variables(), sorted(used - settings_variables())


def test_dockerignore_keeps_out_local_state_but_not_what_the_dockerfile_copies() -> None:
    """.dockerignore excludes local state, caches and tests, yet no COPY source of the
    Dockerfile is excluded (a build would fail or miss code)."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for kept_out in (".git", ".local", ".venv", "tests", "bench"):
        assert kept_out in patterns, f".dockerignore does not exclude {kept_out}"

    def ignored(path: str) -> bool:
        for pattern in patterns:
            if pattern.startswith("!"):
                continue
            for candidate in (pattern, pattern.removeprefix("**/")):
                if fnmatch.fnmatch(path, candidate.rstrip("/")):
                    return True
        return False

    copies = [args.split() for keyword, args in dockerfile_instructions() if keyword == "COPY"]
    sources = [s.rstrip("/") for args in copies for s in args[:-1] if not s.startswith("--")]
    assert {"pyproject.toml", "shared", "services"} <= set(sources), sources
    assert not [s for s in sources if ignored(s)], "a COPY source is in .dockerignore"
