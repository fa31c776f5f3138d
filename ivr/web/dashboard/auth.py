"""Logging in and out, the login requirement on every page, and CSRF tokens on forms."""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import threading
from typing import Any

from flask import (
    Response,
    abort,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _

from ivr.web import users
from ivr.web.proxies import client_address

from . import SESSION_HOURS, bp, sessions, throttle

log = logging.getLogger("ivr.dashboard")

PUBLIC_ENDPOINTS = ("dashboard.login", "dashboard.static")
_migrate_lock = threading.Lock()


def services() -> Any:
    return current_app.extensions["ivr"]


def store() -> Any:
    """The SQL store, its schema brought up to date once per process."""
    svc = services()
    if not getattr(svc, "dashboard_schema_ready", False):
        with _migrate_lock:
            if not getattr(svc, "dashboard_schema_ready", False):
                svc.migrate()
                svc.dashboard_schema_ready = True
    return svc.store


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


@bp.context_processor
def _inject() -> dict:
    return {"csrf_token": csrf_token, "user": session.get("user")}


def _has_nul() -> bool:
    values = [request.path] + [v for _, vs in request.args.lists() for v in vs]
    if request.method == "POST":
        values += [v for _, vs in request.form.lists() for v in vs]
    return any("\x00" in v for v in values)


def _control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


@bp.before_request
def _guard() -> Response | None:
    # No text column takes a NUL (PostgreSQL refuses it), and no page or name holds one.
    if _has_nul():
        abort(400, description="This address or form holds a NUL character, which no value here can contain.")
    if request.endpoint not in PUBLIC_ENDPOINTS and not _signed_in():
        return redirect(url_for("dashboard.login", next=_safe_next(request.full_path)))
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        expected = session.get("csrf", "")
        if not expected or not hmac.compare_digest(sent, expected):
            abort(400, description="This form has expired or did not come from this site. Reload the "
                                   "page and try again.")
    g.user = session.get("user")
    return None


def _signed_in() -> bool:
    """A session still open on the server (logging out closes it, ivr.web.dashboard.sessions)
    for a user who still exists with the password they logged in with: removing a user or
    changing their password (`ivr users remove|passwd`) ends their sessions."""
    name = session.get("user")
    if not name:
        return False
    stamp = users.session_stamp(store(), name)
    if (stamp is None or not hmac.compare_digest(stamp, session.get("stamp", ""))
            or not sessions.is_open(services().redis, session.get("sid", ""), name)):
        session.clear()
        return False
    return True


def _safe_next(target: str | None) -> str | None:
    """Only paths inside the dashboard: never an open redirect to another site."""
    if not target:
        return None
    target = target.rstrip("?")
    if target.startswith("/dashboard") and not target.startswith("//") and "\\" not in target:
        return target
    return None


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if _control(request.values.get("next", "")):  # it would go into the Location header
        abort(400, description="The page to open after logging in is not a valid address.")
    next_url = _safe_next(request.values.get("next")) or url_for("dashboard.overview")
    if request.method == "GET":
        if _signed_in():
            return redirect(next_url)
        return render_template("dashboard/login.html", next=next_url, error=None)
    name = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    address = client_address(request, current_app.config["IVR"])
    wait = throttle.take_turn(services().redis, address, name)
    if wait:
        log.warning("dashboard login for %r from %s held back %.1f s after failed attempts",
                    name, address, wait)
        seconds = max(1, math.ceil(wait))
        page = render_template("dashboard/login.html", next=next_url, error=_(
            "Too many failed attempts. Try again in %(seconds)s seconds.", seconds=seconds))
        response = make_response(page, 429)
        response.headers["Retry-After"] = str(seconds)
        return response
    if not users.authenticate(store(), name, password):
        log.warning("failed dashboard login for %r from %s", name, address)
        return render_template("dashboard/login.html", next=next_url,
                               error="Wrong user name or password."), 401
    throttle.succeeded(services().redis, address, name)
    session.clear()  # a new session for the logged-in user (no fixation)
    session["user"] = name
    session["sid"] = sessions.open_session(services().redis, name, SESSION_HOURS * 3600)
    session["stamp"] = users.session_stamp(store(), name) or ""
    session["csrf"] = secrets.token_urlsafe(32)
    session.permanent = True
    log.info("dashboard login: %s from %s", name, address)
    return redirect(next_url)


@bp.post("/logout")
def logout() -> Any:
    sessions.close(services().redis, session.get("sid", ""))  # a copy of the cookie is over too
    session.clear()
    return redirect(url_for("dashboard.login"))
