"""Twilio's webhooks as plain WSGI: the server's hot path, kept out of Flask's request machinery.

Every step of every call is one webhook, so what a webhook costs on top of the step itself
decides how many calls one server takes. Flask's handling of a request (application and
request contexts, proxies, URL routing, response objects, signals) costs about 40 us of CPU
before a view runs, and the views reached `request` through proxies a dozen times more: as
much as the engine's step. So Twilio's webhooks skip it. `Webhooks` sits in front of the
Flask app as WSGI middleware (the way werkzeug's ProxyFix does), answers the POSTs to the
paths of a `Routes` table (ivr/voice.py) and hands every other request (the dashboard, the
API, Media Streams, health checks) to Flask.

Every route checks the X-Twilio-Signature first (ivr/security.py): 403 without a valid one.
A view that raises gets the routes' fail-safe answer, never an HTTP 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import lru_cache
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    from ivr.config import Config
    from ivr.runtime.services import Services

log = logging.getLogger("ivr.webhook")
refused = logging.getLogger("ivr.security")  # requests turned away: one logger to alert on

XML = "text/xml; charset=utf-8"
MAX_BODY = 1024 * 1024  # Twilio's bodies are a few KB; what a caller said is the longest part


class BodyTooLarge(Exception):
    """The request's body is over MAX_BODY."""


class Reply(NamedTuple):
    """A webhook's answer: its status and body (TwiML, unless said otherwise)."""

    status: int
    body: str = ""
    content_type: str = XML


def xml(body: str, status: int = 200) -> Reply:
    return Reply(status, body)


def empty(status: int = 204) -> Reply:
    return Reply(status, "", "")


class Webhook:
    """One webhook request, read from the WSGI environ as far as it is asked for: the
    url-encoded form (`form`, and all of its `pairs` for the signature), the URL's
    parameters (`args`) and the few headers the server needs. `services` and `config` are
    the server's."""

    __slots__ = ("environ", "services", "config", "lock_wait_s", "_pairs", "_form", "_args")

    def __init__(self, environ: dict[str, Any], services: Services | None = None,
                 config: Config | None = None, lock_wait_s: float = 8.0):
        self.environ = environ
        self.services = services
        self.config = config if config is not None else getattr(services, "config", None)
        self.lock_wait_s = lock_wait_s  # how long a step waits for a concurrent one of its call
        self._pairs: list[tuple[str, str]] | None = None
        self._form: dict[str, str] | None = None
        self._args: dict[str, str] | None = None

    def derived(self, args: dict[str, str] | None = None, lock_wait_s: float | None = None) -> Webhook:
        """The same request with other URL parameters (the fallback runs a failed URL's view)."""
        other = Webhook(self.environ, self.services, self.config,
                        self.lock_wait_s if lock_wait_s is None else lock_wait_s)
        other._pairs, other._form = self.pairs, self.form
        other._args = dict(args) if args is not None else self.args
        return other

    # -- the URL and headers ----------------------------------------------------------------

    @property
    def method(self) -> str:
        return self.environ.get("REQUEST_METHOD", "GET").upper()

    @property
    def path(self) -> str:
        return _wsgi_text(self.environ.get("PATH_INFO", "")) or "/"

    @property
    def script_root(self) -> str:
        return _wsgi_text(self.environ.get("SCRIPT_NAME", "")).rstrip("/")

    @property
    def query_string(self) -> str:
        """The query as it came (percent-encoded, as Twilio signed it)."""
        return self.environ.get("QUERY_STRING", "")

    @property
    def scheme(self) -> str:
        return self.environ.get("wsgi.url_scheme", "http")

    @property
    def host(self) -> str:
        """The Host header, else the server's name and port (as werkzeug reads them)."""
        host = self.environ.get("HTTP_HOST")
        if host:
            return host
        name, port = self.environ.get("SERVER_NAME", ""), self.environ.get("SERVER_PORT", "")
        default = "443" if self.scheme == "https" else "80"
        return name if not port or port == default else f"{name}:{port}"

    def header(self, name: str, default: str = "") -> str:
        return self.environ.get(_environ_key(name), default)

    # -- parameters -------------------------------------------------------------------------

    @property
    def args(self) -> dict[str, str]:
        """The URL's parameters (first value of each), e.g. the step token `s`."""
        if self._args is None:
            self._args = first_values(parse_form(_wsgi_text(self.query_string)))
        return self._args

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Every (name, value) of the form, in order, repeated names included."""
        if self._pairs is None:
            self._pairs = _read_form(self.environ)
        return self._pairs

    @property
    def form(self) -> dict[str, str]:
        """The form's parameters (first value of each), as Twilio sent them."""
        if self._form is None:
            self._form = first_values(self.pairs)
        return self._form


