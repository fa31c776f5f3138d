"""Pages in their reader's language and time zone, with Flask-Babel.

Flask-Babel reads the same catalogues as calls (ivr/i18n: `BABEL_TRANSLATION_DIRECTORIES`
is ivr.i18n.catalogue.LOCALES, after IVR_LOCALES_DIR when set; domain `messages`), through
ivr.i18n.screen so that an edited .po is read as calls read it. A page's language is the
logged-in user's own (`ivr users set NAME --language fr`), else the best one the browser's
Accept-Language asks for, else English; its time zone is the user's own, else
IVR_DISPLAY_TIMEZONE, else UTC. Nothing here runs for a webhook: both are chosen the
first time a page needs them.

In templates: `{{ _("Calls") }}`, `{{ _("%(n)s calls", n=total) }}` (write a `%` of the
text itself as `%%`), and filters that write figures and times the reader's way:
`| number`, `| pct`, `| secs`, `| local` (date and time; `local("short")` without seconds,
`local("time")`, `local("date")`). `screen` is the reader's `ivr.i18n.screen.Screen`.
In Python: `from flask_babel import gettext as _` in a request, or `current_screen()`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Flask, current_app, g, has_request_context, request
from flask_babel import Babel, Domain
from werkzeug.utils import cached_property

from ivr.config import Config
from ivr.i18n import catalogue
from ivr.i18n.screen import Screen, best_language, screen, zone

log = logging.getLogger("ivr.web")


def current_screen() -> Screen:
    """The reader of this request: their language and time zone (chosen once per request)."""
    if not has_request_context():
        return screen(None, _instance_zone(current_app.config["IVR"]))
    found = g.get("ivr_screen")
    if found is None:
        found = g.ivr_screen = _choose()
    return found


def _choose() -> Screen:
    config: Config = current_app.config["IVR"]
    own = _user_settings()
    language = own.get("language") or best_language(
        tag for tag, _quality in request.accept_languages)
    return screen(language, own.get("timezone") or _instance_zone(config))


def _user_settings() -> dict:
    """The logged-in user's own language and time zone, if they chose them: whoever logs a
    person in puts them on `g.user_settings` ({"language": "fr", "timezone": "Europe/Paris"})."""
    return g.get("user_settings") or {}


def _instance_zone(config: Config) -> str:
    try:
        return zone(config.display_timezone).key
    except ValueError:
        return "UTC"


class _CatalogueDomain(Domain):
    """Flask-Babel's `messages` domain, read through ivr.i18n (the same chains, fallbacks
    and checks as calls)."""

    def get_translations(self) -> Any:
        return current_screen().translations


class _Babel(Babel):
    @cached_property
    def domain_instance(self) -> Domain:
        return _CatalogueDomain(domain=self.domain)


def init_app(app: Flask) -> None:
    """Flask-Babel on the app, with the reader's language and time zone, `_` in templates
    and the filters above."""
    config: Config = app.config["IVR"]
    try:
        zone(config.display_timezone)
    except ValueError as exc:
        log.error("IVR_DISPLAY_TIMEZONE: %s; times are shown in UTC", exc)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = ";".join(str(f) for f in catalogue.folders())
    app.config["BABEL_DOMAIN"] = catalogue.DOMAIN
    app.config["BABEL_DEFAULT_TIMEZONE"] = _instance_zone(config)
    _Babel(app, locale_selector=lambda: current_screen().language,
           timezone_selector=lambda: current_screen().tz.key)
    app.jinja_env.filters.update(local=_local, pct=_pct, secs=_secs, number=_number)
    app.context_processor(lambda: {"screen": current_screen()})


def _local(value: datetime | None, width: str = "medium") -> str:
    """A moment in the reader's zone and language. `width`: "medium" (with seconds), "short"
    (without), "time", "short time", "date"."""
    if value is None:
        return ""
    s = current_screen()
    if width.startswith("%"):  # a strftime pattern: the reader's zone, the pattern's own order
        return s.local(value).strftime(width)
    if width == "time":
        return s.time(value)
    if width == "short time":
        return s.time(value, "short")
    if width == "date":
        return s.date(value)
    return s.datetime(value, width)


def _pct(value: float | None, digits: int = 1) -> str:
    return current_screen().percent(value, digits)


def _secs(value: float | None) -> str:
    return current_screen().seconds(value)


def _number(value: float | None, digits: int = 0) -> str:
    return current_screen().number(value, digits)
