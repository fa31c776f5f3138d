"""Twilio request signatures: every webhook must prove it came from Twilio.

Twilio signs the URL it called, so behind a proxy the URL must be rebuilt as Twilio saw it:
from PUBLIC_URL when set, else from X-Forwarded-Proto and X-Forwarded-Host when they come
from a trusted proxy (ivr.web.proxies).

By default the signature is an HMAC-SHA1 keyed with the account's auth token. When a Twilio
Webhook Setting signs with a SharedKey instead, the request says so in
X-Twilio-Webhooks-Signature-Settings (`key=<id>,algorithm=HMAC_SHA256`), and the secret comes
from TWILIO_WEBHOOK_SHARED_KEYS. The check itself is twilio's `RequestValidator`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from functools import lru_cache

from twilio.request_validator import RequestValidator
from werkzeug import Request

from ivr.config import Config

from .proxies import forwarded

log = logging.getLogger("ivr.security")

SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
ALGORITHMS = ("HMAC_SHA1", "HMAC_SHA256")
_unknown_keys: set[str] = set()  # shared key ids already reported as missing (a few)


def public_base(request: Request, config: Config) -> str:
    """The server's base URL as Twilio sees it: PUBLIC_URL, else rebuilt from a trusted
    proxy's X-Forwarded-Proto/Host headers (IVR_TRUSTED_PROXIES), else from the request itself."""
    if config.public_url:
        return config.public_url.rstrip("/")
    proto = forwarded(request, config, "X-Forwarded-Proto") or request.scheme
    host = forwarded(request, config, "X-Forwarded-Host") or request.host
    return f"{proto}://{host}{request.script_root}"


def _path_and_query(request: Request) -> str:
    # The query as it came (percent-encoded, as Twilio signed it).
    query = request.query_string.decode("utf-8", "replace")
    return request.path + (f"?{query}" if query else "")


def public_url(request: Request, config: Config) -> str:
    """The URL of the request as Twilio called it."""
    return public_base(request, config) + _path_and_query(request)


def websocket_base(request: Request, config: Config) -> str:
    """public_base() with ws:// or wss://, for Media Streams."""
    base = public_base(request, config)
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            return ws + base[len(http):]
    return base


def signing_key(request: Request, config: Config) -> tuple[str, str] | None:
    """(secret, algorithm) Twilio signed the request with: the auth token and HMAC_SHA1, or
    the SharedKey and algorithm its signature settings header names. None when the server
    does not have that secret, or the algorithm is unknown."""
    settings = request.headers.get(SETTINGS_HEADER, "").strip()
    if not settings:  # as twilio's validator reads it: the auth token
        return (config.twilio_auth_token, "HMAC_SHA1") if config.twilio_auth_token else None
    fields = dict(part.strip().partition("=")[::2] for part in settings.split(","))
    key_id, algorithm = fields.get("key", "").strip(), fields.get("algorithm", "").strip().upper()
    algorithm = algorithm or "HMAC_SHA1"
    if algorithm not in ALGORITHMS:
        log.warning("webhook signed with %r, which this server does not know (%s): rejected",
                    algorithm, ", ".join(ALGORITHMS))
        return None
    try:
        keys = config.shared_keys
    except ValueError as exc:  # `ivr serve` refuses to start with it; an embedding app may not
        log.error("%s: webhooks signed with a shared key are rejected", exc)
        return None
    secret = keys.get(key_id) or keys.get("")
    if secret is None:
        # Once per key (Twilio retries every webhook), for a few keys: the header is not
        # signed, so anyone can send any number of made-up ids.
        shown = key_id[:80]
        if shown not in _unknown_keys and len(_unknown_keys) < 20:
            _unknown_keys.add(shown)
            log.error("Twilio signed webhooks with the SharedKey %r, whose secret this server does "
                      "not have: add it to TWILIO_WEBHOOK_SHARED_KEYS as %s:SECRET. Every such "
                      "webhook is rejected with 403 until then.", shown, shown or "KEY_ID")
        return None
    return secret, algorithm


@lru_cache(maxsize=8)
def _validator(secret: str) -> RequestValidator:
    return RequestValidator(secret)


def is_valid(request: Request, config: Config) -> bool:
    """Whether a webhook carries Twilio's valid X-Twilio-Signature over its URL and every
    form parameter, repeated ones included (always true with signature validation off).
    Reads the form: a body over MAX_CONTENT_LENGTH raises werkzeug's RequestEntityTooLarge."""
    if not config.validate_signatures:
        return True
    given = request.headers.get("X-Twilio-Signature", "")
    key = signing_key(request, config)
    if not given or key is None:
        return False
    secret, algorithm = key
    validator, url = _validator(secret), public_url(request, config)
    # One HMAC for the URL as rebuilt (a third of what `validate` costs, on every webhook);
    # the library's full check, which also tries the URL with and without its port, when
    # that does not match.
    expected = validator.compute_signature(url, request.form, algorithm)
    if hmac.compare_digest(expected.encode(), given.encode()):
        return True
    return validator.validate(url, request.form, given, algorithm)


def is_valid_websocket(request: Request, config: Config) -> bool:
    """Twilio signs a Media Stream's WebSocket handshake over the wss:// URL, with no params."""
    if not config.validate_signatures:
        return True
    given = request.headers.get("X-Twilio-Signature", "")
    key = signing_key(request, config)
    if not given or key is None:
        return False
    secret, algorithm = key
    path = _path_and_query(request)
    return any(_validator(secret).validate(base + path, {}, given, algorithm)
               for base in (websocket_base(request, config), public_base(request, config)))


def stream_token(auth_token: str, call_sid: str, step: int | str) -> str:
    """What a Media Stream carries to show it was started by this server for this call's step:
    Twilio signs a stream's URL only, the same for every stream, so that signature alone
    could be replayed to answer any call's menu."""
    message = f"{call_sid}:{step}".encode()
    return hmac.new((auth_token or "").encode(), message, hashlib.sha256).hexdigest()[:32]
