"""The Flask application factory."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, jsonify

from ivr.config import Config, safe_url
from ivr.runtime.services import Services

log = logging.getLogger("ivr")

MAX_BODY = 1024 * 1024


def create_app(config: Config | dict[str, Any] | None = None, services: Services | None = None) -> Flask:
    """Build the IVR web app. `config` may be a Config, or overrides applied on top of the
    environment (e.g. ``create_app({"redis_url": "redis://..."})``)."""
    if config is None:
        config = Config.from_env()
    elif isinstance(config, dict):
        config = Config.from_env(**config)
    app = Flask(__name__)
    app.config["IVR"] = config
    if config.propagate_exceptions:  # a bug reaches the test client (or a 500), not an apology
        app.config["PROPAGATE_EXCEPTIONS"] = True
    # Twilio's bodies are a few KB (what a caller said is the longest part): anything far
    # larger is refused with 413 before it is read.
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_FORM_MEMORY_SIZE"] = MAX_BODY
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not config.validate_signatures:
        log.warning("Twilio signature validation is OFF (IVR_VALIDATE_SIGNATURES=false): anyone who "
                    "can reach this server can drive calls. Never run like this in production.")
    elif not config.twilio_auth_token:
        log.warning("TWILIO_AUTH_TOKEN is not set: every Twilio webhook %swill be rejected with 403.",
                    "not signed with a shared key " if config.twilio_webhook_shared_keys else "")
    if services is None:
        from callbacks.runtime import Runtime

        services = Services(config, callbacks=Runtime)
    svc = services
    app.extensions["ivr"] = svc
    try:
        svc.redis.ping()
    except redis.RedisError as exc:  # said now, not first heard from a caller
        log.error("cannot reach Redis at %s (%s): every call will get the apology and the "
                  "fallback number until it answers", safe_url(svc.redis_url or ""), exc)
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
    from .voice import bp as voice

    app.register_blueprint(voice)  # Twilio's webhooks under /voice
    from .messages import bp as messages

    app.register_blueprint(messages)  # texts' delivery reports and STOP, under /sms
    from .metrics import init_app as init_metrics

    init_metrics(app, webhooks=(voice.name, messages.name))  # /metrics, and Twilio's webhooks timed
    from callbacks.api import bp as callbacks_api

    app.register_blueprint(callbacks_api)
    init_media(app)
    from .dashboard import init_app as init_dashboard
    from .localization import init_app as init_localization

    init_localization(app)  # pages in their reader's language and time zone (Flask-Babel)

    init_dashboard(app)  # the supervisors' dashboard under /dashboard
    for flow in svc.registry.flows.values():
        svc.vosk_available(flow)  # a missing model is reported at start, not mid-call

    @app.get("/healthz")
    def health():
        try:
            redis_ok = bool(svc.redis.ping())
        except redis.RedisError:
            redis_ok = False
        flows = sorted(svc.registry.flows)
        ok = redis_ok and bool(flows)
        return jsonify(ok=ok, redis=redis_ok, flows=flows), 200 if ok else 503

    return app
