"""Sign-in and sign-out. Operators sign in with the operator credential (the API's bearer
token), tenants with their login and password (headnode.services.passwords).

An account marked ``operator`` signs in here as a tenant like any other: in the console, the
operator role comes with the operator credential only, never with an account's password.

Failed sign-ins are slowed down with flask-limiter, counted in the head node's Redis (so every
API process sees the same counts): after ``FAILURES`` refused attempts within ``WINDOW`` for
one login, or from one client address (tenant and operator forms together), the next ones
get 429 with Retry-After, even with the right password, until the oldest failure is
``WINDOW`` old. Successes do not count.
"""

from __future__ import annotations

import hmac
import math
import time
from typing import Any, cast
from urllib.parse import urlsplit

from flask import Flask, Response, make_response, redirect, render_template, request, url_for
from flask.blueprints import BlueprintSetupState
from flask_limiter import Limiter, RequestLimit
from flask_limiter.errors import RateLimitExceeded

from headnode.console import PREFIX, blueprint
from headnode.console.viewer import (
    OPERATOR,
    TENANT,
    Viewer,
    service_context,
    sign_in,
    sign_out,
)
from headnode.services import passwords

#: status of a refused sign-in (the form again, with why)
REFUSED = 401
#: refused sign-ins allowed per login, and per client address, within ``WINDOW``
FAILURES = 5
WINDOW = "15 minutes"
FAILURE_LIMIT = f"{FAILURES} per {WINDOW}"
WINDOW_SECONDS = 15 * 60
#: the one answer for every refused password: it tells no login that exists from one that
#: does not, nor one with a password from one without
WRONG_PASSWORD = "Wrong login or password."

#: flask-limiter, on the head node's Redis (``init_limiter``); a moving window: at most
#: FAILURES refusals in any WINDOW, not per calendar slot
limiter = Limiter(key_func=lambda: request.remote_addr or "", strategy="moving-window",
                  key_prefix="sdc-console")


@blueprint.record_once
def init_limiter(state: BlueprintSetupState) -> None:
    """Count on the Redis every process of this head node shares (the app's settings)."""
    app = cast(Flask, state.app)
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.extensions["sdc"].settings.redis_url)
    limiter.init_app(app)


def _refused(response: Response) -> bool:
    return response.status_code == REFUSED


def _login_offered() -> str:
    # logins are at most 64 characters: a longer one is nobody's, and keys stay short
    return request.form.get("login", "").strip()[:65]


def _login_key() -> str:
    # flask-limiter skips (and logs an error for) an empty key; no account has this login
    return _login_offered() or "(none)"


def _client_address() -> str:
    return request.remote_addr or "unknown"


def _too_many(limit: RequestLimit) -> Response:
    """The form again, saying when to try again (Retry-After, seconds)."""
    # the window's reset is stamped to the second: rounding up can say one past the window
    wait = min(WINDOW_SECONDS, max(1, math.ceil(limit.reset_at - time.time())))
    minutes = math.ceil(wait / 60)
    response = make_response(_page(
        f"Too many failed sign-ins for this login or from this address. Try again in "
        f"{minutes} minute{'s' if minutes != 1 else ''}."), 429)
    response.headers["Retry-After"] = str(wait)
    return response


#: failures per login (tenant sign-in) and per client address (both forms, counted together)
per_login = limiter.limit(FAILURE_LIMIT, key_func=_login_key, deduct_when=_refused,
                          on_breach=_too_many)
per_address = limiter.shared_limit(FAILURE_LIMIT, scope="console-signin-address",
                                   key_func=_client_address, deduct_when=_refused,
                                   on_breach=_too_many)


@blueprint.errorhandler(RateLimitExceeded)
def _rate_limited(error: RateLimitExceeded) -> Any:
    # the page _too_many made (the app's own handler would answer JSON)
    return error.get_response()


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: only a console path of this host (no open redirect)."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith(PREFIX + "/"):
            return target
    return url_for("console.dashboard")


def _page(error: str | None = None) -> str:
    return render_template("console/signin.html", next=request.values.get("next", ""),
                           tenant_signin=True, error=error)


@blueprint.get("/signin")
def signin() -> Any:
    return _page()


@blueprint.post("/signin/operator")
@per_address
def signin_operator() -> Any:
    offered = request.form.get("token", "")
    expected = service_context().settings.resolved_operator_token()
    if not offered or not hmac.compare_digest(offered.encode(), expected.encode()):
        return _page("That is not the operator credential."), REFUSED
    sign_in(Viewer(OPERATOR, "operator"))
    return redirect(_safe_next(request.form.get("next")))


@blueprint.post("/signin/tenant")
@per_login
@per_address
def signin_tenant() -> Any:
    account = passwords.authenticate(service_context(), _login_offered(),
                                     request.form.get("password", ""))
    if account is None:
        return _page(WRONG_PASSWORD), REFUSED
    sign_in(Viewer(TENANT, account.login, account.uuid))  # a new session: no fixation
    return redirect(_safe_next(request.form.get("next")))


@blueprint.post("/signout")
def signout() -> Any:
    sign_out()
    return redirect(url_for("console.signin"))
