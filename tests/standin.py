"""A stand-in for Twilio's REST API on loopback, for tests: real HTTP, recorded requests.

Twilio's servers cannot be reached here, so this is the one fake the speech tests use. It
checks the account's Basic auth like Twilio does, answers call updates with Twilio-shaped
JSON and serves recordings registered by the test.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


@dataclass
class Request:
    method: str
    path: str
    form: dict[str, str]
    auth: tuple[str, str] | None


@dataclass
class TwilioStandIn:
    account_sid: str
    auth_token: str
    requests: list[Request] = field(default_factory=list)
    recordings: dict[str, bytes] = field(default_factory=dict)  # "RE..." -> WAV bytes
    _server: ThreadingHTTPServer | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> TwilioStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _auth(self) -> tuple[str, str] | None:
                header = self.headers.get("Authorization", "")
                if not header.startswith("Basic "):
                    return None
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                return user, password

            def _reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                auth = self._auth()
                with standin._changed:
                    standin.requests.append(Request(method, self.path, form, auth))
                    standin._changed.notify_all()
                if auth != (standin.account_sid, standin.auth_token):
                    self._reply(401, b'{"code": 20003, "message": "Authenticate"}')
                    return
                rec = re.search(r"/Recordings/(RE\w+)\.wav$", self.path)
                if method == "GET" and rec:
                    audio = standin.recordings.get(rec.group(1))
                    if audio is None:
                        self._reply(404, b'{"code": 20404}')
                    else:
                        self._reply(200, audio, "audio/x-wav")
                    return
                call = re.search(r"/Accounts/(AC\w+)/Calls(?:/(CA\w+))?\.json$", self.path)
                if method == "POST" and call:
                    sid = call.group(2) or "CA" + f"{len(standin.requests):032d}"
                    body = {"sid": sid, "account_sid": call.group(1), "status": "in-progress",
                            "to": form.get("To"), "from": form.get("From")}
                    self._reply(200 if call.group(2) else 201, json.dumps(body).encode())
                    return
                self._reply(404, b'{"code": 20404}')

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def wait_for(self, predicate, timeout: float = 30.0) -> Request | None:
        """The first recorded request matching `predicate`, waiting up to `timeout` s."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((r for r in self.requests if predicate(r)), None), timeout)
        return found
