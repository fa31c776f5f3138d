"""Redis that fails over: 50 simultaneous calls through the real server (`ivr serve`) and a real
`ivr worker`, on a Redis Sentinel set of the test's own (a master, a replica, three sentinels:
Debian's redis-server and redis-sentinel), with SENTINEL FAILOVER in the middle of the calls.

No webhook answers HTTP 500, no caller hears the apology twice, every step reaches SQL, and
every callback booked is dialled once: none lost, none twice."""

from __future__ import annotations

import json
import random
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests
from rq import Queue
from rq.registry import StartedJobRegistry

from callbacks.dispatch import request_dispatch
from callbacks.runtime import QUEUE, Runtime
from ivr.calllog.store import Store
from ivr.config import Config, SentinelUrl, safe_url
from ivr.runtime.connections import connect
from tests.cbutil import ACCOUNT, config, kill_tree, wait_until, worker
from tests.conftest import sign
from tests.sentinelutil import SentinelSet, have_sentinel

needs_sentinel = pytest.mark.skipif(not have_sentinel(), reason="needs Debian's redis-server and "
                                    "redis-sentinel (scripts/test installs them)")

CALLERS = 50
BOOKERS = range(0, CALLERS, 5)  # every fifth caller asks to be called back: 10 callbacks
SUPPORT = "+15005550006"
APOLOGIES = ("technical difficulties", "something went wrong")


@dataclass
class Caller:
    """Twilio's side of one incoming call: signed webhooks, following the TwiML's URLs."""

    base: str
    sid: str
    number: str
    books: bool
    statuses: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # how long each answer took
    apologies: int = 0
    answered: int = 0  # webhooks answered with the flow's own TwiML
    booked: bool = False  # heard that they will be called back

    def post(self, session: requests.Session, path: str, **params) -> ET.Element | None:
        params = {"CallSid": self.sid, "From": self.number, "To": SUPPORT, "AccountSid": ACCOUNT,
                  **{k: str(v) for k, v in params.items()}}
        url = self.base + path
        started = time.monotonic()
        response = session.post(url, data=params, timeout=20,
                                headers={"X-Twilio-Signature": sign(url, params)})
        self.seconds.append(time.monotonic() - started)
        self.statuses.append(response.status_code)
        if not response.content:
            return None
        root = ET.fromstring(response.content)
        said = " ".join(e.text or "" for e in root.iter("Say"))
        if any(a in said for a in APOLOGIES):
            self.apologies += 1
            return None
        self.answered += 1
        return root

    def call(self, progress: threading.Semaphore, pause: float) -> None:
        with requests.Session() as session:
            self._call(session, progress, pause)
            self.post(session, "/voice/status", CallStatus="completed", CallDuration=60)

    def _call(self, session: requests.Session, progress: threading.Semaphore, pause: float) -> None:
        def step(path: str, **params) -> ET.Element | None:
            time.sleep(pause * random.random())  # prompts, hold music: calls overlap as real ones do
            root = self.post(session, path, **params)
            progress.release()
            return root

        menu = step("/voice")
        if menu is None:
            return
        queued = step(menu.find("Gather").get("action"), Digits="1" if self.books else "2")
        if queued is None:
            return
        enqueue = queued.find("Enqueue")
        wait, left = enqueue.get("waitUrl"), enqueue.get("action")
        for cycle in range(3):
            held = step(wait, QueuePosition=cycle + 1, QueueTime=10 * cycle, AvgQueueTime=600,
                        CurrentQueueSize=CALLERS)
            if held is None:
                return
            offer = held.find("Gather")
            if self.books and offer is not None:
                if step(offer.get("action"), Digits="1") is None:
                    return
                confirm = step(left, QueueResult="leave", QueueTime=10 * cycle)
                if confirm is not None:
                    done = step(confirm.find("Gather").get("action"), Digits="1")
                    self.booked = done is not None and "you keep your place in line" in ET.tostring(
                        done, encoding="unicode")
                return
        step(left, QueueResult="hangup", QueueTime=30)


def the_flows(cb_flows, agents: int) -> None:
    """The example flows, open all hours (the wall clock must not matter), with `agents`
    agents on billing who take callbacks at any hour."""
    support = cb_flows / "support.yaml"
    text = support.read_text()
    hours = text[text.index("hours:\n"):text.index("# A caller with a pending callback")]
    text = text.replace(hours, "hours:\n  support:\n    timezone: America/New_York\n"
                               "    open: {mon-sun: 24h}\n\n")
    support.write_text(text.replace(
        "        offer_after: 120           # offer when the estimated wait is over 2 minutes\n",
        "        offer_after: 120\n        calling_hours: {mon-sun: 24h}\n"))
    (cb_flows / "agents.yaml").write_text("agents:\n" + "".join(
        f"  a{i}:\n    queues: [billing]\n    contact: \"+1500555{i:04d}\"\n" for i in range(agents)))


@pytest.fixture
def sentinels(tmp_path):
    group = SentinelSet(tmp_path / "redis").start()
    yield group
    group.stop()


