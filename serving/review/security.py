"""Browser sign-in for the reviewer pages: the session cookie, CSRF tokens and safe redirects.

A reviewer signs in by pasting an API token once; the pages open a server-side session
(``serving.api.sessions``) and set its random id as the ``triage_session`` cookie, which the
service's guard accepts on ``/ui/`` paths only (same scopes and audit as the token it was
opened with). The token itself never goes into a cookie. The cookie is:

- ``HttpOnly``: page scripts (there are none, but an injected one) cannot read it;
- ``SameSite=Strict``: the browser never sends it on a request started by another site, which
  is what stops a cross-site form from posting a disposition in the reviewer's name;
- ``Path=/ui``: it is not sent to the JSON API (which would refuse it anyway);
- ``Secure`` unless the request came over plain HTTP to a loopback address (local
  development; browsers accept Secure cookies there anyway, but test clients do not);
- a session cookie in the browser, and a session with an expiry on the server: signing out
  (``POST /ui/logout``), expiry or revoking the token ends it for every worker at once.

Forms that change state carry a CSRF token: the session's own random value, stored with it on
the server (for a bearer-header caller, an HMAC keyed by the token). The sign-in form has one
too (login CSRF): a random ``triage_login`` cookie that the form must echo, so another site
cannot sign a browser in under the attacker's token. A page from another origin can neither
read nor compute any of them, so the checks hold even if a browser ignored SameSite.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

from starlette.requests import Request
from starlette.responses import Response

from serving.api.auth import bearer_token
from serving.api.guard import SESSION_COOKIE
from serving.api.sessions import NewSession

__all__ = [
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "check_csrf",
    "check_login_csrf",
    "clear_sign_in",
    "csrf_token",
    "request_csrf",
    "safe_next",
    "set_login_nonce",
    "set_sign_in",
]

LOGIN_COOKIE = "triage_login"  # the sign-in form's CSRF nonce
LEGACY_TOKEN_COOKIE = "triage_token"  # the raw-token cookie of earlier versions: cleared
COOKIE_PATH = "/ui"


def csrf_token(token: str, session: str) -> str:
    """The CSRF token of a bearer-header caller (``session`` is "" then)."""
    return hmac.new(token.encode(), b"triage-csrf:" + session.encode(), hashlib.sha256).hexdigest()


def request_csrf(request: Request) -> str:
    """The CSRF token the forms of this request's pages must carry ("" if not signed in)."""
    access = request.scope.get("state", {}).get("access")
    if access is not None and access.csrf:
        return str(access.csrf)  # the session's value, from the server-side store
    token = bearer_token(request.headers.get("authorization"))
    return csrf_token(token, "") if token else ""


def check_csrf(request: Request, submitted: str | None) -> bool:
    """True if ``submitted`` is this caller's CSRF token (constant-time comparison)."""
    expected = request_csrf(request)
    if not expected or not submitted:
        return False
    return hmac.compare_digest(submitted, expected)


def set_login_nonce(response: Response, request: Request) -> str:
    """Give the sign-in form a fresh CSRF nonce (cookie + hidden field); returns it."""
    nonce = secrets.token_urlsafe(24)
    response.set_cookie(LOGIN_COOKIE, nonce, **_cookie_options(request))
    return nonce


def check_login_csrf(request: Request, submitted: str | None) -> bool:
    """True if the sign-in form echoes the nonce its page set (constant-time comparison)."""
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    return bool(nonce and submitted) and hmac.compare_digest(str(submitted), nonce)


def _secure(request: Request) -> bool:
    if request.url.scheme == "https":
        return True
    try:
        return not ipaddress.ip_address(request.url.hostname or "").is_loopback
    except ValueError:
        return request.url.hostname != "localhost"


def _cookie_options(request: Request) -> dict[str, object]:
    return {
        "path": COOKIE_PATH,
        "httponly": True,
        "samesite": "strict",
        "secure": _secure(request),
    }


def set_sign_in(response: Response, request: Request, session: NewSession) -> None:
    """Set the session cookie on ``response`` (and drop the sign-in nonce)."""
    response.set_cookie(SESSION_COOKIE, session.session_id, **_cookie_options(request))
    for name in (LOGIN_COOKIE, LEGACY_TOKEN_COOKIE):
        response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict")


def clear_sign_in(response: Response) -> None:
    """Expire the session cookie (and any raw-token cookie of an earlier version)."""
    for name in (SESSION_COOKIE, LEGACY_TOKEN_COOKIE):
        response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict")


def safe_next(value: str | None, root: str) -> str:
    """A post-sign-in target inside the pages, never another site (no open redirect)."""
    home = root.rstrip("/") + "/"
    if not value or not value.startswith(home) or "//" in value or "\\" in value:
        return home
    return value
