"""Which proxies' forwarded headers the server believes: IVR_TRUSTED_PROXIES.

A request that comes straight from a client could say anything in X-Forwarded-For,
X-Forwarded-Proto or X-Forwarded-Host. Only a request whose peer address is a trusted proxy
(loopback by default: nginx on the same machine) has them read: the client's address for the
dashboard's login throttle, and the URL Twilio called when PUBLIC_URL is not set.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from werkzeug import Request

from ivr.config import Config


@lru_cache(maxsize=1024)
def _is_trusted(address: str | None, trusted: tuple) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def from_trusted_proxy(request: Request, config: Config) -> bool:
    """Whether the request came through a trusted proxy (its peer is one)."""
    return _is_trusted(request.remote_addr, config.proxy_networks)


def client_address(request: Request, config: Config) -> str:
    """The client's address: the peer's, or when the peer is a trusted proxy, the last address
    in X-Forwarded-For that is not one (what the first trusted proxy saw)."""
    trusted = config.proxy_networks
    address = request.remote_addr or ""
    if not _is_trusted(address, trusted):
        return address
    for hop in reversed(request.headers.getlist("X-Forwarded-For")):
        for candidate in reversed([h.strip() for h in hop.split(",") if h.strip()]):
            if not _is_trusted(candidate, trusted):
                return candidate[:64]
            address = candidate
    return address


def forwarded(request: Request, config: Config, header: str) -> str | None:
    """The first value of a forwarded header (X-Forwarded-Proto, X-Forwarded-Host), from a
    trusted proxy only; None otherwise."""
    if not from_trusted_proxy(request, config):
        return None
    value = request.headers.get(header)
    first = (value or "").split(",")[0].strip()
    return first or None
