"""`ivr bench webhooks`: how fast the production server answers Twilio's webhooks.

The benchmark starts the real server (``ivr serve``: gunicorn, the example flow opened 24 hours
a day, a real Redis and a SQLite step log) and, with the same gunicorn settings, a bare Flask
app whose routes return fixed TwiML. It drives the same simulated calls through each:

    POST /voice                      a new call (a known caller, an unknown one or "Anonymous")
    POST /voice/gather?s=1           Digits=1, or SpeechResult=billing
    POST /voice/queue/wait?s=2       twice, with QueuePosition, QueueTime, ...
    POST /voice/status               CallStatus=completed, CallDuration=60

every request signed as Twilio signs it, every answer checked (status, and TwiML that does
what the step should: a fail-safe apology counts as an error).

- Flat out: `concurrency` simulated callers run calls back to back (a closed loop), so the
  servers run at capacity: calls per second, and the ratio of the two capacities, which is
  what the IVR costs on top of Flask and gunicorn. The load is cut into rounds that alternate
  between the servers, so drift in the machine's speed hurts both alike.
- Paced: the same callers wait a random pause before each webhook, as real calls do (for
  prompts, speech, hold music), so latency is measured at that many simultaneous calls
  without saturating the machine.
- Live state: calls left waiting in the menu and in a queue; MEMORY USAGE of their state in
  Redis. Then the step log must drain into the database, every call recorded.

The load generator is one asyncio loop with one keep-alive HTTP/1.1 connection per caller and
requests built and signed before any clock starts, so it takes little of the CPU it shares
with the servers (its CPU per request is reported); the same client drives both servers.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click
from flask import Flask, Response, jsonify
from twilio.twiml.voice_response import VoiceResponse

# -- the bare app: same paths, fixed TwiML --------------------------------------------------


def _bare_twiml() -> dict[str, bytes]:
    """Answers shaped like the real ones (the same elements; smaller: fewer speech hints), built once."""
    voice = VoiceResponse()
    voice.say("Hi Ada, thanks for calling Northwind Fibre.", voice="Polly.Joanna", language="en-US")
    g = voice.gather(input="dtmf speech", action="/voice/gather?s=1", method="POST", timeout=5,
                     action_on_empty_result=True, num_digits=1, speech_timeout="auto",
                     language="en-US", hints="billing, orders, technical, agent")
    g.say("Tell me in a few words what you're calling about, or choose from the menu. "
          "For billing, press 1. For orders and installations, press 2. For technical support, "
          "press 3. For cancelling your service, press 4. For anything else, press 0.",
          voice="Polly.Joanna", language="en-US")
    gather = VoiceResponse()
    gather.say("Connecting you to our billing team.", voice="Polly.Joanna", language="en-US")
    gather.enqueue("billing", action="/voice/queue/left?s=2", method="POST",
                   wait_url="/voice/queue/wait?s=2", wait_url_method="POST")
    wait = VoiceResponse()
    wait.say("Thanks for waiting. Your call matters to us, and a billing specialist will be with "
             "you shortly.", voice="Polly.Joanna", language="en-US")
    wait.play("http://com.twilio.music.classical.s3.amazonaws.com/BusyStrings.mp3")
    left = VoiceResponse()
    left.say("Thank you. Goodbye.")
    left.hangup()
    return {"voice": str(voice).encode(), "gather": str(gather).encode(),
            "wait": str(wait).encode(), "left": str(left).encode()}


BARE_TWIML = _bare_twiml()


def create_bare_app(config: Any = None) -> Flask:
    """A minimal Flask app with the webhook paths of the real one, answering fixed TwiML:
    the baseline the benchmark compares the IVR with. `config` is accepted and ignored."""
    app = Flask("ivr_bare")

    def fixed(body: bytes):
        return lambda: Response(body, mimetype="text/xml")

    app.add_url_rule("/voice", "voice", fixed(BARE_TWIML["voice"]), methods=["POST"])
    app.add_url_rule("/voice/gather", "gather", fixed(BARE_TWIML["gather"]), methods=["POST"])
    app.add_url_rule("/voice/queue/wait", "wait", fixed(BARE_TWIML["wait"]), methods=["POST"])
    app.add_url_rule("/voice/queue/left", "left", fixed(BARE_TWIML["left"]), methods=["POST"])
    app.add_url_rule("/voice/status", "status", lambda: Response(status=204), methods=["POST"])
    app.add_url_rule("/healthz", "healthz", lambda: jsonify(ok=True), methods=["GET"])
    return app


def serve_bare(host: str, port: int, workers: int, threads: int) -> None:
    """Run the bare app exactly as `ivr serve` runs the real one (used in a subprocess)."""
    from ivr.config import Config
    from ivr.web.server import serve

    serve(Config.from_env(), host, port, workers, threads, app_factory="bench.webhooks:create_bare_app")


# -- simulated calls -------------------------------------------------------------------------

TO_NUMBER = "+15005550006"
ACCOUNT_SID = "AC" + "0" * 32
WEBHOOKS = ("/voice", "/voice/gather", "/voice/queue/wait", "/voice/status")
# What a right answer contains; the fail-safe apology is valid TwiML too, but not a right answer.
EXPECTED = {"/voice": (200, b"<Gather"), "/voice/gather": (200, b"<Enqueue"),
            "/voice/queue/wait": (200, b"<Play"), "/voice/status": (204, b"")}
UNKNOWN_NUMBERS = ["+13125550142", "+16175550177", "+14085550123", "+12065550199"]
SPEECH = "billing"


@dataclass(frozen=True)
class Request:
    webhook: str  # one of WEBHOOKS
    data: bytes  # the whole HTTP request


@dataclass
class Call:
    sid: str
    requests: list[Request]


def known_numbers(flows_dir: Path) -> list[str]:
    """The E.164 numbers of the example flow's customers (Twilio sends From in E.164)."""
    from ivr.phone import normalize

    path = flows_dir / "customers.csv"
    numbers = []
    if path.exists():
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                number = normalize(row.get("phone"), "US")
                if number:
                    numbers.append(number)
    return numbers


