"""A stand-in for Twilio's REST API on loopback, for the tests: Twilio's servers cannot be
reached here, so this is the one fake the tests use for them.

Real HTTP: the `twilio` library talks to it through TWILIO_API_BASE_URL, as it would to
api.twilio.com. It checks the account's Basic auth and logs every request (`requests`). It
records every outbound call it is asked to place (`calls`), lists, fetches and redirects calls
like Twilio, serves the recordings a test registers (`recordings`), and can be told to hold a
request (to kill a worker while it waits), to fail, or to lose a call.

Texts (`messages`) are recorded the same way, can be refused with a Twilio error code
(`refuse_messages`, e.g. 21610 for a number that replied STOP), and `deliver` makes the
signed status callback Twilio would make for a text.

It then plays the phone network: `answer`, `busy`, `no_answer` and `machine` make the signed
webhook requests Twilio would make for that call (answer URL with AnsweredBy, the TwiML's
<Dial> whisper and action URLs, status callbacks), and parse the TwiML that comes back.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urljoin, urlsplit

import requests
from twilio.request_validator import RequestValidator

CALLS = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/Calls(?:/(CA\w+))?\.json$")
RECORDING = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/Recordings/(RE\w+)\.wav$")
MESSAGES = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/Messages\.json$")


@dataclass
class Request:
    """One request the stand-in received, whether it was accepted or not."""

    method: str
    path: str
    form: dict[str, str]
    auth: tuple[str, str] | None


@dataclass
class Call:
    sid: str
    to: str
    from_: str
    url: str
    status_callback: str
    events: list[str]
    machine_detection: str | None
    timeout: int | None
    created: datetime
    status: str = "queued"
    duration: int | None = None
    twiml: list[str] = field(default_factory=list)  # every TwiML document our server returned

    def json(self) -> dict:
        return {"sid": self.sid, "to": self.to, "from": self.from_, "status": self.status,
                "date_created": format_datetime(self.created, usegmt=True),
                "start_time": None, "end_time": None,
                "duration": str(self.duration) if self.duration is not None else None,
                "direction": "outbound-api", "account_sid": "AC", "uri": f"/Calls/{self.sid}.json"}


@dataclass
class Message:
    sid: str
    to: str
    from_: str
    body: str
    status_callback: str
    status: str = "queued"

    def json(self) -> dict:
        return {"sid": self.sid, "to": self.to, "from": self.from_, "body": self.body,
                "status": self.status, "account_sid": "AC", "num_segments": "1",
                "uri": f"/Messages/{self.sid}.json"}


@dataclass
class Played:
    """What happened when a call was played out: every TwiML document, what was said."""

    documents: list[ET.Element] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    whisper: str = ""

    @property
    def text(self) -> str:
        return " ".join(self.said)


class TwilioStandIn:
    def __init__(self, account_sid: str, auth_token: str):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.calls: list[Call] = []
        self.messages: list[Message] = []
        self.refuse_messages: tuple[int, int] | None = None  # (HTTP status, Twilio code) for texts
        self.requests: list[Request] = []
        self.recordings: dict[str, bytes] = {}  # "RE..." -> WAV bytes
        self.hold: threading.Event | None = None  # while set-up and not set, POST Calls waits
        self.held = threading.Event()  # set when a POST Calls request is waiting on `hold`
        self.fail_with: int | None = None  # answer POST Calls with this HTTP status...
        self.fail_code = 20500  # ...and this Twilio error code (21211: invalid 'To' number)
        self.drop_held = False  # a held request was lost on its way: no call is created
        self.changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    # -- the REST API -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> TwilioStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, body: dict | bytes, kind: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _auth(self) -> tuple[str, str] | None:
                header = self.headers.get("Authorization", "")
                if not header.startswith("Basic "):
                    return None
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                return user, password

            def _authorised(self, account: str) -> bool:
                mine = (standin.account_sid, standin.auth_token)
                return self._auth() == mine and account == standin.account_sid

            def _log(self, method: str, form: dict[str, list[str]]) -> None:
                with standin.changed:
                    standin.requests.append(Request(method, self.path, {k: v[0] for k, v in form.items()},
                                                    self._auth()))
                    standin.changed.notify_all()

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                self._log("GET", {})
                rec = RECORDING.match(parts.path)
                if rec:
                    if not self._authorised(rec.group(1)):
                        return self._reply(401, {"code": 20003, "message": "Authenticate"})
                    audio = standin.recordings.get(rec.group(2))
                    if audio is None:
                        return self._reply(404, {"code": 20404, "message": "not found"})
                    return self._reply(200, audio, "audio/x-wav")
                m = CALLS.match(parts.path)
                if not m or not self._authorised(m.group(1)):
                    return self._reply(401 if m else 404, {"code": 20003, "message": "Authenticate"})
                if m.group(2):
                    call = standin.find(m.group(2))
                    if call is None:
                        return self._reply(404, {"code": 20404, "message": "not found"})
                    return self._reply(200, call.json())
                query = parse_qs(parts.query)
                to = query.get("To", [None])[0]
                calls = [c.json() for c in standin.calls if to is None or c.to == to]
                return self._reply(200, {"calls": calls, "page": 0, "page_size": 50, "start": 0,
                                         "end": len(calls), "uri": parts.path, "first_page_uri": parts.path,
                                         "next_page_uri": None, "previous_page_uri": None})

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                m = CALLS.match(parts.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                self._log("POST", form)
                text = MESSAGES.match(parts.path)
                if text:
                    if not self._authorised(text.group(1)):
                        return self._reply(401, {"code": 20003, "message": "Authenticate"})
                    if standin.refuse_messages:
                        status, code = standin.refuse_messages
                        return self._reply(status, {"code": code, "message": "refused", "status": status})
                    message = Message("SM" + uuid.uuid4().hex, form["To"][0], form["From"][0],
                                      form["Body"][0], form.get("StatusCallback", [""])[0])
                    with standin.changed:
                        standin.messages.append(message)
                        standin.changed.notify_all()
                    return self._reply(201, message.json())
                if not m or not self._authorised(m.group(1)):
                    return self._reply(401 if m else 404, {"code": 20003, "message": "Authenticate"})
                if m.group(2):  # a live call moved on (Url) or ended (Status)
                    call = standin.find(m.group(2))
                    body = call.json() if call else {"sid": m.group(2), "account_sid": m.group(1),
                                                     "status": "in-progress", "to": None, "from": None}
                    return self._reply(200, body)
                if standin.hold is not None:
                    standin.held.set()
                    standin.hold.wait(30)
                    if standin.drop_held:
                        return self._reply(500, {"code": 20500, "message": "lost", "status": 500})
                if standin.fail_with:
                    return self._reply(standin.fail_with, {"code": standin.fail_code, "message": "refused",
                                                           "status": standin.fail_with})
                call = Call(
                    sid="CA" + uuid.uuid4().hex, to=form["To"][0], from_=form["From"][0],
                    url=form["Url"][0], status_callback=form.get("StatusCallback", [""])[0],
                    events=form.get("StatusCallbackEvent", []),
                    machine_detection=form.get("MachineDetection", [None])[0],
                    timeout=int(form["Timeout"][0]) if "Timeout" in form else None,
                    created=datetime.now(UTC))
                with standin.changed:
                    standin.calls.append(call)
                    standin.changed.notify_all()
                return self._reply(201, call.json())

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def find(self, sid: str) -> Call | None:
        return next((c for c in self.calls if c.sid == sid), None)

    def wait_for_calls(self, n: int, timeout: float = 15.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.calls) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"expected {n} outbound calls, got {len(self.calls)}")
                self.changed.wait(left)
        return list(self.calls)

    def wait_for_messages(self, n: int, timeout: float = 15.0) -> list[Message]:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.messages) >= n, timeout):
                raise TimeoutError(f"expected {n} texts, got {len(self.messages)}")
        return list(self.messages)

    def deliver(self, message: Message, status: str = "delivered",
                error_code: int | None = None) -> requests.Response:
        """The signed status callback Twilio makes as a text goes out."""
        message.status = status
        params = {"MessageSid": message.sid, "MessageStatus": status, "AccountSid": self.account_sid,
                  "To": message.to, "From": message.from_}
        if error_code is not None:
            params["ErrorCode"] = error_code
        return self._post(message.status_callback, params)

    def wait_for(self, predicate, timeout: float = 30.0) -> Request | None:
        """The first logged request matching `predicate`, waiting up to `timeout` s."""
        with self.changed:
            return self.changed.wait_for(lambda: next((r for r in self.requests if predicate(r)), None),
                                         timeout)

    # -- playing the phone network -----------------------------------------------------------

    def _post(self, url: str, params: dict) -> requests.Response:
        params = {k: str(v) for k, v in params.items()}
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        return requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)

    def _base(self, call: Call) -> dict:
        return {"CallSid": call.sid, "AccountSid": self.account_sid, "From": call.from_, "To": call.to,
                "Direction": "outbound-api", "ApiVersion": "2010-04-01"}

    def status(self, call: Call, status: str, duration: int | None = None) -> requests.Response:
        """A status callback, as Twilio sends it to the call's StatusCallback."""
        call.status = status
        call.duration = duration
        params = {**self._base(call), "CallStatus": status}
        if duration is not None:
            params["CallDuration"] = duration
        return self._post(call.status_callback, params)

    def ring(self, call: Call) -> None:
        self.status(call, "initiated")
        self.status(call, "ringing")

    def busy(self, call: Call) -> requests.Response:
        self.ring(call)
        return self.status(call, "busy")

    def no_answer(self, call: Call) -> requests.Response:
        self.ring(call)
        return self.status(call, "no-answer")

    def machine(self, call: Call) -> Played:
        """An answering machine picks up: AMD tells the answer URL, which should hang up."""
        self.ring(call)
        played = Played()
        self._document(call, call.url, {"CallStatus": "in-progress", "AnsweredBy": "machine_start"},
                       played)
        self.status(call, "completed", 3)
        return played

    def answer(self, call: Call, agent_answers: bool = True, talk: int = 95) -> Played:
        """A person answers; the TwiML is followed: its <Dial> rings the agent, whose whisper is
        fetched when they answer, then the call is bridged for `talk` seconds and ends."""
        self.ring(call)
        self.status(call, "in-progress")
        played = Played()
        root = self._document(call, call.url, {"CallStatus": "in-progress", "AnsweredBy": "human"}, played)
        base = call.url
        for _ in range(10):  # follow <Dial> actions until the call hangs up
            dial = root.find("Dial")
            if dial is None:
                break
            number = dial.find("Number")
            if number is None:
                number = dial.find("Sip")
            if agent_answers and number is not None and number.get("url"):
                agent = {**self._base(call), "CallSid": "CA" + uuid.uuid4().hex,
                         "ParentCallSid": call.sid, "CallStatus": "in-progress"}
                whisper_url = urljoin(base, number.get("url"))
                response = self._post(whisper_url, agent)
                whisper = ET.fromstring(response.content)
                played.whisper = " ".join(e.text or "" for e in whisper.iter("Say"))
            outcome = ({"DialCallStatus": "completed", "DialCallDuration": talk} if agent_answers
                       else {"DialCallStatus": "no-answer"})
            base = urljoin(base, dial.get("action"))
            root = self._document(call, base, {"CallStatus": "in-progress", **outcome}, played)
        self.status(call, "completed", talk + 10)
        return played

    def _document(self, call: Call, url: str, params: dict, played: Played) -> ET.Element:
        response = self._post(url, {**self._base(call), **params})
        assert response.status_code == 200, (url, response.status_code, response.text)
        call.twiml.append(response.text)
        root = ET.fromstring(response.content)
        assert root.tag == "Response"
        played.documents.append(root)
        played.said += [e.text or "" for e in root.iter("Say")]
        return root
