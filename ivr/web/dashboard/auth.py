"""Logging in and out, the login requirement on every page, and CSRF tokens on forms."""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
from typing import Any

import redis
from flask import Response, abort, current_app, g, redirect, render_template, request, session, url_for

from ivr.web import users

from . import bp

log = logging.getLogger("ivr.dashboard")

PUBLIC_ENDPOINTS = ("dashboard.login", "dashboard.static")
MAX_FAILURES = 10  # failed logins per address, and per name, in FAILURE_WINDOW_S
FAILURE_WINDOW_S = 15 * 60
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
    """A session for a user who still exists with the password they logged in with: removing
    a user or changing their password (`ivr users remove|passwd`) ends their sessions."""
    name = session.get("user")
    if not name:
        return False
    stamp = users.session_stamp(store(), name)
    if stamp is None or not hmac.compare_digest(stamp, session.get("stamp", "")):
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


def _too_many(keys: list[str]) -> bool:
    try:
        values = services().redis.mget(keys)
    except redis.RedisError:  # Redis trouble must not lock supervisors out
        return False
    return any(int(v or 0) >= MAX_FAILURES for v in values)


def _failed(keys: list[str]) -> None:
    try:
        pipe = services().redis.pipeline()
        for key in keys:
            pipe.incr(key)
            pipe.expire(key, FAILURE_WINDOW_S)
        pipe.execute()
    except redis.RedisError:
        log.exception("could not count a failed dashboard login")


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
    keys = [f"ivr:dashboard:login:ip:{request.remote_addr}", f"ivr:dashboard:login:user:{name.lower()}"]
    if _too_many(keys):
        log.warning("dashboard login for %r from %s refused: too many failures", name, request.remote_addr)
        return render_template("dashboard/login.html", next=next_url,
                               error="Too many failed attempts. Wait 15 minutes and try again."), 429
    if not users.authenticate(store(), name, password):
        _failed(keys)
        log.warning("failed dashboard login for %r from %s", name, request.remote_addr)
        return render_template("dashboard/login.html", next=next_url,
                               error="Wrong user name or password."), 401
    session.clear()  # a new session for the logged-in user (no fixation)
    session["user"] = name
    session["stamp"] = users.session_stamp(store(), name) or ""
    session["csrf"] = secrets.token_urlsafe(32)
    session.permanent = True
    log.info("dashboard login: %s from %s", name, request.remote_addr)
    return redirect(next_url)


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("dashboard.login"))