class CallMaker:
    """Builds signed, ready-to-send requests for simulated calls."""

    def __init__(self, base_url: str, token: str, known: list[str], speech_share: float = 0.25):
        from twilio.request_validator import RequestValidator

        self.base_url = base_url.rstrip("/")
        self.host = self.base_url.split("://", 1)[1]
        self.validator = RequestValidator(token)
        self.known = known or UNKNOWN_NUMBERS
        self.speech_share = speech_share

    def caller(self, i: int) -> str:
        """Half the calls from known customers, a quarter withheld, a quarter unknown."""
        kind = i % 4
        if kind in (0, 1):
            return self.known[i % len(self.known)]
        if kind == 2:
            return "Anonymous"
        return UNKNOWN_NUMBERS[i % len(UNKNOWN_NUMBERS)]

    def build(self, webhook: str, query: str, params: dict[str, str]) -> Request:
        path = webhook + (f"?{query}" if query else "")
        signature = self.validator.compute_signature(self.base_url + path, params)
        body = urlencode(params).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nUser-Agent: TwilioProxy/1.1\r\n"
                f"Content-Type: application/x-www-form-urlencoded\r\nAccept: */*\r\n"
                f"X-Twilio-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n")
        return Request(webhook, head.encode() + body)

    def speaks(self, i: int) -> bool:
        """Whether call `i` says what it wants (else it presses 1): spread evenly over the calls."""
        return (i * 37) % 100 < self.speech_share * 100

    def call(self, i: int, tag: str = "", full: bool = True, speech: bool | None = None) -> Call:
        """Call number `i`: the whole call, or (full=False) only up to waiting in the queue."""
        sid = "CA" + secrets.token_hex(16)
        frm = self.caller(i)
        base = {
            "AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": sid,
            "CallStatus": "in-progress", "Called": TO_NUMBER, "CalledCountry": "US",
            "CalledState": "CA", "Caller": frm, "Direction": "inbound", "From": frm,
            "FromCountry": "US" if frm.startswith("+1") else "", "To": TO_NUMBER,
            "ToCity": "", "ToCountry": "US", "ToState": "CA", "ToZip": "",
        }
        reqs = [self.build("/voice", "", {**base, "CallStatus": "ringing"})]
        if tag == "menu":
            return Call(sid, reqs)
        if self.speaks(i) if speech is None else speech:
            answer = {"SpeechResult": SPEECH, "Confidence": "0.9171", "msg": "Gather End"}
        else:
            answer = {"Digits": "1", "FinishedOnKey": "", "msg": "Gather End"}
        reqs.append(self.build("/voice/gather", "s=1", {**base, **answer}))
        queue_sid = "QU" + secrets.token_hex(16)
        for n in range(2 if full else 1):
            reqs.append(self.build("/voice/queue/wait", "s=2", {
                **base, "QueueSid": queue_sid, "QueuePosition": str(3 - n), "QueueTime": str(30 * n),
                "AvgQueueTime": "45", "CurrentQueueSize": str(5 + n)}))
        if full:
            reqs.append(self.build("/voice/status", "", {
                **base, "CallStatus": "completed", "CallDuration": "60", "Duration": "1",
                "CallbackSource": "call-progress-events", "SequenceNumber": "0",
                "Timestamp": "Mon, 01 Jun 2026 12:00:00 +0000"}))
        return Call(sid, reqs)


# -- the client: lean asyncio HTTP/1.1 with keep-alive ----------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive connection; parses just enough HTTP/1.1 to find each response's end."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.served = 0  # answers received on this connection

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        w = self.waiter
        if w is None or w.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17: stop if stop >= 0 else None])
        elif b"transfer-encoding: chunked" in head:
            w.set_exception(ConnectionError("chunked responses are not supported"))
            return
        total = end + 4 + length
        if len(self.buf) < total:
            return
        done = time.perf_counter()  # the moment the whole answer is here
        status = int(head[9:12])
        body = bytes(self.buf[end + 4: total])
        del self.buf[:total]
        keep = b"\r\nconnection: close" not in head
        w.set_result((done, status, body, keep))

    def connection_lost(self, exc) -> None:
        self.closed = True
        w = self.waiter
        if w is not None and not w.done():
            w.set_exception(ConnectionError(f"connection closed: {exc}"))


