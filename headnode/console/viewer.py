"""Who is looking at the console: an operator (every tenant's things) or a tenant (their own
only). Flask's signed session cookie names the viewer and a session id; the session itself
is on only while Redis keeps it (headnode.services.console_sessions), so signing out ends it
everywhere. Pages take the ``Viewer`` from a guard."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from flask import abort, current_app, g, redirect, request, session, url_for

from headnode.services import console_sessions
from headnode.services.context import ServiceContext

OPERATOR = "operator"
TENANT = "tenant"
SESSION_KEY = "viewer"

View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True)
class Viewer:
    kind: str  # OPERATOR or TENANT
    login: str
    #: the tenant's account uuid ("" for an operator)
    account_uuid: str = ""

    @property
    def is_operator(self) -> bool:
        return self.kind == OPERATOR

    def caller(self) -> dict[str, Any]:
        """Who acted, as the jobs a console action starts record it."""
        if self.is_operator:
            return {"type": "operator", "via": "console"}
        return {"type": "console", "account": self.account_uuid, "login": self.login}

    @property
    def session_login(self) -> str:
        """Whose sessions a password change ends (the operator's: none of a tenant's)."""
        return self.login if not self.is_operator else ":operator"

    def to_session(self) -> dict[str, str]:
        return {"kind": self.kind, "login": self.login, "account_uuid": self.account_uuid}


def service_context() -> ServiceContext:
    return cast(ServiceContext, current_app.extensions["sdc"])


def current_viewer() -> Viewer | None:
    """Who the request's session is, if it is still on (once per request)."""
    if "console_viewer" in g:
        return cast(Viewer | None, g.console_viewer)
    g.console_viewer = _session_viewer()
    return cast(Viewer | None, g.console_viewer)


def _session_viewer() -> Viewer | None:
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict) or data.get("kind") not in (OPERATOR, TENANT):
        return None
    viewer = Viewer(str(data["kind"]), str(data.get("login", "")),
                    str(data.get("account_uuid", "")))
    sid = data.get("sid")
    if not isinstance(sid, str) or not console_sessions.alive(service_context(), sid,
                                                              viewer.session_login):
        session.clear()  # signed out (here or on another API process), or expired
        return None
    return viewer


def sign_in(viewer: Viewer) -> None:
    session.clear()  # a new session for a new sign-in: nothing carried over
    sid = console_sessions.start(service_context(), viewer.session_login)
    session[SESSION_KEY] = {**viewer.to_session(), "sid": sid}
    g.console_viewer = viewer


def sign_out() -> None:
    data = session.get(SESSION_KEY)
    if isinstance(data, dict) and isinstance(data.get("sid"), str):
        console_sessions.end(service_context(), data["sid"])
    session.clear()
    g.console_viewer = None


def signed_in(view: View) -> View:
    """Pages for everyone signed in: the view gets ``viewer`` as its first argument."""
    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        viewer = current_viewer()
        if viewer is None:
            return redirect(url_for("console.signin", next=request.full_path))
        return view(viewer, *args, **kwargs)
    return cast(View, guarded)


def operators_only(view: View) -> View:
    """Pages for operators: a tenant gets a 404, as for anything that is not theirs."""
    @functools.wraps(view)
    def guarded(viewer: Viewer, *args: Any, **kwargs: Any) -> Any:
        if not viewer.is_operator:
            abort(404)
        return view(viewer, *args, **kwargs)
    return cast(View, signed_in(guarded))
