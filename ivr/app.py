"""The Flask application factory."""

from __future__ import annotations

import logging
from functools import lru_cache
from io import BytesIO
from typing import Any
from urllib.parse import unquote_plus

from flask import Flask, Request, jsonify
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.utils import cached_property

from .config import Config
from .services import Services

log = logging.getLogger("ivr")


class TwilioRequest(Request):
    """Flask's request, reading Twilio's small url-encoded webhook bodies in one step:
    werkzeug's general form parser (streams, limits, files) costs several times as much on
    every webhook. Anything else, or anything large, takes werkzeug's way."""

    FAST_LIMIT = 64 * 1024

    def _load_form_data(self) -> None:
        if "form" in self.__dict__:
            return
        environ = self.environ
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        kind = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        limit = self.max_content_length
        if (kind != "application/x-www-form-urlencoded" or not 0 <= length <= self.FAST_LIMIT
                or (limit is not None and length > limit)):
            super()._load_form_data()
            return
        body = getattr(self, "_cached_data", None)  # get_data() may have read it already
        if body is None:
            body = environ["wsgi.input"].read(length) if length else b""
            self._cached_data = body  # what get_data() answers from now on
            self.__dict__["stream"] = BytesIO()  # read to the end, as werkzeug leaves it
        self.__dict__["form"] = ImmutableMultiDict(parse_form(body.decode("utf-8", "replace")))
        self.__dict__["files"] = ImmutableMultiDict()

    @cached_property
    def args(self) -> ImmutableMultiDict:
        """The URL's parameters; ours are short and plain (`s=2`), read in one step."""
        query = self.environ.get("QUERY_STRING", "")
        if "%" in query or not query.isascii():  # werkzeug's rules for invalid UTF-8
            return Request.args.__get__(self, type(self))
        return ImmutableMultiDict(parse_form(query))


def parse_form(text: str) -> list[tuple[str, str]]:
    """`name=value&...` pairs, as urllib's parse_qsl(keep_blank_values=True) reads them,
    decoding only the parts that need it."""
    pairs = []
    for part in text.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((_unquote(name) if "%" in name or "+" in name else name,
                          _unquote(value) if "%" in value or "+" in value else value))
    return pairs


@lru_cache(maxsize=4096)
def _unquote_short(text: str) -> str:
    return unquote_plus(text)


def _unquote(text: str) -> str:
    # The same few encoded values come in webhook after webhook: the caller's and the called
    # number (`%2B1...`), the city, the call status. Long ones (what a caller said) are not kept.
    return _unquote_short(text) if len(text) <= 64 else unquote_plus(text)


def create_app(config: Config | dict[str, Any] | None = None, services: Services | None = None) -> Flask:
    """Build the IVR web app. `config` may be a Config, or overrides applied on top of the
    environment (e.g. ``create_app({"redis_url": "redis://..."})``)."""
    if config is None:
        config = Config.from_env()
    elif isinstance(config, dict):
        config = Config.from_env(**config)
    app = Flask(__name__)
    app.request_class = TwilioRequest
    app.config["IVR"] = config
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not config.validate_signatures:
        log.warning("Twilio signature validation is OFF (IVR_VALIDATE_SIGNATURES=false): anyone who "
                    "can reach this server can drive calls. Never run like this in production.")
    elif not config.twilio_auth_token:
        log.warning("TWILIO_AUTH_TOKEN is not set: every Twilio webhook %swill be rejected with 403.",
                    "not signed with a shared key " if config.twilio_webhook_shared_keys else "")
    svc = services or Services(config)
    app.extensions["ivr"] = svc
    if config.recorder:
        try:
            svc.migrate()  # the recorder threads write steps as soon as calls arrive
        except Exception:
            # Calls must still be answered while the database is down; the log waits in Redis.
            log.exception("could not migrate the database at %s", config.effective_database_url)
    report = svc.registry.last_report
    if not svc.registry.flows:
        log.error("no flow could be loaded from %s: calls will get an apology and the fallback "
                  "number", config.flows_dir)
    for path, problems in report.failed.items():
        log.error("flow file %s was not loaded (%d errors)", path, len([p for p in problems
                                                                        if p.severity == "error"]))

    from .media import init_app as init_media
    from .voice import bp as voice_bp

    app.register_blueprint(voice_bp)
    from callbacks.api import bp as callbacks_api

    app.register_blueprint(callbacks_api)
    init_media(app)
    from .dashboard import init_app as init_dashboard

    init_dashboard(app)  # the supervisors' dashboard under /dashboard
    for flow in svc.registry.flows.values():
        svc.vosk_available(flow)  # a missing model is reported at start, not mid-call

    @app.get("/healthz")
    def health():
        try:
            redis_ok = bool(svc.redis.ping())
        except Exception:
            redis_ok = False
        flows = sorted(svc.registry.flows)
        ok = redis_ok and bool(flows)
        return jsonify(ok=ok, redis=redis_ok, flows=flows), 200 if ok else 503

    return app
