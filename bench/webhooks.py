"""How many simultaneous calls one `ivr serve` holds, answering every webhook fast.

    python bench/webhooks.py                    # the default server, its embedded Redis
    python bench/webhooks.py --workers 4 --redis-url redis://127.0.0.1:6379/7 --json

A call spends most of its time listening (prompts, hold music), so its webhooks are few and
far apart. Each simulated call sends one webhook after a random pause, 4 s on average
(exponential, so calls bunch up the way independent callers do), and waits for the answer
before the next, as Twilio does:

    POST /voice                 a new call: a known customer, an unknown number or "Anonymous"
    POST <the Gather's action>  Digits=1, or SpeechResult=billing (a quarter of the calls)
    POST <the Enqueue's waitUrl>  twice, with QueuePosition, QueueTime, ...
    POST /voice/status          CallStatus=completed

then hangs up and the next call starts on the same line. Every request is signed as Twilio
signs it and every answer is checked: the TwiML must do what the step should (a `<Gather>`,
an `<Enqueue>`, hold music; 204 for the status); the fail-safe apology counts as an error.

The load steps up (doubling, then halving the gap between the last level that passed and the
first that failed) until the webhooks' p99 latency passes 50 ms or an answer is wrong. The
capacity is the most simultaneous calls that passed. The same steps are then run against a
bare Flask app under the same gunicorn settings, whose views return fixed TwiML: a reference
for what gunicorn, Flask and this load generator cost alone, not a target.

The server is `ivr serve` as users start it (the example flows opened 24 hours a day, the
step log in SQLite, the embedded Redis unless --redis-url), and its footprint (RSS and PSS of
every process, Redis included) is read from /proc before the first call and after the last.
The load generator runs on the same machine and cores, in one asyncio loop; requests reach
the server over a pool of kept-alive connections, as they do through a proxy in front of it.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import click

ROOT = Path(__file__).resolve().parent.parent
P99_LIMIT_MS = 50.0
TO_NUMBER = "+15005550006"
UNKNOWN_NUMBERS = ["+13125550142", "+16175550177", "+14085550123", "+12065550199"]


# -- the bare app ------------------------------------------------------------------------


def create_bare_app(config=None):
    """Flask with the webhook paths of the real app, answering fixed TwiML of the same shape.
    `config` is accepted and ignored (`ivr serve` passes it to the app factory)."""
    from flask import Flask, Response, jsonify

    app = Flask("bare")
    voice = ('<?xml version="1.0" encoding="UTF-8"?><Response><Gather action="/voice/gather?s=1" '
             'input="dtmf speech" hints="billing, orders, technical, agent"><Say>Hi, thanks for '
             "calling. For billing, press 1.</Say></Gather></Response>")
    gather = ('<?xml version="1.0" encoding="UTF-8"?><Response><Say>Connecting you to our billing '
              'team.</Say><Enqueue action="/voice/queue/left?s=2" waitUrl="/voice/queue/wait?s=2">'
              "billing</Enqueue></Response>")
    wait = ('<?xml version="1.0" encoding="UTF-8"?><Response><Say>Thanks for waiting.</Say>'
            "<Play>http://com.twilio.music.classical.s3.amazonaws.com/BusyStrings.mp3</Play></Response>")
    for rule, body in (("/voice", voice), ("/voice/gather", gather), ("/voice/queue/wait", wait)):
        app.add_url_rule(rule, rule, lambda body=body: Response(body, mimetype="text/xml"),
                         methods=["POST"])
    app.add_url_rule("/voice/status", "status", lambda: ("", 204), methods=["POST"])
    app.add_url_rule("/healthz", "healthz", lambda: jsonify(ok=True))
    return app


# -- HTTP: a pool of kept-alive connections --------------------------------------------------


class Pool:
    """HTTP/1.1 connections to one server, each carrying one request at a time. A request
    takes the connection idle longest (so they all stay in use and spread over gunicorn's
    workers), or opens one. A request that finds its kept-alive connection closed by the
    server before any answer came is sent once more on a new one, as HTTP clients do."""

    def __init__(self, host: str, port: int, timeout_s: float = 15.0):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = self.resent = 0

    async def post(self, request: bytes) -> tuple[float, int, bytes]:
        """(seconds, status, body) for one request."""
        start = time.perf_counter()
        if self.idle:
            try:
                return await self._exchange(self.idle.pop(0), request, start)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                if getattr(exc, "partial", b""):  # the server had begun to answer
                    raise
                self.resent += 1
        self.opened += 1
        return await self._exchange(await asyncio.open_connection(self.host, self.port), request, start)

    async def _exchange(self, conn, request: bytes, start: float) -> tuple[float, int, bytes]:
        reader, writer = conn
        try:
            async with asyncio.timeout(self.timeout_s):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                body = await reader.readexactly(int(length.group(1))) if length else b""
        except BaseException:
            writer.close()
            raise
        self.idle.append(conn)
        return time.perf_counter() - start, int(head[9:12]), body

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


# -- simulated calls ---------------------------------------------------------------------------


def signed_request(base_url: str, token: str, path: str, params: dict[str, str]) -> bytes:
    """A whole HTTP request, signed with Twilio's X-Twilio-Signature."""
    from twilio.request_validator import RequestValidator

    body = urlencode(params).encode()
    signature = RequestValidator(token).compute_signature(base_url + path, params)
    host = base_url.split("://", 1)[1]
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: TwilioProxy/1.1\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {signature}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@dataclass
class Window:
    """What one load level measured: latencies of the webhooks sent inside it, and errors."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def error(self, kind: str, example: str) -> None:
        self.errors[kind] += 1
        if len(self.examples) < 3:
            self.examples.append(example[:200])


class Load:
    """`lines` simultaneous calls against one server, each line starting a new call when its
    call ends. Webhooks sent while `window` is set are measured in it."""

    def __init__(self, base_url: str, token: str, known: list[str], gap_s: float):
        host, port = base_url.split("://", 1)[1].split(":")
        self.pool = Pool(host, int(port))
        self.base_url, self.token, self.known, self.gap_s = base_url, token, known, gap_s
        self.lines: list[asyncio.Task] = []
        self.sending: set[asyncio.Task] = set()  # lines waiting for an answer
        self.retiring: set[asyncio.Task] = set()  # lines to end once they have their answer
        self.window: Window | None = None
        self.calls_started = 0  # calls whose first webhook was sent
        self.rng = random.Random(7)

    def resize(self, calls: int) -> None:
        # A line is ended between webhooks, never while one is on its way: every call the
        # server got is counted, and no connection is left with an unread answer.
        while len(self.lines) > calls:
            line = self.lines.pop()
            if line in self.sending:
                self.retiring.add(line)
            else:
                line.cancel()
        while len(self.lines) < calls:
            self.lines.append(asyncio.create_task(self._line(len(self.lines))))

    async def warm_up(self, calls: int = 64) -> None:
        """Many calls at once and in quick succession, on as many connections: every gunicorn
        worker takes some, so none meets its first call (connections, caches) in a level."""
        gap, self.gap_s = self.gap_s, 0.05
        try:
            await asyncio.gather(*(self._call(i) for i in range(calls)))
        finally:
            self.gap_s = gap

    async def stop(self) -> None:
        lines = list(self.lines)
        self.resize(0)
        await asyncio.gather(*lines, return_exceptions=True)
        self.pool.close()

    async def _post(self, request: bytes) -> tuple[float, int, bytes]:
        line = asyncio.current_task()
        self.sending.add(line)
        try:
            return await self.pool.post(request)
        finally:
            self.sending.discard(line)
            if line in self.retiring:
                self.retiring.discard(line)
                line.cancel()  # raised at its next pause

    async def _line(self, n: int) -> None:
        call = 0
        while True:
            await self._call(n * 100_000 + call)
            call += 1

    async def _call(self, i: int) -> None:
        sid = "CA" + secrets.token_hex(16)
        caller = self._caller(i)
        base = {"AccountSid": "AC" + "0" * 32, "ApiVersion": "2010-04-01", "CallSid": sid,
                "CallStatus": "in-progress", "Direction": "inbound", "From": caller, "Caller": caller,
                "To": TO_NUMBER, "Called": TO_NUMBER, "ToCountry": "US", "ToState": "CA"}
        said = {"SpeechResult": "billing", "Confidence": "0.92"} if i % 4 == 3 else {"Digits": "1"}
        answer = await self._send("/voice", {**base, "CallStatus": "ringing"}, b"<Gather", b'action="')
        if answer is None:
            return
        answer = await self._send(answer, {**base, **said}, b"<Enqueue", b'waitUrl="')
        for n in range(2):
            if answer is None:
                return
            queue = {"QueuePosition": str(3 - n), "QueueTime": str(40 * n), "AvgQueueTime": "45",
                     "CurrentQueueSize": "5", "QueueSid": "QU" + sid[2:]}
            await self._send(answer, {**base, **queue}, b"<Play", None)
        await self._send("/voice/status", {**base, "CallStatus": "completed", "CallDuration": "90"},
                         None, None)

    def _caller(self, i: int) -> str:
        """Half the calls from known customers, a quarter withheld, a quarter unknown."""
        kind = i % 4
        if kind < 2 and self.known:
            return self.known[i % len(self.known)]
        return "Anonymous" if kind == 2 else UNKNOWN_NUMBERS[i % len(UNKNOWN_NUMBERS)]

    async def _send(self, path: str, params: dict[str, str], must_have: bytes | None,
                    next_url: bytes | None) -> str | None:
        """Pause, send one webhook, check its answer; the URL the answer sends the call to next
        (the value of `next_url`), or None when the call cannot go on."""
        await asyncio.sleep(self.rng.expovariate(1 / self.gap_s))
        window = self.window
        request = signed_request(self.base_url, self.token, path, params)
        self.calls_started += path == "/voice"
        try:
            seconds, status, body = await self._post(request)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            if window is not None:
                window.error("transport", f"{path}: {type(exc).__name__}: {exc}")
            return None
        if window is not None:
            window.latencies.append(seconds)
        wrong = status != (200 if must_have else 204) or (must_have and must_have not in body)
        if wrong or (must_have and b"technical difficulties" in body):
            if window is not None:
                window.error(f"HTTP {status}" if status >= 300 else "wrong TwiML",
                             f"{path}: HTTP {status}: {body[:150]!r}")
            return None
        if next_url is None:
            return ""
        at = body.find(next_url)
        if at < 0:
            if window is not None:
                window.error("wrong TwiML", f"{path}: no {next_url!r} in {body[:150]!r}")
            return None
        at += len(next_url)
        return body[at: body.find(b'"', at)].decode().replace("&amp;", "&")


# -- the servers -------------------------------------------------------------------------------


class Server:
    """`ivr serve` (or the bare app under the same gunicorn settings) in its own process group."""

    def __init__(self, kind: str, folder: Path, flows: Path, token: str, workers: int | None,
                 threads: int | None, redis_url: str | None):
        from ivr.config import Config

        self.kind, self.port = kind, free_port()
        self.data = folder / f"{kind}-data"
        env = {k: v for k, v in os.environ.items() if k not in Config.ENV.values()}
        env.update({"TWILIO_AUTH_TOKEN": token, "PUBLIC_URL": self.base_url, "IVR_DATA_DIR": str(self.data),
                    "IVR_FLOWS_DIR": str(flows), "IVR_LOG_LEVEL": "WARNING"})
        if redis_url:
            env["REDIS_URL"] = redis_url
        argv = [sys.executable, "-m", "ivr.cli", "serve", "--port", str(self.port)]
        argv += ["--workers", str(workers)] if workers else []
        argv += ["--threads", str(threads)] if threads else []
        if kind == "bare":
            argv = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                    f"from bench.webhooks import serve_bare; serve_bare({self.port}, {workers}, {threads})"]
        self.log = (folder / f"{kind}.log").open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._wait_healthy()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_healthy(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise click.ClickException(f"the {self.kind} server exited: see {self.log.name}")
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise click.ClickException(f"the {self.kind} server did not start: see {self.log.name}")

    def wait_for_workers(self, timeout_s: float = 30.0) -> None:
        """Until gunicorn has forked all its workers (its processes stop changing for 2 s)."""
        seen, since, deadline = None, time.monotonic(), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = sorted(self.pids())
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since >= 2:
                return
            time.sleep(0.2)

    def favour(self, nice: int) -> None:
        """Raise the scheduling weight of the server's processes (see `favour`)."""
        favour(nice, self.proc.pid, *self.pids())

    def pids(self) -> list[int]:
        """gunicorn's master and workers, and the embedded Redis when it started one."""
        pids = [pid for pid, stat in _stats() if int(stat[2]) == self.proc.pid]  # process group
        redis_pid = self.data / "redis.pid"
        if redis_pid.exists():
            pids.append(int(redis_pid.read_text()))
        return pids

    def cpu_s(self) -> float:
        tick = os.sysconf("SC_CLK_TCK")
        wanted = set(self.pids())
        return sum(int(s[11]) + int(s[12]) for pid, s in _stats() if pid in wanted) / tick

    def footprint(self) -> dict[str, float]:
        """RSS and PSS (each shared page divided among the processes sharing it) in MiB."""
        total = {"processes": 0, "rss_mib": 0.0, "pss_mib": 0.0}
        for pid in self.pids():
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            fields = dict(re.findall(r"^(\w+):\s+(\d+) kB", rollup, re.M))
            total["processes"] += 1
            total["rss_mib"] += int(fields["Rss"]) / 1024
            total["pss_mib"] += int(fields["Pss"]) / 1024
        return {k: round(v, 1) for k, v in total.items()}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def serve_bare(port: int, workers: int | None, threads: int | None) -> None:
    """The bare app under `ivr serve`'s gunicorn settings (run in the bare server's process)."""
    from ivr.config import Config
    from ivr.web.server import DEFAULT_THREADS, DEFAULT_WORKERS, serve

    serve(Config.from_env(), "127.0.0.1", port, workers or DEFAULT_WORKERS, threads or DEFAULT_THREADS,
          app_factory="bench.webhooks:create_bare_app")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def favour(nice: int, *pids: int) -> None:
    """On a machine shared with other work: give these processes' sessions (Linux autogroups,
    which share the CPU between them whatever each process's own nice value) the weight of
    `nice`. Needs root for a negative value."""
    for pid in pids:
        try:
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))
        except OSError as exc:
            raise click.ClickException(f"--nice {nice}: {exc}") from None


