"""Twilio's REST API client, pointed at a stand-in when TWILIO_API_BASE_URL is set."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from twilio.rest import Client

from ivr.config import Config
from ivr.errors import IvrError


def client(config: Config) -> Client:
    """A Twilio client for the account in `config` (tests and staging can use a stand-in)."""
    if not config.twilio_account_sid or not config.twilio_auth_token:
        raise RuntimeError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are needed to use Twilio's API")
    c = Client(config.twilio_account_sid, config.twilio_auth_token)
    if config.twilio_api_base_url:
        c.api.base_url = config.twilio_api_base_url.rstrip("/")
    return c


# Twilio's REST API: api.twilio.com, and the regional hosts (api.dublin.ie1.twilio.com, ...).
_TWILIO_API_HOST = re.compile(r"api(?:\.[a-z0-9-]+)*\.twilio\.com")


class UntrustedMediaUrl(IvrError, ValueError):
    """A media URL that is not Twilio's: the account's credentials are never sent there."""


def media_url(config: Config, url: str) -> str:
    """Where to fetch a Twilio media URL (a RecordingUrl) with the account's credentials:
    Twilio's API over https (moved to the stand-in when TWILIO_API_BASE_URL is set), or the
    stand-in itself. Anything else raises UntrustedMediaUrl. The URL is rebuilt from the
    checked parts, so no other reading of it can reach another host."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise UntrustedMediaUrl(f"{url!r} has a bad port") from None
    host = parts.hostname or ""
    clean = parts.username is None and parts.password is None
    base = urlsplit(config.twilio_api_base_url) if config.twilio_api_base_url else None
    if clean and parts.scheme == "https" and port in (None, 443) and _TWILIO_API_HOST.fullmatch(host):
        if base is None:
            return urlunsplit(("https", host, parts.path, parts.query, ""))
        return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, ""))
    if (base is not None and clean and (parts.scheme, host, port) == (base.scheme, base.hostname, base.port)
            and parts.path.startswith(base.path.rstrip("/") + "/")):
        return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))
    allowed = "https://api.twilio.com" + (f" or {config.twilio_api_base_url}" if base else "")
    raise UntrustedMediaUrl(f"{url!r} is not on Twilio's API ({allowed})")
