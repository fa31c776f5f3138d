"""A small order and outage API on loopback, for the tests: the company's systems the
example flow asks ("where is my order", "is there an outage at my address").

Real HTTP on 127.0.0.1. It answers:

    GET /v1/customers/<customer_id>/orders/latest   the customer's latest order, or 404
    GET /v1/outages?zip=<zip>                       {"outage": bool, ...} for that area
    GET /v1/callers?phone=<E.164>                   {"data": [the caller]} or {"data": []} (a CRM)
    POST /v1/echo                                   the request as it arrived (method, headers, body)

and can be told to misbehave for the next requests: `fail_with` a status, answer `bad_json`,
`hold` each request until an event is set (a slow API, or one that never answers), or be
stopped (a refused connection). Every request is logged with its headers (`requests`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ORDERS = {
    "C-1001": {"id": "NW-58213", "status": "shipped", "carrier": "UPS", "eta": "Thursday",
               "tracking_url": "https://track.example.com/NW-58213"},
    "C-1002": {"id": "NW-58377", "status": "processing", "eta": "next week",
               "tracking_url": None},
}
CALLERS = {
    "+14155550100": {"first_name": "Ada", "last_name": "Lovelace", "customer_id": "C-1001",
                     "zip": "94107", "tier": "gold", "open_tickets": 2, "vip": True},
}
OUTAGES = {
    "94110": {"outage": True, "area": "Mission District", "cause": "a cut fibre cable",
              "until": "6 PM today"},
}


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # A client that gave up (a timeout) before a held answer was written: expected here.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class OrderApi:
    requests: list[Seen] = field(default_factory=list)
    fail_with: int | None = None  # answer every request with this status
    bad_json: bool = False  # answer 200 with a body that is not JSON
    hold: threading.Event | None = None  # each request waits for this before answering
    held: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))  # one per held request
    server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> OrderApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _answer(self, status: int, body: object) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                api.requests.append(Seen(method, self.path, dict(self.headers), body))
                if api.hold is not None:
                    api.held.release()
                    if not api.hold.wait(30):
                        return
                if api.fail_with:
                    return self._answer(api.fail_with, {"error": "internal"})
                if api.bad_json:
                    return self._answer(200, b"<html>Service Unavailable</html>")
                parts = urlsplit(self.path)
                segments = parts.path.strip("/").split("/")
                if method == "POST" and parts.path == "/v1/echo":
                    return self._answer(200, {"method": method, "headers": dict(self.headers),
                                              "body": body})
                if segments[:2] == ["v1", "customers"] and segments[3:] == ["orders", "latest"]:
                    order = ORDERS.get(segments[2])
                    return self._answer(200, order) if order else self._answer(404, {"error": "no order"})
                if parts.path == "/v1/callers":
                    phone = parse_qs(parts.query).get("phone", [""])[0]
                    return self._answer(200, {"data": [CALLERS[phone]] if phone in CALLERS else []})
                if parts.path == "/v1/outages":
                    zip_code = parse_qs(parts.query).get("zip", [""])[0]
                    return self._answer(200, OUTAGES.get(zip_code, {"outage": False}))
                return self._answer(404, {"error": "not found"})

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