@needs_sentinel
def test_fifty_calls_and_their_callbacks_ride_through_a_sentinel_failover(
        tmp_path, sentinels, cb_flows, standin, start_server):
    the_flows(cb_flows, agents=len(BOOKERS) + 1)  # the reference call books one too
    database = f"sqlite:///{tmp_path}/ivr.db"
    base = start_server({"REDIS_URL": sentinels.url, "DATABASE_URL": database, "IVR_FLOWS_DIR": str(cb_flows),
                         "TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_API_BASE_URL": standin.url})
    cfg = config(tmp_path, sentinels.url, cb_flows, standin, public_url=base, database_url=database)
    rt = Runtime(cfg, connect(sentinels.url, socket_timeout=5))
    agents = [f"a{i}" for i in range(len(BOOKERS) + 1)]
    for name in agents:  # busy: the wait is long, callers are offered a callback
        rt.agents.set_status(name, "busy")
    dialler = worker(cfg, tmp_path, burst=False)
    try:
        callers = [Caller(base, f"CA{i:032d}", f"+1415555{2000 + i}", i in BOOKERS) for i in range(CALLERS)]
        # A reference call of each kind, alone and before the failover: what SQL must hold.
        references = {books: Caller(base, f"CA{'f' * 31}{int(books)}", f"+1415555{3000 + int(books)}", books)
                      for books in (False, True)}
        for reference in references.values():
            reference.call(threading.Semaphore(0), pause=0)
        progress = threading.Semaphore(0)
        threads = [threading.Thread(target=c.call, args=(progress, 0.4)) for c in callers]
        for t in threads:
            t.start()
        for _ in range(CALLERS * 3):  # about half of the webhooks are answered: fail over now
            assert progress.acquire(timeout=60)
        old = sentinels.failover()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        assert sentinels.wait_for_new_master(old) != old

        statuses = Counter(s for c in callers for s in c.statuses)
        assert set(statuses) <= {200, 204}, statuses  # never a 500, nor anything but an answer
        assert max(c.apologies for c in callers) <= 1
        apologised = [c for c in callers if c.apologies]

        # Every step of every call is in SQL, as in the reference call of its kind.
        def drained() -> bool:
            pending = rt.redis.xpending("ivr:log", "recorder")["pending"] if rt.redis.exists("ivr:log") else 0
            return rt.redis.xlen("ivr:log") == 0 and pending == 0
        wait_until(drained, timeout=60)
        assert rt.redis.xlen("ivr:log:dead") == 0
        store = Store(database)

        def path(sid: str) -> list[tuple]:
            return [(s["seq"], s["node"], s["event"], s["kind"], s["digits"]) for s in store.steps(sid)]
        expected = {books: path(r.sid) for books, r in references.items()}
        assert all(expected.values())
        for c in callers:
            steps = path(c.sid)
            if c.apologies:  # the steps before the apology are all there
                assert steps == expected[c.books][:len(steps)], c.sid
            else:
                assert steps == expected[c.books], c.sid
                # and the call's state on the new master is the one of its last step
                state = json.loads(rt.redis.hget(f"ivr:call:{c.sid}", "state"))
                assert (state["seq"], state["outcome"]) == (steps[-1][0], store.call(c.sid)["outcome"])
            assert store.call(c.sid)["ended_at"] is not None, c.sid

        # Every callback booked is dialled once, by the worker that lived through the failover:
        # none lost, none twice.
        booked = [c for c in (*callers, references[True]) if c.booked]
        assert len(booked) == len(BOOKERS) + 1 - len([c for c in apologised if c.books])
        for name in agents:
            rt.agents.set_status(name, "available")
        request_dispatch(rt.redis, ["billing"])
        numbers = {c.number for c in booked}
        wait_until(lambda: len(standin.calls) >= len(booked), timeout=60)
        wait_until(lambda: Queue(QUEUE, connection=rt.redis).count == 0
                   and StartedJobRegistry(QUEUE, connection=rt.redis).count == 0, timeout=30)
        dialled = Counter(call.to for call in standin.calls)
        assert set(dialled) == numbers and max(dialled.values()) == 1
        records = rt.callbacks.many(rt.callbacks.active_ids())
        assert {r["number"] for r in records} == numbers
        assert all(r["status"] == "dialing" and r["dial_sid"] for r in records)
        seconds = sorted(t for c in callers for t in c.seconds)
        held = [t for t in seconds if t > 0.5]
        print(f"\n{CALLERS} calls, {sum(statuses.values())} webhooks: {dict(statuses)}; {len(apologised)} "
              f"callers heard the apology; {len(booked)} callbacks booked, {len(standin.calls)} dialled; "
              f"answers: median {seconds[len(seconds) // 2] * 1000:.0f} ms; {len(held)} waited for the new "
              f"master, the longest {seconds[-1]:.2f} s")
    finally:
        kill_tree(dialler)


def test_a_sentinel_url_is_read_and_a_wrong_one_explained():
    spec = SentinelUrl.parse("redis+sentinel://:s%40cret@10.0.0.21,10.0.0.22:26380/ivr/2?sentinel_password=x")
    assert spec == SentinelUrl((("10.0.0.21", 26379), ("10.0.0.22", 26380)), "ivr", 2, None, "s@cret", "x")
    assert safe_url("redis+sentinel://:s3cret@h1,h2/ivr/0?sentinel_password=x") == \
        "redis+sentinel://:***@h1,h2/ivr/0?sentinel_password=***"
    for url, error in (("redis+sentinel://h1,h2", "name the service after the sentinels"),
                       ("redis+sentinel://h1:port/ivr", "sentinel 'h1:port' is not host or host:port"),
                       ("redis+sentinel://h1/ivr/zero", "database 'zero' is not a number"),
                       ("redis+sentinel://h1/ivr?ssl=true", "unknown option 'ssl'")):
        with pytest.raises(ValueError, match=error):
            Config(redis_url=url).check()
