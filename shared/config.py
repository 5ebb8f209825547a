"""Settings of every service process, read from the environment (prefix ``PLATFORM_``)."""

from __future__ import annotations

from functools import cached_property
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAMES = ("ordering", "invoicing", "lifecycle", "notifications")
DEFAULT_PORTS = {"ordering": 8001, "invoicing": 8002, "lifecycle": 8003, "notifications": 8004}


# The one development secret (settings default, devstack, compose's default, tests). It is
# public: a service refuses to start with it, or any short secret, unless development mode is on.
DEVELOPMENT_JWT_SECRET = "dev-only-secret-change-me-in-production-please"  # noqa: S105 - public
MIN_JWT_SECRET_LENGTH = 32


class Settings(BaseSettings):
    """One class for all four services; each process sets ``PLATFORM_SERVICE``."""

    model_config = SettingsConfigDict(env_prefix="PLATFORM_", extra="ignore")

    service: str = Field("ordering", description="Which service this process runs.")
    http_host: str = "127.0.0.1"
    http_port: int = 0  # 0 = the service's default port (8001-8004)
    database_url: str = "postgresql://platform:platform@127.0.0.1:5432/ordering"
    database_pool_size: int = 10
    kafka_bootstrap_servers: str = "127.0.0.1:9092"  # host:port[,host:port...]
    topic_prefix: str = Field("", description="Prepended to every topic and consumer group.")
    topic_partitions: int = 3
    topic_replication_factor: int = Field(
        1, ge=1, description="Replicas of every topic the platform creates (3 in production)."
    )
    topic_min_insync_replicas: int = Field(
        1,
        ge=1,
        description="min.insync.replicas of those topics: an acks=all write waits for this many"
        " replicas (2 with 3 replicas: one broker may fail, nothing acknowledged is lost).",
    )
    smtp_url: str = "smtp://127.0.0.1:1025"
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = 10.0
    invoicing_public_url: str = Field(
        "http://127.0.0.1:8002", description="Base URL of invoicing as mail readers reach it."
    )
    portal_public_url: str = Field(
        "http://127.0.0.1:8005", description="Base URL of the portal as mail readers reach it."
    )
    mail_from: str = "Subscriptions <no-reply@subscriptions.example>"
    # Signed links to documents in mails (issue 15, shared/signed_links.py).
    document_link_secret: SecretStr | None = Field(
        None,
        description="Signs the document links in mails (the JWT secret when unset; either way"
        " under its own label).",
    )
    document_link_days: int = Field(30, ge=1, le=365, description="How long a mailed link opens.")
    # The seller on every invoice and credit note (bokføringsforskriften § 5-1-1; issue 15).
    # Development defaults: a made-up company with a valid organisation number and bank account.
    seller_name: str = "Subscriptions Nordic AS"
    seller_street: str = "Postboks 1"
    seller_postcode: str = "0101"
    seller_city: str = "Oslo"
    seller_country: str = Field("NO", description="ISO 3166 alpha-2 country of the seller.")
    seller_organisation_number: str = Field(
        "923609016", description="Registered in Foretaksregisteret (9 digits, MOD11)."
    )
    seller_vat_id: str = Field("NO923609016MVA", description="MVA-registered: NO + org no + MVA.")
    seller_bank_account: str = Field(
        "86011117947", description="Norwegian bank account for bank transfers (11 digits)."
    )
    seller_iban: str = "NO9386011117947"
    seller_bic: str = "DNBANOKK"
    seller_email: str = "billing@subscriptions.example"
    jwt_secret: SecretStr = SecretStr(DEVELOPMENT_JWT_SECRET)
    development_mode: bool = Field(
        False,
        description="Local development: accept the public development JWT secret. Never in "
        "production.",
    )
    jwt_issuer: str = "subscription-platform"
    token_ttl_seconds: int = 3600
    outbox_poll_seconds: float = 1.0
    outbox_batch_size: int = 500
    # the relay's pause after a wake-up, so rows committed meanwhile share its batch
    outbox_linger_seconds: float = 0.01
    consumer_max_attempts: int = 4
    consumer_backoff_seconds: float = 0.2
    consumer_batch_size: int = 100  # records taken from Kafka at once
    # handled records' offsets are committed at most this often (shared.offsets)
    consumer_offset_commit_seconds: float = 1.0
    # a consumed batch applied in one transaction (record by record if that fails)
    consumer_batch_transaction: bool = True
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
    # a woken delivery worker's pause before it claims, so mails queued meanwhile share its batch
    delivery_linger_seconds: float = 0.02
    timer_poll_seconds: float = 1.0
    timer_batch_size: int = 200
    shutdown_step_seconds: float = 15.0  # each shutdown step's bound (shared.background)
    log_level: str = "INFO"
    startup_wait_seconds: float = Field(
        120.0, description="How long start-up waits for PostgreSQL and Kafka to answer."
    )

    def refusal(self) -> str | None:
        """Why this process must not start with these settings (None: it may)."""
        if self.development_mode:
            return None
        secret = self.jwt_secret.get_secret_value()
        if secret == DEVELOPMENT_JWT_SECRET or len(secret) < MIN_JWT_SECRET_LENGTH:
            return (
                "PLATFORM_JWT_SECRET is the public development secret or shorter than "
                f"{MIN_JWT_SECRET_LENGTH} characters: anyone could sign tokens. Set your own "
                "(for example `openssl rand -hex 32`), or, for local development only, set "
                "PLATFORM_DEVELOPMENT_MODE=true."
            )
        link = self.document_link_secret
        if link is not None and len(link.get_secret_value()) < MIN_JWT_SECRET_LENGTH:
            return (
                f"PLATFORM_DOCUMENT_LINK_SECRET is shorter than {MIN_JWT_SECRET_LENGTH} "
                "characters: anyone could forge links to invoices. Set a longer one, or unset "
                "it to derive the link key from the JWT secret."
            )
        return None

    @model_validator(mode="after")
    def _replicas_can_be_in_sync(self) -> Settings:
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError(
                "topic_min_insync_replicas must not exceed topic_replication_factor"
                " (no write could ever be acknowledged)"
            )
        return self

    @property
    def kafka_servers(self) -> list[str]:
        """``kafka_bootstrap_servers`` as a list: FastStream takes a string for one address."""
        return [a.strip() for a in self.kafka_bootstrap_servers.split(",") if a.strip()]

    @property
    def port(self) -> int:
        return self.http_port or DEFAULT_PORTS.get(self.service, 8000)

    @cached_property
    def smtp_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.smtp_url)
        return parts.hostname or "127.0.0.1", parts.port or 25
