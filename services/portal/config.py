"""The portal's settings, read from the environment (prefix ``PLATFORM_``, like the services).

The portal has no database and no broker: it holds the platform's JWT secret only to sign its
own session cookies (a key derived from it, never the secret itself) and to check an operator's
token before keeping it; customers' tokens are minted by ordering when a sign-in link is used.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.config import DEVELOPMENT_JWT_SECRET, MIN_JWT_SECRET_LENGTH

PORT = 8005


class PortalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PLATFORM_", extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = 0  # 0 = 8005
    portal_public_url: str = Field(
        "http://127.0.0.1:8005", description="Base URL of the portal as browsers reach it."
    )
    ordering_url: str = "http://127.0.0.1:8001"
    invoicing_url: str = "http://127.0.0.1:8002"
    lifecycle_url: str = "http://127.0.0.1:8003"
    notifications_url: str = "http://127.0.0.1:8004"
    jwt_secret: SecretStr = SecretStr(DEVELOPMENT_JWT_SECRET)
    jwt_issuer: str = "subscription-platform"
    development_mode: bool = False
    api_timeout_seconds: float = 15.0
    log_level: str = "INFO"

    @property
    def port(self) -> int:
        return self.http_port or PORT

    @property
    def secure_cookies(self) -> bool:
        """Secure cookies whenever browsers reach the portal over https."""
        return urlsplit(self.portal_public_url).scheme == "https"

    @property
    def session_key(self) -> bytes:
        """The cookie-signing key: derived from the platform secret, so a leaked cookie key
        signs no bearer token."""
        secret = self.jwt_secret.get_secret_value().encode()
        return hmac.new(secret, b"portal-session-v1", hashlib.sha256).digest()

    def refusal(self) -> str | None:
        if self.development_mode:
            return None
        secret = self.jwt_secret.get_secret_value()
        if secret == DEVELOPMENT_JWT_SECRET or len(secret) < MIN_JWT_SECRET_LENGTH:
            return "PLATFORM_JWT_SECRET is the development secret or too short."
        return None