def _stats():
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                yield int(entry), Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue


def bench_flows(target: Path) -> Path:
    """The example flows, opened every day around the clock: every run takes the same path."""
    from ruamel.yaml import YAML

    yaml = YAML()
    shutil.copytree(ROOT / "flows", target)
    for path in target.glob("*.yaml"):
        data = yaml.load(path.read_text())
        for hours in (data.get("hours") or {}).values():
            hours["open"], hours["holidays"] = {"mon-sun": "00:00-24:00"}, []
        yaml.dump(data, path)
    return target


def known_numbers(flows: Path) -> list[str]:
    from ivr.phone import normalize

    with (flows / "customers.csv").open(newline="") as f:
        return [n for row in csv.DictReader(f) if (n := normalize(row.get("phone"), "US"))]


# -- stepping the load ---------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


async def measure(load: Load, server: Server, calls: int, settle_s: float, measure_s: float) -> dict:
    """Hold `calls` simultaneous calls: let the level settle, then measure it."""
    load.resize(calls)
    await asyncio.sleep(settle_s)
    load.window = window = Window()
    cpu, client_cpu, start = server.cpu_s(), time.process_time(), time.perf_counter()
    await asyncio.sleep(measure_s)
    load.window = None
    seconds, cpu = time.perf_counter() - start, server.cpu_s() - cpu
    client_cpu = time.process_time() - client_cpu
    await asyncio.sleep(1)  # the answers to webhooks sent in the window
    n = len(window.latencies)
    level = {"calls": calls, "webhooks": n, "webhooks_per_s": round(n / seconds, 1),
             "p50_ms": round(percentile(window.latencies, 50) * 1000, 1),
             "p99_ms": round(percentile(window.latencies, 99) * 1000, 1),
             "errors": sum(window.errors.values()), "error_examples": window.examples,
             "server_cpu_ms_per_webhook": round(cpu / max(n, 1) * 1000, 3),
             "client_cpu_ms_per_webhook": round(client_cpu / max(n, 1) * 1000, 3)}
    level["passed"] = bool(n) and not level["errors"] and level["p99_ms"] <= P99_LIMIT_MS
    return level


