"""The supervisors' dashboard: a Flask blueprint under /dashboard.

Wait-time reports with charts, the call list and each call's timeline, CSV exports, and test
calls in the browser. Every page needs a logged-in user (`ivr users add NAME`); forms carry a
CSRF token. Nothing here is on the webhook path: pages read the SQL summaries the recorder
writes, and test calls run the engine like any call.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from flask import Blueprint, Flask, Request
from flask.sessions import SecureCookieSessionInterface, SessionMixin

from ivr.config import Config

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
               static_folder="static")

SESSION_HOURS = 12


def secret_key(config: Config) -> str:
    """IVR_SECRET_KEY, else a random key kept in <IVR_DATA_DIR>/dashboard_secret, created once
    and shared by every process on this machine (set IVR_SECRET_KEY when there are several)."""
    if config.secret_key:
        return config.secret_key
    path = Path(config.data_dir) / "dashboard_secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    key = _read_key(path)
    if key:
        return key
    # Several workers start at once: each writes a whole key aside and links it into place;
    # the link is atomic, so exactly one wins and the others read the winner's key.
    key = secrets.token_hex(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    try:
        os.link(tmp, path)
    except FileExistsError:
        existing = _read_key(path)
        if existing:
            key = existing
        else:  # an empty file left by a crash long ago
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return key


def _read_key(path: Path) -> str:
    try:
        return path.read_text("ascii").strip()
    except FileNotFoundError:
        return ""


def init_app(app: Flask) -> None:
    """Register the dashboard on the IVR app, with signed, HTTP-only session cookies."""
    config: Config = app.config["IVR"]
    app.secret_key = secret_key(config)
    app.config.update(
        SESSION_COOKIE_NAME="ivr_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
    )
    app.session_interface = DashboardSessions()
    from . import auth, views  # noqa: F401  (they add their routes to bp)

    app.register_blueprint(bp)


class DashboardSessions(SecureCookieSessionInterface):
    """Sessions for the dashboard only: Twilio's webhooks carry no cookie worth reading, and
    opening one costs every webhook a signing serializer."""

    _null: SessionMixin | None = None

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if not request.path.startswith(bp.url_prefix):
            # One for all webhooks: a null session refuses every change and is never saved.
            if DashboardSessions._null is None:
                DashboardSessions._null = self.null_session_class()
            return DashboardSessions._null
        return super().open_session(app, request)