class Client:
    def __init__(self, host: str, port: int, timeout: float = 15.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn: _Conn | None = None
        self.reconnects = 0
        self.resends = 0  # requests sent again after a kept-alive connection dropped them

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Conn, self.host, self.port)
        return conn

    async def send(self, data: bytes) -> tuple[float, int, bytes]:
        """(seconds, status, body) of one request; the time includes a reconnect if needed.

        A kept-alive connection the server closes as idle can cross the next request on the
        wire (gunicorn drops idle ones after its keep-alive seconds): as HTTP clients do, a
        request that failed on a reused connection before any of an answer arrived is sent
        once more on a new one."""
        start = time.perf_counter()
        conn = await self._ready()
        reused = conn.served > 0
        try:
            done, status, body = await self._exchange(conn, data)
        except ConnectionError:
            if not reused or conn.buf:
                raise
            self.reconnects += 1
            self.resends += 1
            done, status, body = await self._exchange(await self._ready(), data)
        return done - start, status, body

    async def _ready(self) -> _Conn:
        if self.conn is None or self.conn.closed:
            if self.conn is not None:
                self.reconnects += 1
            self.conn = await self._connect()
        return self.conn

    async def _exchange(self, conn: _Conn, data: bytes) -> tuple[float, int, bytes]:
        conn.waiter = asyncio.get_running_loop().create_future()
        conn.transport.write(data)
        try:
            done, status, body, keep = await asyncio.wait_for(conn.waiter, self.timeout)
        except BaseException:
            conn.transport.abort()
            self.conn = None
            raise
        finally:
            conn.waiter = None
        conn.served += 1
        if not keep:
            conn.transport.close()
            self.conn = None
        return done, status, body

    def close(self) -> None:
        if self.conn is not None:
            self.conn.transport.close()
            self.conn = None


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: list[str] = field(default_factory=list)
    calls_done: int = 0

    def error(self, kind: str, example: str) -> None:
        self.errors[kind] += 1
        if len(self.examples) < 5:
            self.examples.append(example[:300])


async def _run_call(client: Client, call: Call, tally: Tally | None, pause=None) -> None:
    for req in call.requests:
        if pause is not None:
            await asyncio.sleep(pause())
        try:
            seconds, status, body = await client.send(req.data)
        except (TimeoutError, OSError) as exc:
            if tally is not None:
                tally.error("transport", f"{req.webhook}: {type(exc).__name__}: {exc}")
            return  # the call is broken; Twilio would have played the fallback
        if tally is None:
            continue
        tally.latencies[req.webhook].append(seconds)
        want_status, marker = EXPECTED[req.webhook]
        if status != want_status:
            tally.error(f"http_{status}", f"{req.webhook}: HTTP {status}: {body[:200]!r}")
        elif marker and (marker not in body or not body.startswith(b"<?xml")):
            tally.error("unexpected_twiml", f"{req.webhook}: {body[:300]!r}")
    if tally is not None:
        tally.calls_done += 1


async def drive(clients: list[Client], calls: list[Call], tally: Tally | None, *,
                duration_s: float | None = None, make=None, pause_s: float = 0.0) -> float:
    """Run `calls` with one simulated caller per client (connection), adding to `tally`;
    return the seconds it took. With `duration_s`, callers keep starting calls made by
    `make(i)` until the time is up instead. With `pause_s`, a caller waits a random
    0..2 x pause_s before each request: a paced load rather than a flat-out one."""
    todo = list(reversed(calls))
    counter = [len(calls)]
    deadline = None
    rng = random.Random(7)
    pause = (lambda: rng.uniform(0, 2 * pause_s)) if pause_s > 0 else None

    async def caller(client: Client):
        while True:
            if deadline is not None:
                if time.perf_counter() >= deadline:
                    return
                call = make(counter[0])
                counter[0] += 1
            elif todo:
                call = todo.pop()
            else:
                return
            await _run_call(client, call, tally, pause)

    start = time.perf_counter()
    if duration_s:
        deadline = start + duration_s
    await asyncio.gather(*(caller(c) for c in clients))
    return time.perf_counter() - start