async def step_up(passes, start: int, limit: int, refine: int) -> tuple[int, int | None]:
    """(most calls that passed, fewest that failed or None): double the calls from `start`
    while `passes(calls)` (up to `limit`), then try halfway between the last pass and the
    first failure `refine` times."""
    passed, failed, calls = 0, None, start
    while calls <= limit:
        if not await passes(calls):
            failed = calls
            break
        passed, calls = calls, calls * 2
    for _ in range(refine if failed else 0):
        middle = (passed + failed) // 2
        middle -= middle % 50 if failed - passed > 200 else 0
        if middle in (passed, failed):
            break
        if await passes(middle):
            passed = middle
        else:
            failed = middle
    return passed, failed


async def find_capacity(server: Server, token: str, known: list[str], start: int, limit: int,
                        refine: int, gap_s: float, settle_s: float, measure_s: float,
                        say=print) -> dict:
    """Step the load up on `server` (see `step_up`) and measure every level."""
    load = Load(server.base_url, token, known, gap_s)
    levels: list[dict] = []

    async def passes(calls: int) -> bool:
        result = await measure(load, server, calls, settle_s, measure_s)
        levels.append(result)
        say(f"  {server.kind}: {calls:>6} calls  {result['webhooks_per_s']:>7} webhooks/s  "
            f"p50 {result['p50_ms']:>6} ms  p99 {result['p99_ms']:>7} ms  errors {result['errors']}  "
            f"{'pass' if result['passed'] else 'FAIL'}")
        return result["passed"]

    try:
        await load.warm_up()
        passed, failed = await step_up(passes, start, limit, refine)
    finally:
        await load.stop()
    best = next((lv for lv in levels if lv["passed"] and lv["calls"] == passed), None)
    return {"capacity_calls": passed, "first_failed": failed, "at_capacity": best, "levels": levels,
            "calls_started": load.calls_started, "connections_opened": load.pool.opened,
            "resent": load.pool.resent}


