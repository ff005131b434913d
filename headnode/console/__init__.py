"""The web console at ``/console``: operators, tenants and capacity planners in the browser.

Server-rendered pages (Jinja) over the same services the APIs call, so no rule exists twice;
small scripts only where a page updates live. Charts are SVG drawn here (``charts``), so
no asset comes from another host and every chart has its numbers in a table beside it.

Modules:
  viewer     who is signed in (``Viewer``), ``signed_in`` / ``operators_only`` guards
  signin     the sign-in and sign-out pages
  charts     SVG charts with their data as a table
  pages/*    one module per area (dashboard, servers, machines, jobs, catalog, capacity)
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from flask import Blueprint, Flask, current_app, render_template, request
from flask_wtf.csrf import CSRFProtect

from headnode.config import HeadnodeSettings

PREFIX = "/console"

blueprint = Blueprint("console", __name__, url_prefix=PREFIX, template_folder="templates",
                      static_folder="static", static_url_path="/static")
#: checked on the console's own forms only (the APIs authenticate every request instead)
csrf = CSRFProtect()
#: (endpoint, label, operators only), in the order of the navigation; pages add theirs
NAV: list[tuple[str, str, bool]] = []


def nav_entry(endpoint: str, label: str, operators: bool = False) -> None:
    NAV.append((f"console.{endpoint}", label, operators))


@blueprint.before_request
def _check_csrf() -> None:
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()


@blueprint.errorhandler(404)
def _not_found(_error: Exception) -> Any:
    """A console page, not the APIs' JSON: what is not the viewer's looks like nothing."""
    return render_template("console/not_found.html"), 404


@blueprint.app_context_processor
def _template_helpers() -> dict[str, Any]:
    from headnode.console.viewer import current_viewer

    known = current_app.view_functions
    return {"console_nav": [n for n in NAV if n[0] in known], "viewer": current_viewer()}


def session_secret(settings: HeadnodeSettings) -> bytes:
    """The key of the console's signed session cookie: derived from the head node's message
    key (every API process of a cloud shares it), never that key itself."""
    return hmac.new(settings.resolved_message_key(), b"sdc-console-session",
                    hashlib.sha256).digest()


def register(app: Flask, settings: HeadnodeSettings) -> None:
    """Mount the console on the head node's app."""
    # imported for their routes on ``blueprint``
    from headnode.console import charts, signin  # noqa: F401
    from headnode.console.pages import load_pages

    load_pages()
    # globals, not context: imported macros (charts, tables) see them too
    app.jinja_env.globals["legend_colour"] = charts.legend_colour
    app.secret_key = session_secret(settings)
    app.config.update(
        SESSION_COOKIE_NAME="sdc_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH=PREFIX,
    )
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf.init_app(app)
    app.register_blueprint(blueprint)
