"""Settings of every service process, read from the environment (prefix ``PLATFORM_``)."""

from __future__ import annotations

from functools import cached_property
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAMES = ("ordering", "invoicing", "lifecycle", "notifications")
DEFAULT_PORTS = {"ordering": 8001, "invoicing": 8002, "lifecycle": 8003, "notifications": 8004}


class Settings(BaseSettings):
    """One class for all four services; each process sets ``PLATFORM_SERVICE``."""

    model_config = SettingsConfigDict(env_prefix="PLATFORM_", extra="ignore")

    service: str = Field("ordering", description="Which service this process runs.")
    http_host: str = "127.0.0.1"
    http_port: int = 0  # 0 = the service's default port (8001-8004)
    database_url: str = "postgresql://platform:platform@127.0.0.1:5432/ordering"
    database_pool_size: int = 10
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = Field("", description="Prepended to every topic and consumer group.")
    topic_partitions: int = 3
    smtp_url: str = "smtp://127.0.0.1:1025"
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = 10.0
    invoicing_public_url: str = Field(
        "http://127.0.0.1:8002", description="Base URL of invoicing as mail readers reach it."
    )
    mail_from: str = "Subscriptions <no-reply@subscriptions.example>"
    jwt_secret: SecretStr = SecretStr("dev-only-secret-change-me-in-production-please")
    jwt_issuer: str = "subscription-platform"
    token_ttl_seconds: int = 3600
    outbox_poll_seconds: float = 1.0
    outbox_batch_size: int = 500
    consumer_max_attempts: int = 4
    consumer_backoff_seconds: float = 0.2
    consumer_batch_size: int = 100  # records handled before one offset commit
    delivery_poll_seconds: float = 1.0
    test_clocks_enabled: bool = Field(
        False, description="Allow test clocks (never in production: they move time)."
    )
    test_clock_services: str = Field(
        "ordering,invoicing,lifecycle,notifications",
        description="The services a test-clock advance waits for, comma-separated.",
    )
    delivery_concurrency: int = 4  # SMTP connections (one worker each) per notifications process
    delivery_batch_size: int = 20  # mails a worker claims at once
    timer_poll_seconds: float = 1.0
    timer_batch_size: int = 200
    shutdown_step_seconds: float = 15.0  # each shutdown step's bound (shared.background)
    log_level: str = "INFO"

    @property
    def port(self) -> int:
        return self.http_port or DEFAULT_PORTS.get(self.service, 8000)

    @cached_property
    def smtp_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.smtp_url)
        return parts.hostname or "127.0.0.1", parts.port or 25