def state_sizes(redis_client, sample: int = 200) -> dict:
    """MEMORY USAGE of live calls' state hashes (read while the calls are live)."""
    keys = [k for k in redis_client.scan_iter("ivr:call:CA*", count=500) if k.count(b":") == 2]
    sizes = [redis_client.memory_usage(key) or 0 for key in keys[:sample]]
    return {"calls": len(sizes), "avg_bytes": round(sum(sizes) / len(sizes)) if sizes else None,
            "max_bytes": max(sizes, default=None)}


def recorded_calls(server: Server) -> int:
    import sqlite3

    with sqlite3.connect(server.data / "ivr.db") as db:
        return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in os.getloadavg()]}


def run(workers: int | None = None, threads: int | None = None, redis_url: str | None = None,
        start: int = 250, limit: int = 32_000, refine: int = 2, gap_s: float = 4.0,
        settle_s: float = 6.0, measure_s: float = 20.0, bare: bool = True, nice: int | None = None,
        say=print) -> dict:
    """The whole benchmark; returns its figures (see the module's docstring)."""
    import redis

    folder = Path(tempfile.mkdtemp(prefix="ivr-bench-"))
    token = secrets.token_hex(16)
    result: dict = {"machine": machine(), "settings": {
        "workers": workers or "default", "threads": threads or "default", "gap_s": gap_s,
        "measure_s": measure_s, "p99_limit_ms": P99_LIMIT_MS, "nice": nice,
        "redis": redis_url or "embedded (ivr serve's own)"}}
    if redis_url and redis.Redis.from_url(redis_url).dbsize():
        raise click.UsageError(f"{redis_url} is not empty: give the benchmark a Redis database of its own")
    try:
        if nice is not None:
            favour(nice, os.getpid())  # the load generator
        flows = bench_flows(folder / "flows")
        known = known_numbers(flows)
        server = Server("ivr", folder, flows, token, workers, threads, redis_url)
        try:
            server.wait_for_workers()
            if nice is not None:
                server.favour(nice)
            from ivr.runtime.embedded import url_for

            client = redis.Redis.from_url(redis_url or url_for(server.data))
            result["footprint_idle"] = server.footprint()
            say(f"ivr serve: {result['footprint_idle']['processes']} processes, "
                f"{result['footprint_idle']['pss_mib']:.0f} MiB PSS before any call")
            ivr = asyncio.run(find_capacity(server, token, known, start, limit, refine, gap_s,
                                            settle_s, measure_s, say))
            result["footprint_loaded"] = server.footprint()
            result["state"] = state_sizes(client)
            # The recorder deletes the log's entries once their batch is committed to SQL.
            deadline = time.monotonic() + 60
            while client.xlen("ivr:log") and time.monotonic() < deadline:
                time.sleep(0.5)
            ivr["calls_recorded"] = recorded_calls(server)
            result["ivr"] = ivr
        finally:
            server.stop()
            if redis_url:
                redis.Redis.from_url(redis_url).flushdb()
        if bare:
            server = Server("bare", folder, flows, token, workers, threads, redis_url)
            try:
                if nice is not None:
                    server.favour(nice)
                result["bare"] = asyncio.run(find_capacity(
                    server, token, known, max(start, result["ivr"]["capacity_calls"]), limit, refine,
                    gap_s, settle_s, measure_s, say))
            finally:
                server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def report(result: dict) -> str:
    m, ivr = result["machine"], result["ivr"]
    at = ivr["at_capacity"] or {}
    idle, loaded, state = result["footprint_idle"], result["footprint_loaded"], result["state"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']} "
        f"(load average before: {m['load_average_before']})",
        f"ivr serve, workers {result['settings']['workers']}, threads {result['settings']['threads']}, "
        f"Redis {result['settings']['redis']}; one webhook per call every {result['settings']['gap_s']:g} s"
        + (f"; nice {result['settings']['nice']}" if result["settings"]["nice"] is not None else ""),
        "",
        f"Capacity: {ivr['capacity_calls']} simultaneous calls with p99 <= {P99_LIMIT_MS:g} ms "
        f"(first level over: {ivr['first_failed'] or 'none up to the limit'})",
        f"  at capacity: {at.get('webhooks_per_s')} webhooks/s, p50 {at.get('p50_ms')} ms, "
        f"p99 {at.get('p99_ms')} ms; CPU per webhook: server {at.get('server_cpu_ms_per_webhook')} ms "
        f"(gunicorn and Redis), load generator {at.get('client_cpu_ms_per_webhook')} ms",
        f"  footprint: {idle['pss_mib']:.0f} MiB PSS ({idle['rss_mib']:.0f} MiB RSS) in "
        f"{idle['processes']} processes before any call; {loaded['pss_mib']:.0f} MiB PSS "
        f"({loaded['rss_mib']:.0f} MiB RSS) after",
        f"  live call state in Redis: {state['avg_bytes']} bytes on average, {state['max_bytes']} at "
        f"most ({state['calls']} calls)",
        f"  step log: {ivr['calls_recorded']} of {ivr['calls_started']} calls recorded in SQL",
    ]
    if "bare" in result:
        bare = result["bare"]
        lines.append(f"Bare Flask app, same gunicorn (reference): {bare['capacity_calls']} simultaneous "
                     f"calls (first level over: {bare['first_failed'] or 'none up to the limit'})")
    for kind in ("ivr", "bare"):
        for level in result.get(kind, {}).get("levels", []):
            for example in level["error_examples"]:
                lines.append(f"  {kind} error at {level['calls']} calls: {example}")
    return "\n".join(lines)