@lru_cache(maxsize=64)
def _environ_key(header: str) -> str:
    """Where WSGI keeps a header: X-Twilio-Signature in HTTP_X_TWILIO_SIGNATURE."""
    key = header.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


def first_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """name -> the first value given for it (as werkzeug's MultiDict.get answers)."""
    out: dict[str, str] = {}
    for name, value in pairs:
        if name not in out:
            out[name] = value
    return out


def _read_form(environ: dict[str, Any]) -> list[tuple[str, str]]:
    kind = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length > MAX_BODY:
        raise BodyTooLarge(length)
    if kind == "multipart/form-data":  # not Twilio's way, but a valid form: werkzeug reads it
        from werkzeug.formparser import parse_form_data

        _, form, _ = parse_form_data(environ, max_content_length=MAX_BODY)
        return list(form.items(multi=True))
    if kind != "application/x-www-form-urlencoded":
        return []
    stream = environ["wsgi.input"]
    if length < 0:  # no Content-Length: only a body the server has ended may be read to its end
        body = stream.read(MAX_BODY + 1) if environ.get("wsgi.input_terminated") else b""
        if len(body) > MAX_BODY:
            raise BodyTooLarge(len(body))
    else:
        body = stream.read(length) if length else b""
    return parse_form(body.decode("utf-8", "replace"))


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


def _wsgi_text(value: str) -> str:
    """A WSGI environ string (bytes as latin-1) as the UTF-8 text it carries."""
    return value if value.isascii() else value.encode("latin-1").decode("utf-8", "replace")


# -- routing --------------------------------------------------------------------------------

View = Callable[[Webhook], Reply]


class Routes:
    """The webhook views under one path prefix, each answering POST only.

    `before` runs before every view (after the signature check); `on_error` answers for a
    view that raised (it gets the request and the exception).
    """

    def __init__(self, prefix: str, on_error: Callable[[Webhook, Exception], Reply]):
        self.prefix = prefix.rstrip("/")
        self.views: dict[str, View] = {}
        self.on_error = on_error
        self.before: Callable[[Webhook], None] | None = None

    def post(self, path: str) -> Callable[[View], View]:
        def register(view: View) -> View:
            self.views[self.prefix + path] = view
            return view

        return register

    def before_request(self, fn: Callable[[Webhook], None]) -> Callable[[Webhook], None]:
        self.before = fn
        return fn

    def view(self, path: str) -> View | None:
        """The view for a path (relative to where the server is mounted), or None."""
        return self.views.get(path)


class Webhooks:
    """WSGI middleware: the routes' webhooks here, anything else on to `app` (Flask's)."""

    def __init__(self, app: Callable, routes: Routes, services: Services,
                 is_valid: Callable[[Webhook], bool], describe: Callable[[Webhook], str]):
        self.app = app
        self.routes = routes
        self.services = services
        self.config = services.config
        self.is_valid = is_valid
        self.describe = describe  # what a rejected request is logged with (the checked URL)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        view = self.routes.views.get(environ.get("PATH_INFO", ""))
        if view is None:
            return self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            return _send(Reply(405, "", ""), start_response, [("Allow", "POST")])
        hook = Webhook(environ, self.services, self.config)
        try:
            valid = self.is_valid(hook)
        except Exception as exc:  # noqa: BLE001 - a body that cannot be read is not verified
            too_large = isinstance(exc, BodyTooLarge) or getattr(exc, "code", None) == 413
            refused.warning("rejected a request to %s whose signature could not be checked: %s",
                        hook.path, type(exc).__name__)
            reply = (Reply(413, "Request body too large", "text/plain; charset=utf-8") if too_large
                     else Reply(403, "Forbidden", "text/plain; charset=utf-8"))
            return _send(reply, start_response)
        try:
            if not valid:
                refused.warning("rejected unsigned or badly signed request to %s (checked URL %s)",
                            hook.path, self.describe(hook))
                return _send(Reply(403, "Forbidden", "text/plain; charset=utf-8"), start_response)
            if self.routes.before is not None:
                self.routes.before(hook)
            reply = view(hook)
        except BodyTooLarge:
            return _send(Reply(413, "Request body too large", "text/plain; charset=utf-8"),
                         start_response)
        except Exception as exc:  # a bug or an outage: the caller still hears us
            log.exception("webhook %s failed", environ.get("PATH_INFO"))
            reply = self.routes.on_error(hook, exc)
        return _send(reply, start_response)


_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


def _send(reply: Reply, start_response: Callable, extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = reply.body.encode("utf-8") if reply.body else b""
    headers = [("Content-Type", reply.content_type)] if reply.content_type else []
    if reply.status != 204:  # a 204 carries neither a body nor its length (RFC 9110)
        headers.append(("Content-Length", str(len(body))))
    if extra:
        headers += extra
    start_response(_STATUS_LINES.get(reply.status, f"{reply.status} Unknown"), headers)
    return [body]
