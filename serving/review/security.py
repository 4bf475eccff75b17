"""Browser sign-in for the reviewer pages: the token cookie, CSRF tokens and safe redirects.

A reviewer signs in by pasting an API token once; the pages set it as the ``triage_token``
cookie, which the service's guard accepts on ``/ui/`` paths exactly like a bearer header
(same store, same scopes, same audit). The cookie is:

- ``HttpOnly``: page scripts (there are none, but an injected one) cannot read it;
- ``SameSite=Strict``: the browser never sends it on a request started by another site, which
  is what stops a cross-site form from posting a disposition in the reviewer's name;
- ``Path=/ui``: it is not sent to the JSON API;
- ``Secure`` unless the request came over plain HTTP to a loopback address (local
  development; browsers accept Secure cookies there anyway, but test clients do not);
- a session cookie: it goes when the browser closes, and revoking the token ends it at once.

Each sign-in also sets a random ``triage_session`` cookie. Forms that change state carry a
CSRF token: an HMAC, keyed by the reviewer's token, of that session value. A page from
another origin can neither read it nor compute it, so the form check holds even if a browser
ignored SameSite.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

from starlette.requests import Request
from starlette.responses import Response

from serving.api.auth import bearer_token
from serving.api.guard import TOKEN_COOKIE

__all__ = [
    "SESSION_COOKIE",
    "TOKEN_COOKIE",
    "check_csrf",
    "clear_sign_in",
    "credential",
    "csrf_token",
    "request_csrf",
    "safe_next",
    "set_sign_in",
]

SESSION_COOKIE = "triage_session"
COOKIE_PATH = "/ui"


def credential(request: Request) -> str:
    """The token this request was authenticated with (bearer header first, as the guard does)."""
    return bearer_token(request.headers.get("authorization")) or request.cookies.get(
        TOKEN_COOKIE, ""
    )


def csrf_token(token: str, session: str) -> str:
    """The CSRF token of a signed-in session (see the module docstring)."""
    return hmac.new(token.encode(), b"triage-csrf:" + session.encode(), hashlib.sha256).hexdigest()


def request_csrf(request: Request) -> str:
    """The CSRF token the forms of this request's pages must carry."""
    return csrf_token(credential(request), request.cookies.get(SESSION_COOKIE, ""))


def check_csrf(request: Request, submitted: str | None) -> bool:
    """True if ``submitted`` is this session's CSRF token (constant-time comparison)."""
    token = credential(request)
    if not token or not submitted:
        return False
    return hmac.compare_digest(submitted, request_csrf(request))


def _secure(request: Request) -> bool:
    if request.url.scheme == "https":
        return True
    try:
        return not ipaddress.ip_address(request.url.hostname or "").is_loopback
    except ValueError:
        return request.url.hostname != "localhost"


def set_sign_in(response: Response, request: Request, token: str) -> None:
    """Set the token and session cookies on ``response``."""
    common = {
        "path": COOKIE_PATH,
        "httponly": True,
        "samesite": "strict",
        "secure": _secure(request),
    }
    response.set_cookie(TOKEN_COOKIE, token, **common)
    response.set_cookie(SESSION_COOKIE, secrets.token_urlsafe(24), **common)


def clear_sign_in(response: Response) -> None:
    """Expire the token and session cookies."""
    for name in (TOKEN_COOKIE, SESSION_COOKIE):
        response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict")


def safe_next(value: str | None, root: str) -> str:
    """A post-sign-in target inside the pages, never another site (no open redirect)."""
    home = root.rstrip("/") + "/"
    if not value or not value.startswith(home) or "//" in value or "\\" in value:
        return home
    return value