@click.command()
@click.option("--workers", type=int, help="gunicorn workers [default: ivr serve's].")
@click.option("--threads", type=int, help="Threads per worker [default: ivr serve's].")
@click.option("--redis-url", help="An EMPTY Redis database [default: ivr serve's embedded Redis].")
@click.option("--start", default=250, show_default=True, help="Simultaneous calls of the first level.")
@click.option("--limit", default=32_000, show_default=True, help="Never more calls than this.")
@click.option("--refine", default=2, show_default=True,
              help="Levels between the last pass and the first failure.")
@click.option("--gap", "gap_s", default=4.0, show_default=True,
              help="Mean seconds between a call's webhooks.")
@click.option("--measure", "measure_s", default=20.0, show_default=True, help="Seconds measured per level.")
@click.option("--no-bare", is_flag=True, help="Skip the bare Flask app.")
@click.option("--nice", type=click.IntRange(-20, 19),
              help="On a machine shared with other work: the scheduling weight of the benchmark's "
                   "processes, as a nice value (Linux autogroups; negative needs root).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def main(workers, threads, redis_url, start, limit, refine, gap_s, measure_s, no_bare, nice,
         as_json) -> None:
    """Step up simultaneous calls on `ivr serve` until the webhooks' p99 passes 50 ms."""
    say = (lambda line: print(line, file=sys.stderr)) if as_json else print  # progress, as it goes
    result = run(workers, threads, redis_url, start, limit, refine, gap_s, measure_s=measure_s,
                 bare=not no_bare, nice=nice, say=say)
    click.echo(json.dumps(result, indent=2) if as_json else "\n" + report(result))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