async def warm_up(port: int, calls: list[Call], concurrency: int, passes: int = 3) -> None:
    """Get every worker going before the clock starts (flows loaded, intent matcher built,
    Redis and database connections open): `passes` rounds of `calls`, each on fresh
    connections, since gunicorn gives each new connection to whichever worker accepts it."""
    per_pass = max(1, len(calls) // passes)
    for p in range(passes):
        chunk = calls[p * per_pass: (p + 1) * per_pass]
        per_client = max(1, len(chunk) // concurrency)
        clients = [Client("127.0.0.1", port) for _ in range(concurrency)]

        async def run(k: int, client: Client, chunk=chunk, per_client=per_client):
            for call in chunk[k * per_client: (k + 1) * per_client]:
                await _run_call(client, call, None)

        try:
            await asyncio.gather(*(run(k, c) for k, c in enumerate(clients)))
        finally:
            for c in clients:
                c.close()


def run_calls(port: int, calls: list[Call], concurrency: int, pause_s: float = 0.0) -> Tally:
    """Run `calls` on fresh connections, closed afterwards."""

    async def go():
        clients = [Client("127.0.0.1", port) for _ in range(concurrency)]
        tally = Tally()
        try:
            await drive(clients, calls, tally, pause_s=pause_s)
        finally:
            for c in clients:
                c.close()
        return tally

    return asyncio.run(go())


# -- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_flows(source: Path, target: Path) -> Path:
    """Copy the flows into `target`, open 24 hours every day with no holidays, so the calls
    take the same path whatever the time of the run."""
    from ruamel.yaml import YAML

    target.mkdir(parents=True, exist_ok=True)
    yaml = YAML()
    for path in sorted(source.iterdir()):
        if not path.is_file():
            continue
        if path.suffix not in (".yaml", ".yml"):
            shutil.copy2(path, target / path.name)
            continue
        data = yaml.load(path.read_text())
        for hours in (data.get("hours") or {}).values():
            hours["open"] = {"mon-sun": "00:00-24:00"}
            hours.pop("holidays", None)
        with (target / path.name).open("w") as f:
            yaml.dump(data, f)
    return target


def _cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in the process group (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields[0] is the state; pgrp is the 5th field of stat
            total += int(fields[11]) + int(fields[12])
    return total / tick


class Server:
    """A server subprocess in its own process group, stopped with SIGTERM."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, log_path: Path):
        self.name, self.port, self.log_path = name, port, log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.name} server exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the {self.name} server was not healthy after {timeout:.0f} s:\n"
                           f"{self.log_tail()}")

    def cpu_seconds(self) -> float:
        try:
            return _cpu_seconds(self.proc.pid)
        except (OSError, ValueError, IndexError):
            return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        self._log.close()


def _server_env(tmp: Path, token: str, port: int, redis_url: str, flows_dir: Path) -> dict[str, str]:
    from ivr.config import Config

    env = {k: v for k, v in os.environ.items() if k not in Config.ENV.values()}
    data = tmp / f"data-{port}"
    data.mkdir(parents=True, exist_ok=True)
    (data / "recordings").mkdir(exist_ok=True)
    env.update({
        "TWILIO_AUTH_TOKEN": token, "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{(data / 'ivr.db').resolve()}",
        "IVR_FLOWS_DIR": str(flows_dir), "IVR_DATA_DIR": str(data),
        "IVR_RECORDINGS_DIR": str(data / "recordings"), "IVR_VALIDATE_SIGNATURES": "true",
        "IVR_RECORDER": "true", "IVR_LOG_LEVEL": "WARNING",
    })
    return env


def server_argv(kind: str, port: int, workers: int, threads: int) -> list[str]:
    if kind == "ivr":
        code = "import sys; from ivr.cli import main; sys.argv[0] = 'ivr'; main()"
        return [sys.executable, "-c", code, "serve", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--threads", str(threads)]
    root = str(Path(__file__).resolve().parent.parent)  # the bench package, from any folder
    code = (f"import sys; sys.path.insert(0, {root!r}); from bench.webhooks import serve_bare; "
            f"serve_bare('127.0.0.1', {port}, {workers}, {threads})")
    return [sys.executable, "-c", code]


# -- figures ---------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _stats(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    if not v:
        return {"n": 0}
    ms = 1000.0
    return {"n": len(v), "p50_ms": round(percentile(v, 50) * ms, 2),
            "p90_ms": round(percentile(v, 90) * ms, 2), "p99_ms": round(percentile(v, 99) * ms, 2),
            "max_ms": round(v[-1] * ms, 2), "mean_ms": round(sum(v) / len(v) * ms, 2)}


def _machine_cpu() -> float:
    """CPU seconds the whole machine has spent busy, all processes (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _redis_cpu(client) -> float:
    try:
        info = client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    except Exception:
        return float("nan")


def _redis_commands(client) -> int:
    try:
        return int(client.info("stats")["total_commands_processed"])
    except Exception:
        return 0


@dataclass
class Phase:
    """What the measured slices of one phase (flat out, paced) of one server added up to."""

    tally: Tally = field(default_factory=Tally)
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    slices: list[float] = field(default_factory=list)  # calls/s of each slice
    drain_s: float = 0.0  # waiting for the step log to reach the database after the slices


class Target:
    """One server under test: its keep-alive connections and its measured phases."""

    def __init__(self, server: Server, maker: CallMaker, concurrency: int, redis_client):
        self.server, self.maker = server, maker
        self.clients = [Client("127.0.0.1", server.port) for _ in range(concurrency)]
        self.redis = redis_client if server.name == "ivr" else None  # the bare app never uses it
        self.phases: dict[str, Phase] = defaultdict(Phase)

    def _counters(self) -> dict[str, float]:
        out = {"server": self.server.cpu_seconds(), "client": time.process_time(),
               "machine": _machine_cpu()}
        if self.redis is not None:
            out.update(redis=_redis_cpu(self.redis), commands=_redis_commands(self.redis))
        return out

    async def slice(self, phase: str, calls: list[Call], duration_s: float | None = None,
                    pause_s: float = 0.0) -> None:
        """Measure one slice of load (its counters are read between slices, off the clock)."""
        acc = self.phases[phase]
        done = acc.tally.calls_done
        before = self._counters()
        seconds = await drive(self.clients, calls, acc.tally, duration_s=duration_s,
                              make=self.maker.call, pause_s=pause_s)
        if self.redis is not None:
            # The recorder writes the last batch of the slice's step log after the load stops:
            # its CPU is the IVR's (read after it) and must not slow the other server's slice.
            acc.drain_s += await self._drained()
        for key, value in self._counters().items():
            acc.cpu[key] += value - before[key]
        acc.seconds += seconds
        acc.slices.append((acc.tally.calls_done - done) / max(seconds, 1e-9))

    async def _drained(self, timeout: float = 60.0) -> float:
        """Wait until the step log stream is empty; the seconds it took."""
        from ivr.calllog.recorder import STREAM

        start = time.monotonic()
        while self.redis.xlen(STREAM) and time.monotonic() - start < timeout:
            await asyncio.sleep(0.02)
        return time.monotonic() - start

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def summary(self, phase: str) -> dict[str, Any]:
        acc = self.phases[phase]
        tally, elapsed, cpu = acc.tally, max(acc.seconds, 1e-9), acc.cpu
        uses_redis = self.redis is not None
        ours = cpu["server"] + cpu["client"] + (cpu["redis"] if uses_redis else 0.0)
        cores = os.cpu_count() or 1
        done = tally.calls_done
        requests = sum(len(v) for v in tally.latencies.values())
        nreq = max(1, requests)
        return {
            "calls": done,
            "requests": requests,
            "seconds": round(elapsed, 3),
            "calls_per_s": round(done / elapsed, 1),
            "requests_per_s": round(requests / elapsed, 1),
            "slices_calls_per_s": [round(x, 1) for x in acc.slices],
            "errors": dict(tally.errors),
            "error_count": sum(tally.errors.values()),
            "error_examples": tally.examples,
            "webhooks": {w: _stats(tally.latencies.get(w, [])) for w in WEBHOOKS},
            "all": _stats([x for v in tally.latencies.values() for x in v]),
            # CPU time per request: gunicorn master and workers, this client, and the Redis
            # server (a shared Redis also counts its other clients)
            "cpu_ms_per_request": {
                "server": round(cpu["server"] / nreq * 1000, 3),
                "client": round(cpu["client"] / nreq * 1000, 3),
                "redis": round(cpu["redis"] / nreq * 1000, 3) if uses_redis else None,
            },
            # shares of the machine's CPU capacity while measuring: this benchmark's processes,
            # and everything else (other work on the machine competes with the servers)
            "cpu_share": {"benchmark": round(ours / elapsed / cores, 3),
                          "other": round(max(0.0, cpu["machine"] - ours) / elapsed / cores, 3)},
            "redis_commands_per_call": round(cpu["commands"] / max(1, done), 1) if uses_redis else None,
            "log_drain_s": round(acc.drain_s, 2) if uses_redis else None,
            "reconnects": sum(c.reconnects for c in self.clients),
            # sent again: the server closed the idle connection as the request went out (or
            # read it and died without answering; a server that did would show in its log)
            "resends": sum(c.resends for c in self.clients),
        }


def live_state(server: Server, maker: CallMaker, redis_client, n: int, concurrency: int) -> dict:
    """Start `n` calls and leave them live (half in the menu, half in a queue); MEMORY USAGE
    of their state hashes. Then hang them all up."""
    from ivr.runtime.callstate import CallStates

    menu = [maker.call(i, tag="menu") for i in range(0, n, 2)]
    queued = [maker.call(i, full=False) for i in range(1, n, 2)]
    tally = run_calls(server.port, menu + queued, concurrency)
    sizes: dict[str, list[int]] = {"menu": [], "queue": []}
    for stage, group in (("menu", menu), ("queue", queued)):
        for call in group:
            size = redis_client.memory_usage(CallStates.key(call.sid), samples=0)
            if size is not None:
                sizes[stage].append(int(size))
    every = sizes["menu"] + sizes["queue"]
    # hang them up, so the step log ends every call
    hangups = []
    for call in menu + queued:
        hangups.append(Call(call.sid, [maker.build("/voice/status", "", {
            "AccountSid": ACCOUNT_SID, "CallSid": call.sid, "CallStatus": "completed",
            "CallDuration": "30", "From": "Anonymous", "To": TO_NUMBER})]))
    run_calls(server.port, hangups, concurrency)

    def avg(v):
        return round(sum(v) / len(v)) if v else None

    return {"calls": len(every), "avg_bytes": avg(every), "max_bytes": max(every, default=None),
            "menu_avg_bytes": avg(sizes["menu"]), "queue_avg_bytes": avg(sizes["queue"]),
            "errors": sum(tally.errors.values())}


def wait_drained(redis_client, timeout: float = 60.0) -> dict:
    """Wait for the recorders to move the step log from Redis into the database."""
    from ivr.calllog.recorder import STREAM

    start = time.monotonic()
    left = -1
    while time.monotonic() - start < timeout:
        left = int(redis_client.xlen(STREAM))
        if left == 0:
            return {"drained": True, "seconds": round(time.monotonic() - start, 2), "left": 0,
                    "dead": int(redis_client.xlen(STREAM + ":dead"))}
        time.sleep(0.2)
    return {"drained": False, "seconds": round(timeout, 2), "left": left,
            "dead": int(redis_client.xlen(STREAM + ":dead"))}


def _recorded_calls(tmp: Path, port: int) -> int | None:
    """Calls in the real server's SQLite step log."""
    import sqlite3

    path = tmp / f"data-{port}" / "ivr.db"
    try:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])
    except sqlite3.Error:
        return None


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_before": [round(x, 2) for x in os.getloadavg()]}


def _isolated_redis(tmp: Path) -> tuple[str, Path]:
    from ivr.runtime.embedded import ensure_redis

    data = tmp / "redis"
    url, _ = ensure_redis(data)
    return url, data


TARGETS = {"p99_ms": 50.0, "throughput_ratio": 0.40, "state_bytes": 4096}


KINDS = ("ivr", "bare")


def run_webhooks(concurrency: int = 50, calls: int = 2000, duration_s: float | None = None,
                 workers: int | None = None, threads: int = 4, redis_url: str | None = None,
                 json_out: bool = False, state_calls: int = 200, warmup_calls: int | None = None,
                 speech_share: float = 0.25, flows_dir: str | Path | None = None,
                 paced_calls: int | None = None, pause_ms: float = 200.0, rounds: int = 4,
                 quiet: bool = False) -> dict[str, Any]:
    """Benchmark the webhooks of the real server against a bare Flask app; see the module doc.

    Both servers run side by side, each with `workers` x `threads` and `concurrency`
    keep-alive connections. The flat-out load (`calls` calls per server, or `duration_s`
    seconds) is cut into `rounds` slices that alternate between the servers (IVR first, then
    bare first, ...), so a machine whose speed drifts, or that other work slows for a while,
    hurts both alike. Then `paced_calls` calls per server (default 20 per simultaneous call)
    whose callers wait a random 0..2 x `pause_ms` before each webhook: latency at that many
    simultaneous calls without saturating the machine (0 skips it).

    `redis_url` must name an empty Redis database the benchmark may use (it is emptied again
    afterwards); without it a private embedded Redis is started in a temporary folder.
    Prints a table (or JSON with `json_out`) unless `quiet`, and returns the figures.
    """
    import redis

    from ivr.web.server import default_workers

    workers = workers or default_workers()
    rounds = max(1, rounds)
    warmup_calls = concurrency * 6 if warmup_calls is None else warmup_calls
    paced_calls = concurrency * 20 if paced_calls is None else paced_calls
    source = Path(flows_dir) if flows_dir else Path(__file__).resolve().parent.parent / "flows"
    tmp = Path(tempfile.mkdtemp(prefix="ivr-bench-"))
    embedded_dir = None
    servers: dict[str, Server] = {}
    token = secrets.token_hex(16)
    result: dict[str, Any] = {"machine": machine()}
    r = None
    owned = False  # the Redis database was empty: the benchmark cleans it up afterwards
    try:
        if not redis_url:
            redis_url, embedded_dir = _isolated_redis(tmp)
        r = redis.Redis.from_url(redis_url)
        if r.dbsize():
            raise click.UsageError(
                f"the Redis database {redis_url} is not empty. Give the benchmark a database of its "
                "own (e.g. redis://127.0.0.1:6379/7): its servers would consume the step log of any "
                "IVR sharing it, and it empties the database afterwards.")
        owned = True
        flows = bench_flows(source, tmp / "flows")
        known = known_numbers(flows)
        result["settings"] = {
            "concurrency": concurrency, "calls": None if duration_s else calls,
            "duration_s": duration_s, "rounds": rounds, "warmup_calls": warmup_calls,
            "paced_calls": paced_calls, "pause_ms": pause_ms, "workers": workers,
            "threads": threads, "worker_class": "gthread" if threads > 1 else "sync",
            "speech_share": speech_share, "state_calls": state_calls,
            "redis": "embedded (private)" if embedded_dir else redis_url,
        }
        for kind in KINDS:
            port = free_port()
            servers[kind] = Server(kind, server_argv(kind, port, workers, threads),
                                   _server_env(tmp, token, port, redis_url, flows), port,
                                   tmp / f"{kind}.log")
        for server in servers.values():
            server.wait_healthy()
        makers = {k: CallMaker(s.base_url, token, known, speech_share) for k, s in servers.items()}
        # every call built and signed before any clock starts
        per_round = [calls // rounds + (1 if i < calls % rounds else 0) for i in range(rounds)]
        work = {k: [[m.call(i) for i in range(n)] if not duration_s else [] for n in per_round]
                for k, m in makers.items()}
        warm = {k: [m.call(i, speech=i % 2 == 0) for i in range(warmup_calls)]
                for k, m in makers.items()}
        paced = {k: [m.call(i) for i in range(paced_calls)] for k, m in makers.items()}
        targets = {k: Target(servers[k], makers[k], concurrency, r) for k in KINDS}

        async def main() -> None:
            try:
                for kind in KINDS:
                    await warm_up(servers[kind].port, warm[kind], concurrency)
                for i in range(rounds):
                    for kind in (KINDS if i % 2 == 0 else KINDS[::-1]):
                        await targets[kind].slice("flat", work[kind][i],
                                                  duration_s / rounds if duration_s else None)
                if paced_calls:
                    for kind in KINDS:
                        await targets[kind].slice("paced", paced[kind], pause_s=pause_ms / 1000)
            finally:
                for t in targets.values():
                    t.close()

        asyncio.run(main())
        result["servers"] = {}
        for kind in KINDS:
            figures = targets[kind].summary("flat")
            if paced_calls:
                figures["paced"] = {**targets[kind].summary("paced"), "pause_ms": pause_ms}
            result["servers"][kind] = figures
        ivr = servers["ivr"]
        result["state"] = live_state(ivr, makers["ivr"], r, state_calls, concurrency)
        drain = wait_drained(r)
        drain["calls_recorded"] = _recorded_calls(tmp, ivr.port)
        drain["calls_started"] = (warmup_calls + sum(len(x) for x in work["ivr"]) + paced_calls
                                  + result["state"]["calls"]) if not duration_s else None
        result["log_drain"] = drain
        real, bare = result["servers"]["ivr"], result["servers"]["bare"]
        ratio = real["calls_per_s"] / bare["calls_per_s"] if bare["calls_per_s"] else 0.0
        result["ratio"] = round(ratio, 3)
        # The same comparison by cost: on a saturated machine, calls/s follow the CPU each
        # request takes from it (server, load generator and, for the IVR, Redis).
        ivr_cpu, bare_cpu = real["cpu_ms_per_request"], bare["cpu_ms_per_request"]
        spent = ivr_cpu["server"] + ivr_cpu["client"] + (ivr_cpu["redis"] or 0.0)
        result["cpu_ratio"] = round((bare_cpu["server"] + bare_cpu["client"]) / spent, 3) if spent else None
        result["ratio_per_round"] = [round(a / b, 3) if b else None for a, b in
                                     zip(real["slices_calls_per_s"], bare["slices_calls_per_s"],
                                         strict=False)]
        # p99 at `concurrency` simultaneous calls: the paced run's when there is one
        latency = real.get("paced", real)
        worst_p99 = max(s.get("p99_ms", 0.0) for s in latency["webhooks"].values())
        result["targets"] = {
            "p99_ms": {"target": TARGETS["p99_ms"], "value": worst_p99,
                       "run": "paced" if "paced" in real else "flat out",
                       "met": worst_p99 <= TARGETS["p99_ms"]},
            "throughput_ratio": {"target": TARGETS["throughput_ratio"], "value": result["ratio"],
                                 "met": ratio >= TARGETS["throughput_ratio"]},
            "state_bytes": {"target": TARGETS["state_bytes"], "value": result["state"]["max_bytes"],
                            "met": (result["state"]["max_bytes"] or 0) <= TARGETS["state_bytes"]},
        }
    finally:
        for server in servers.values():
            server.stop()
        if r is not None:
            if owned:  # it was empty: leave it so (call state, step log, rq jobs)
                try:
                    r.flushdb()
                except redis.RedisError:
                    pass
            r.close()
        if embedded_dir is not None:
            from ivr.runtime.embedded import stop_redis

            stop_redis(embedded_dir)
        shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        if json_out:
            click.echo(json.dumps(result, indent=2))
        else:
            print_report(result)
    return result


def print_report(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    s, m = result["settings"], result["machine"]
    console.print(f"[bold]Webhook benchmark[/] on {m['cpu']} ({m['cores']} cores), "
                  f"{s['concurrency']} simultaneous calls, gunicorn {s['workers']} workers x "
                  f"{s['threads']} threads, Redis: {s['redis']}")
    real, bare = result["servers"]["ivr"], result["servers"]["bare"]
    runs = [("flat out", real, bare)]
    if "paced" in real:
        runs.append((f"paced ({s['pause_ms']:g} ms mean pause)", real["paced"], bare["paced"]))
    for title, a_run, b_run in runs:
        table = Table("webhook", "IVR p50 ms", "IVR p99 ms", "bare p50 ms", "bare p99 ms",
                      title=f"latency, {title}")
        for w in (*WEBHOOKS, "all"):
            a = a_run["all"] if w == "all" else a_run["webhooks"][w]
            b = b_run["all"] if w == "all" else b_run["webhooks"][w]
            table.add_row(w, str(a.get("p50_ms", "-")), str(a.get("p99_ms", "-")),
                          str(b.get("p50_ms", "-")), str(b.get("p99_ms", "-")))
        console.print(table)
    t2 = Table("server", "calls", "calls/s", "requests/s", "errors", "server CPU ms/req",
               "client CPU ms/req", "other load", title="throughput, flat out")
    for name, f in (("IVR", real), ("bare", bare)):
        t2.add_row(name, str(f["calls"]), str(f["calls_per_s"]), str(f["requests_per_s"]),
                   str(f["error_count"]), str(f["cpu_ms_per_request"]["server"]),
                   str(f["cpu_ms_per_request"]["client"]), f"{f['cpu_share']['other']:.0%}")
    console.print(t2)
    st, dr = result["state"], result["log_drain"]
    per_round = ", ".join(f"{x:.1%}" for x in result["ratio_per_round"] if x is not None)
    console.print(f"throughput ratio IVR/bare: [bold]{result['ratio']:.1%}[/] (per round: {per_round})")
    if result.get("cpu_ratio"):
        console.print(f"CPU per request, bare/IVR (incl. load generator and Redis): "
                      f"{result['cpu_ratio']:.1%}; the IVR waited {real.get('log_drain_s')} s in all "
                      "for its step log to reach the database after its slices")
    console.print(f"live state per call in Redis: avg {st['avg_bytes']} B, max {st['max_bytes']} B "
                  f"({st['calls']} calls; menu {st['menu_avg_bytes']} B, queue {st['queue_avg_bytes']} B)")
    console.print(f"step log: {'drained' if dr['drained'] else 'NOT drained'} in {dr['seconds']} s "
                  f"({dr['left']} left, {dr['dead']} dead), {dr['calls_recorded']} of "
                  f"{dr['calls_started']} calls recorded")
    for name, f in (("IVR", real), ("bare", bare)):
        for run in (f, f.get("paced") or {}):
            for example in run.get("error_examples", []):
                console.print(f"[red]{name} error:[/] {example}")
    for key, t in result["targets"].items():
        mark = "[green]met[/]" if t["met"] else "[red]missed[/]"
        console.print(f"target {key}: {t['value']} vs {t['target']}: {mark}")


# -- command line ----------------------------------------------------------------------------


@click.group(name="bench")
def bench_group() -> None:
    """Benchmarks."""


@bench_group.command("webhooks")
@click.option("--concurrency", default=50, show_default=True, help="Simultaneous simulated calls.")
@click.option("--calls", default=2000, show_default=True, help="Calls to drive through each server.")
@click.option("--duration", "duration_s", type=float, default=None,
              help="Run each server for this many seconds instead of a number of calls.")
@click.option("--workers", type=int, default=None, help="gunicorn workers [default: 2 x cores + 1].")
@click.option("--threads", default=4, show_default=True, help="Threads per gunicorn worker.")
@click.option("--redis-url", default=None,
              help="An EMPTY Redis database for the benchmark, e.g. redis://127.0.0.1:6379/7 "
                   "[default: a private embedded Redis].")
@click.option("--state-calls", default=200, show_default=True,
              help="Calls left live to measure their state in Redis.")
@click.option("--rounds", default=4, show_default=True,
              help="Slices the flat-out load is cut into, alternating between the servers.")
@click.option("--paced-calls", type=int, default=None,
              help="Calls in the paced run (0: skip it) [default: 20 per simultaneous call].")
@click.option("--pause-ms", default=200.0, show_default=True,
              help="Mean pause before each webhook in the paced run.")
@click.option("--json", "json_out", is_flag=True, help="Print the figures as JSON.")
def webhooks_command(concurrency: int, calls: int, duration_s: float | None, workers: int | None,
                     threads: int, redis_url: str | None, state_calls: int, rounds: int,
                     paced_calls: int | None, pause_ms: float, json_out: bool) -> None:
    """Drive simulated calls through the example flow on the production server, and the same
    load through a bare Flask app; report latency per webhook, calls/s and the ratio.
    Exits with status 1 if any request failed."""
    result = run_webhooks(concurrency=concurrency, calls=calls, duration_s=duration_s,
                          workers=workers, threads=threads, redis_url=redis_url,
                          state_calls=state_calls, rounds=rounds, paced_calls=paced_calls,
                          pause_ms=pause_ms, json_out=json_out)
    errors = sum(run.get("error_count", 0) for f in result["servers"].values()
                 for run in (f, f.get("paced") or {}))
    if errors or result["state"]["errors"]:
        raise SystemExit(1)


if __name__ == "__main__":
    webhooks_command(prog_name="bench/webhooks.py")
