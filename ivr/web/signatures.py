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
from functools import lru_cache
from typing import Any

from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from .webhook import Webhook

log = logging.getLogger("ivr.security")

SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
ALGORITHMS = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}
_unknown_keys: set[str] = set()  # shared key ids already reported as missing (a few)


def public_base(hook: Webhook) -> str:
    """The server's base URL as Twilio sees it: PUBLIC_URL, else rebuilt from the proxy's
    X-Forwarded-Proto/Host headers, else from the request itself."""
    if hook.config.public_url:
        return hook.config.public_url.rstrip("/")
    proto = (hook.header("X-Forwarded-Proto") or hook.scheme).split(",")[0].strip()
    host = (hook.header("X-Forwarded-Host") or hook.host).split(",")[0].strip()
    return f"{proto}://{host}{hook.script_root}"


def public_url(hook: Webhook) -> str:
    """The URL of the request as Twilio called it."""
    query = hook.query_string
    return public_base(hook) + hook.path + (f"?{query}" if query else "")


def websocket_base(hook: Webhook) -> str:
    """public_base() with ws:// or wss://, for Media Streams."""
    base = public_base(hook)
    return "wss://" + base[len("https://"):] if base.startswith("https://") else (
        "ws://" + base[len("http://"):] if base.startswith("http://") else base)


def is_valid_websocket(hook: Webhook) -> bool:
    """Twilio signs a Media Stream's WebSocket handshake over the wss:// URL, with no params."""
    if not hook.config.validate_signatures:
        return True
    signature = hook.header("X-Twilio-Signature")
    key = signing_key(hook)
    if not signature or key is None:
        return False
    secret, algorithm = key
    query = hook.query_string
    path = hook.path + (f"?{query}" if query else "")
    validator = RequestValidator(secret)
    return any(validator.validate(base + path, {}, signature, algorithm)
               for base in (websocket_base(hook), public_base(hook)))


@lru_cache(maxsize=4)
def _validator(token: str) -> RequestValidator:
    return RequestValidator(token)


def signature(token: str, url: str, params: Any, algorithm: str = "HMAC_SHA1") -> str:
    """Twilio's X-Twilio-Signature for a request: an HMAC (SHA-1 unless a Webhook Setting
    chose SHA-256) of the URL followed by every parameter's name and value, names sorted (and
    a repeated name's values sorted, once each), in base64. `params` is a list of (name,
    value) pairs, a dict or a MultiDict. The same as twilio's
    RequestValidator.compute_signature, at a fraction of its CPU, which counts on every webhook."""
    if hasattr(params, "items"):
        pairs = list(params.items(multi=True)) if hasattr(params, "lists") else list(params.items())
    else:
        pairs = list(params)
    names = {name for name, _ in pairs}
    if len(names) == len(pairs):  # each name once (Twilio's way): the pairs sort by name
        ordered = sorted(pairs)
    else:
        ordered = [(name, value) for name in sorted(names)
                   for value in sorted({v for n, v in pairs if n == name})]
    text = url + "".join([name + value for name, value in ordered])
    digest = hmac.digest(token.encode(), text.encode(), ALGORITHMS[algorithm])
    return base64.b64encode(digest).decode()


def signing_key(hook: Webhook) -> tuple[str, str] | None:
    """(secret, algorithm) Twilio signed the request with: the auth token and HMAC_SHA1, or
    the SharedKey and algorithm its signature settings header names. None when the server
    does not have that secret, or the algorithm is unknown."""
    cfg = hook.config
    settings = hook.header(SETTINGS_HEADER).strip()
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


def is_valid(hook: Webhook) -> bool:
    """Whether the request carries Twilio's valid X-Twilio-Signature (always, with signature
    validation turned off)."""
    if not hook.config.validate_signatures:
        return True
    given = hook.header("X-Twilio-Signature")
    key = signing_key(hook)
    if not given or key is None:
        return False
    secret, algorithm = key
    pairs = hook.pairs if hook.method == "POST" else []
    url = public_url(hook)
    # One HMAC for the URL as rebuilt; the library's full check (which also tries the URL with
    # and without a port) only when that does not match.
    if hmac.compare_digest(signature(secret, url, pairs, algorithm), given):
        return True
    return _validator(secret).validate(url, MultiDict(pairs), given, algorithm)


def stream_token(auth_token: str, call_sid: str, step: int | str) -> str:
    """What a Media Stream carries to show it was started by this server for this call's step:
    Twilio signs a stream's URL only, the same for every stream, so that signature alone
    could be replayed to answer any call's menu."""
    message = f"{call_sid}:{step}".encode()
    return hmac.new((auth_token or "").encode(), message, hashlib.sha256).hexdigest()[:32]
