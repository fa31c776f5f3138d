"""Twilio request signatures: every webhook must prove it came from Twilio.

Twilio signs the URL it called, so behind a proxy the URL must be rebuilt as Twilio saw it:
from PUBLIC_URL when set, else from X-Forwarded-Proto and X-Forwarded-Host.

By default the signature is an HMAC-SHA1 keyed with the account's auth token. When a Twilio
Webhook Setting signs with a SharedKey instead, the request says so in
X-Twilio-Webhooks-Signature-Settings (`key=<id>,algorithm=HMAC_SHA256`), and the secret comes
from TWILIO_WEBHOOK_SHARED_KEYS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from functools import lru_cache, wraps
from typing import Any

from flask import abort, current_app, request
from twilio.request_validator import RequestValidator

log = logging.getLogger("ivr.security")

SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
ALGORITHMS = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}
_unknown_keys: set[str] = set()  # shared key ids already reported as missing (a few)


def public_base() -> str:
    """The server's base URL as Twilio sees it: PUBLIC_URL, else rebuilt from the proxy's
    X-Forwarded-Proto/Host headers, else from the request itself."""
    cfg = current_app.config["IVR"]
    if cfg.public_url:
        return cfg.public_url.rstrip("/")
    proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
    return f"{proto}://{host}{request.script_root}"


def public_url() -> str:
    """The URL of the current request as Twilio called it."""
    query = request.query_string.decode("latin-1")
    return public_base() + request.path + (f"?{query}" if query else "")


def websocket_base() -> str:
    """public_base() with ws:// or wss://, for Media Streams."""
    base = public_base()
    return "wss://" + base[len("https://"):] if base.startswith("https://") else (
        "ws://" + base[len("http://"):] if base.startswith("http://") else base)


def is_valid_websocket() -> bool:
    """Twilio signs a Media Stream's WebSocket handshake over the wss:// URL, with no params."""
    cfg = current_app.config["IVR"]
    if not cfg.validate_signatures:
        return True
    signature = request.headers.get("X-Twilio-Signature", "")
    key = signing_key()
    if not signature or key is None:
        return False
    secret, algorithm = key
    query = request.query_string.decode("latin-1")
    path = request.path + (f"?{query}" if query else "")
    validator = RequestValidator(secret)
    return any(validator.validate(base + path, {}, signature, algorithm)
               for base in (websocket_base(), public_base()))


@lru_cache(maxsize=4)
def _validator(token: str) -> RequestValidator:
    return RequestValidator(token)


def signature(token: str, url: str, params: Any, algorithm: str = "HMAC_SHA1") -> str:
    """Twilio's X-Twilio-Signature for a request: an HMAC (SHA-1 unless a Webhook Setting
    chose SHA-256) of the URL followed by every parameter's name and value, names sorted (and
    a repeated name's values sorted), in base64. The same as twilio's
    RequestValidator.compute_signature, at a fraction of its CPU, which counts on every webhook."""
    text = [url]
    lists = params.lists() if hasattr(params, "lists") else ((k, [v]) for k, v in params.items())
    for name, values in sorted(lists):
        if len(values) == 1:
            text += (name, values[0])
        else:
            for value in sorted(set(values)):
                text += (name, value)
    digest = hmac.digest(token.encode(), "".join(text).encode(), ALGORITHMS[algorithm])
    return base64.b64encode(digest).decode()


def signing_key() -> tuple[str, str] | None:
    """(secret, algorithm) Twilio signed the current request with: the auth token and
    HMAC_SHA1, or the SharedKey and algorithm its signature settings header names. None when
    the server does not have that secret, or the algorithm is unknown."""
    cfg = current_app.config["IVR"]
    settings = request.headers.get(SETTINGS_HEADER, "").strip()
    if not settings:  # as twilio's validator reads it: the auth token
        return (cfg.twilio_auth_token, "HMAC_SHA1") if cfg.twilio_auth_token else None
    fields = dict(part.strip().partition("=")[::2] for part in settings.split(","))
    key_id, algorithm = fields.get("key", "").strip(), fields.get("algorithm", "").strip().upper()
    algorithm = algorithm or "HMAC_SHA1"
    if algorithm not in ALGORITHMS:
        log.warning("webhook signed with %r, which this server does not know (%s): rejected",
                    algorithm, ", ".join(ALGORITHMS))
        return None
    try:
        keys = cfg.shared_keys
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


def is_valid() -> bool:
    cfg = current_app.config["IVR"]
    if not cfg.validate_signatures:
        return True
    given = request.headers.get("X-Twilio-Signature", "")
    key = signing_key()
    if not given or key is None:
        return False
    secret, algorithm = key
    params: Any = request.form if request.method == "POST" else {}
    url = public_url()
    # One HMAC for the URL as rebuilt; the library's full check (which also tries the URL with
    # and without a port) only when that does not match.
    if hmac.compare_digest(signature(secret, url, params, algorithm), given):
        return True
    return _validator(secret).validate(url, params, given, algorithm)


def twilio_only(view):
    """Reject (403) any request without a valid X-Twilio-Signature."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if not is_valid():
            log.warning("rejected unsigned or badly signed request to %s (checked URL %s)",
                        request.path, public_url())
            abort(403)
        return view(*args, **kwargs)

    return wrapper


def stream_token(auth_token: str, call_sid: str, step: int | str) -> str:
    """What a Media Stream carries to show it was started by this server for this call's step:
    Twilio signs a stream's URL only, the same for every stream, so that signature alone
    could be replayed to answer any call's menu."""
    message = f"{call_sid}:{step}".encode()
    return hmac.new((auth_token or "").encode(), message, hashlib.sha256).hexdigest()[:32]
