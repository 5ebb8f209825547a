"""The portal process: server-rendered pages (FastAPI + Jinja2), its own CSS and a little
JavaScript, no build step and nothing from a CDN (README.md says why).

Every page is built from the services' public APIs with the signed-in person's bearer token
(``platform.py``); a refusal is shown in words from the problem document, never a trace. Every
form carries a CSRF token and an Idempotency-Key made when the form was drawn, so pressing
"Pay" twice pays once.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jwt
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import pages
from .config import PortalSettings
from .platform import Platform, Refused, Unavailable
from .session import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Session,
    csrf_ok,
    csrf_token,
    new_csrf_nonce,
    safe_next,
    safe_path,
    seal,
    unseal,
)
from .texts import PROBLEMS_NB, TEXTS, helpers, language_of

HERE = Path(__file__).parent
LANGUAGE_COOKIE = "portal_language"
MAX_FORM_BYTES = 64 * 1024
log = logging.getLogger("portal")


class SignInNeeded(Exception):
    """No session (or it ended): off to the sign-in page."""

    def __init__(self, operator: bool = False, ended: bool = False) -> None:
        self.operator = operator
        self.ended = ended


class BadForm(Exception):
    """A form without a valid CSRF token, or too large to be one of ours."""


class Portal:
    """What every page needs: settings, the API client, the templates."""

    def __init__(self, settings: PortalSettings, platform: Platform) -> None:
        self.settings = settings
        self.platform = platform
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # --- who is asking ---------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        return unseal(self.settings.session_key, request.cookies.get(SESSION_COOKIE))

    def user(self, request: Request) -> Session:
        session = self.session(request)
        if session is None or session.kind != "user" or session.account_id is None:
            raise SignInNeeded(ended=SESSION_COOKIE in request.cookies)
        return session

    def operator(self, request: Request) -> Session:
        session = self.session(request)
        if session is None or session.kind != "operator":
            raise SignInNeeded(operator=True, ended=SESSION_COOKIE in request.cookies)
        return session

    def language(self, request: Request) -> str:
        session = self.session(request)
        accepted = request.headers.get("accept-language", "")[:2].lower()
        return language_of(
            request.cookies.get(LANGUAGE_COOKIE),
            session.language if session else None,
            "nb" if accepted in ("nb", "no", "nn") else None,
        )

    # --- answers ---------------------------------------------------------------------------

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        session = self.session(request)
        nonce = request.cookies.get(CSRF_COOKIE) or new_csrf_nonce()
        lang = self.language(request)
        # Instants in the account's time zone: the signed-in customer's, or the one a page names.
        time_zone = context.pop("time_zone", None) or (session.time_zone if session else None)
        notice = request.query_params.get("done")
        html = self.templates.get_template(template).render(
            session=session,
            lang=lang,
            path=request.url.path,
            here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            csrf=csrf_token(self.settings.session_key, nonce),
            new_key=lambda: str(uuid.uuid4()),
            notice=notice if notice in TEXTS["en"] else None,
            **helpers(lang, time_zone),
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        if CSRF_COOKIE not in request.cookies:
            self.set_cookie(response, CSRF_COOKIE, nonce)
        return response

    def problem(
        self, request: Request, refusal: Refused, heading: str | None = None
    ) -> HTMLResponse:
        """A refusal in words: the problem document's title, detail and fields (in Norwegian
        where we have the words for its slug)."""
        if self.language(request) == "nb" and refusal.slug in PROBLEMS_NB:
            title, detail = PROBLEMS_NB[refusal.slug]
            refusal = replace(refusal, title=title, detail=detail)
        return self.render(
            request, "problem.html.j2", refusal.status, problem=refusal, heading=heading
        )

    def set_cookie(
        self, response: Response, name: str, value: str, max_age: int | None = None
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            httponly=True,
            secure=self.settings.secure_cookies,
            samesite="lax",
            path="/",
        )

    def sign_in(self, response: Response, session: Session, now: float) -> None:
        ttl = max(1, int(session.expires - now))
        self.set_cookie(response, SESSION_COOKIE, seal(self.settings.session_key, session), ttl)

    async def form(self, request: Request) -> dict[str, str]:
        """The posted form (urlencoded), once its CSRF token is checked."""
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise BadForm
        fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if not csrf_ok(
            self.settings.session_key, request.cookies.get(CSRF_COOKIE), fields.get("csrf")
        ):
            raise BadForm
        return fields

    def operator_session(self, token: str, language: str) -> Session | None:
        """An operator's own token, checked here before it is kept (the services check it again
        on every call)."""
        try:
            claims = jwt.decode(
                token,
                self.settings.jwt_secret.get_secret_value(),
                algorithms=["HS256"],
                issuer=self.settings.jwt_issuer,
                options={"require": ["sub", "exp", "kind"]},
            )
        except jwt.PyJWTError:
            return None
        if claims.get("kind") != "operator":
            return None
        return Session(
            kind="operator",
            subject=str(claims["sub"]),
            token=token,
            expires=int(claims["exp"]),
            name="operator",
            language=language,
        )


def redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


def create_app(settings: PortalSettings | None = None, platform: Platform | None = None) -> FastAPI:
    settings = settings or PortalSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.portal.platform.close()

    app = FastAPI(title="Account portal", docs_url=None, redoc_url=None, lifespan=lifespan)
    portal = Portal(settings, platform or Platform(settings))
    app.state.portal = portal
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")  # links carry secrets
        return response

    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, error: SignInNeeded) -> Response:
        """To sign-in, with the page asked for as ``next`` (a GET's path and query; a form's
        post is not repeated), so that signing in returns there."""
        where = "/operator/sign-in" if error.operator else "/sign-in"
        query: dict[str, str] = {"done": "session_ended"} if error.ended else {}
        if request.method == "GET":
            asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if safe_next(asked) != "/":
                query["next"] = asked
        response = redirect(where + (f"?{urlencode(query)}" if query else ""))
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.exception_handler(BadForm)
    async def bad_form(request: Request, error: BadForm) -> Response:
        refusal = Refused(400, "The form has expired", "Reload the page and send it again.")
        return portal.problem(request, refusal)

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> Response:
        if error.status == 401:
            session = portal.session(request)
            raise_operator = session is not None and session.kind == "operator"
            return await sign_in_needed(request, SignInNeeded(raise_operator, ended=True))
        heading = getattr(request.state, "heading", None)
        return portal.problem(request, error, heading)

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, error: Unavailable) -> Response:
        log.warning("%s did not answer", error.service)
        t = helpers(portal.language(request), None)["t"]
        refusal = Refused(503, t("unavailable"), error.service)
        return portal.problem(request, refusal)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        t = helpers(portal.language(request), None)["t"]
        text = t("not_found_page") if error.status_code == 404 else str(error.detail)
        refusal = Refused(error.status_code, text)
        return portal.render(
            request, "problem.html.j2", error.status_code, problem=refusal, heading=None
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        t = helpers(portal.language(request), None)["t"]
        refusal = Refused(500, t("error"))
        return portal.problem(request, refusal)

    @app.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        return JSONResponse({"status": "ready"})

    @app.get("/language/{code}", include_in_schema=False)
    async def choose_language(code: str, next: str = "/") -> Response:
        response = redirect(safe_path(next))  # the page it was on, sign-in pages too
        portal.set_cookie(response, LANGUAGE_COOKIE, language_of(code), 365 * 24 * 3600)
        return response

    pages.install(app, portal)
    return app


def serve() -> None:
    settings = PortalSettings()
    refusal = settings.refusal()
    if refusal:
        raise SystemExit(f"portal: refusing to start. {refusal}")
    logging.basicConfig(level=settings.log_level.upper())
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


__all__ = ["create_app", "serve"]
