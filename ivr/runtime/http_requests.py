"""Making the HTTP request a `request:` node (or an HTTP caller directory) asks for.

This is the one place a flow's request leaves the server. `prepare` puts the secrets in
(environment variables named by the flow), refuses hosts that IVR_REQUEST_HOSTS does not
allow and asks the host's circuit breaker, at once; `send` sends it without following
redirects (a redirect could lead anywhere) and reads at most MAX_BODY_BYTES of the answer
within the node's timeout, from sending to the last byte. What comes back is an
events.RequestDone for the engine to judge; nothing here raises.

The web server runs it outside the webhooks (ivr.runtime.request_runner); the simulator,
test calls and `ivr flows test --live-requests` run it directly.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from ivr.config import AllowedHosts
from ivr.engine import actions as A
from ivr.engine import events as E
from ivr.flows.templates import MissingSecret, fill_secrets, mask_secrets

from .circuit import Circuit

log = logging.getLogger("ivr.requests")

MAX_BODY_BYTES = 256 * 1024
USER_AGENT = "support-ivr"
_local = threading.local()


def _session() -> requests.Session:
    """One session per thread (a Session is not shared between threads), keeping connections."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.trust_env = False  # no proxy or .netrc from the environment: only what the flow says
    return session


def _fill(value: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return fill_secrets(value, environ)
    if isinstance(value, dict):
        return {k: _fill(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, environ) for v in value]
    return value


def target(url: str, hosts: AllowedHosts) -> tuple[str, str] | str:
    """(the URL to send, "host:port") if it may be fetched, else why not."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the URL cannot be read"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the URL is not http:// or https:// with a host"
    if parts.username is not None or parts.password is not None:
        return "the URL carries a user name or password"
    if not hosts.allows(parts.scheme, parts.hostname, port):
        return f"host {parts.hostname}{':' + str(port) if port else ''} is not in IVR_REQUEST_HOSTS"
    default = 443 if parts.scheme == "https" else 80
    return url, f"{parts.hostname.lower()}:{port or default}"


@dataclass
class Prepared:
    """A request ready to be sent: its secrets filled in, its host allowed, its circuit closed."""

    req: A.Request
    url: str
    key: str  # "host:port", the circuit breaker's
    headers: dict[str, str]
    json: Any
    form: list[tuple[str, str]]
    started: float
    label: str
    clock: Callable[[], float]


def prepare(req: A.Request, *, hosts: AllowedHosts, environ: Mapping[str, str] | None = None,
            circuit: Circuit | None = None, label: str = "",
            clock: Callable[[], float] = time.monotonic) -> Prepared | E.RequestDone:
    """Everything decided before a byte is sent, at once: the request ready to send, or the
    answer when it must not be sent (a secret not set, a host not allowed, an open circuit)."""
    environ = os.environ if environ is None else environ
    label = label or f"request '{req.node}'"
    started = clock()

    def refused(error: str) -> E.RequestDone:
        return E.RequestDone(req.id, error=error, ms=int((clock() - started) * 1000))

    try:
        url = fill_secrets(req.url, environ)
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        headers.update({k: fill_secrets(v, environ) for k, v in req.headers})
        body = _fill(req.json, environ)
        form = [(k, fill_secrets(v, environ)) for k, v in req.form]
    except MissingSecret as exc:
        log.error("%s: secret %s is not set in the environment; not sent", label, exc.name)
        return refused("secret_missing")
    where = target(url, hosts)
    if isinstance(where, str):
        log.error("%s to %s refused: %s", label, mask_secrets(req.url), where)
        return refused("host_not_allowed")
    url, key = where
    if circuit is not None:
        try:
            if not circuit.allow(key, trial_s=req.timeout + 5):
                return refused("circuit_open")
        except Exception:  # noqa: BLE001 - Redis down: the request is still worth trying
            log.exception("%s: the circuit breaker of %s could not be read", label, key)
    return Prepared(req, url, key, headers, body, form, started, label, clock)


def send(p: Prepared, circuit: Circuit | None = None) -> E.RequestDone:
    """Send a prepared request and read its answer within its timeout (never raises)."""
    req, clock = p.req, p.clock
    status, size, text, error = None, 0, None, None
    try:
        with _session().request(req.method, p.url, headers=p.headers, json=p.json,
                                data=p.form or None, timeout=(req.timeout, req.timeout),
                                allow_redirects=False, stream=True) as response:
            status = response.status_code
            chunks = []
            for chunk in response.iter_content(16384):
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    error = "too_large"
                    break
                if clock() - p.started > req.timeout:  # a server that drips its answer
                    error = "timeout"
                    break
                chunks.append(chunk)
            if error is None:
                text = b"".join(chunks).decode(response.encoding or "utf-8", errors="replace")
    except requests.Timeout:
        error = "timeout"
    except requests.RequestException:  # refused, reset, no such host, bad TLS
        error = "connection"
    failed = error in ("timeout", "connection") or (status is not None and status >= 500)
    if circuit is not None:
        try:
            circuit.record(p.key, ok=not failed)
        except Exception:  # noqa: BLE001
            log.exception("%s: the circuit breaker of %s could not be updated", p.label, p.key)
    result = E.RequestDone(req.id, status=status, body=text, error=error, size=size,
                           ms=int((clock() - p.started) * 1000))
    if error or (status or 0) >= 400:
        log.warning("%s (%s %s): %s after %d ms", p.label, req.method, p.key,
                    error or f"HTTP {status}", result.ms)
    return result


def perform(req: A.Request, *, hosts: AllowedHosts, environ: Mapping[str, str] | None = None,
            circuit: Circuit | None = None, label: str = "",
            clock: Callable[[], float] = time.monotonic) -> E.RequestDone:
    """Prepare and send the request; what came of it (never raises)."""
    ready = prepare(req, hosts=hosts, environ=environ, circuit=circuit, label=label, clock=clock)
    return ready if isinstance(ready, E.RequestDone) else send(ready, circuit)
