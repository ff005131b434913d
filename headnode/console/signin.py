"""Sign-in and sign-out. Operators sign in with the operator credential (the API's bearer
token), tenants with their login and password."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from flask import redirect, render_template, request, url_for

from headnode.console import PREFIX, blueprint
from headnode.console.viewer import OPERATOR, Viewer, service_context, sign_in, sign_out

#: status of a refused sign-in (the form again, with why)
REFUSED = 401


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: only a console path of this host (no open redirect)."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith(PREFIX + "/"):
            return target
    return url_for("console.dashboard")


@blueprint.get("/signin")
def signin() -> Any:
    return render_template("console/signin.html", next=request.args.get("next", ""))


@blueprint.post("/signin/operator")
def signin_operator() -> Any:
    offered = request.form.get("token", "")
    expected = service_context().settings.resolved_operator_token()
    if not offered or not hmac.compare_digest(offered.encode(), expected.encode()):
        return render_template("console/signin.html", next=request.form.get("next", ""),
                               error="That is not the operator credential."), REFUSED
    sign_in(Viewer(OPERATOR, "operator"))
    return redirect(_safe_next(request.form.get("next")))


@blueprint.post("/signout")
def signout() -> Any:
    sign_out()
    return redirect(url_for("console.signin"))
