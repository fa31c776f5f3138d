"""Twilio's REST API client, pointed at a stand-in when TWILIO_API_BASE_URL is set."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from twilio.rest import Client

from ivr.config import Config


def client(config: Config) -> Client:
    """A Twilio client for the account in `config` (tests and staging can use a stand-in)."""
    if not config.twilio_account_sid or not config.twilio_auth_token:
        raise RuntimeError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are needed to use Twilio's API")
    c = Client(config.twilio_account_sid, config.twilio_auth_token)
    if config.twilio_api_base_url:
        c.api.base_url = config.twilio_api_base_url.rstrip("/")
    return c


def media_url(config: Config, url: str) -> str:
    """A Twilio media URL (e.g. a RecordingUrl), moved to the stand-in when one is set."""
    if not config.twilio_api_base_url:
        return url
    base = urlsplit(config.twilio_api_base_url)
    parts = urlsplit(url)
    path = base.path.rstrip("/") + parts.path
    return urlunsplit((base.scheme, base.netloc, path, parts.query, parts.fragment))
