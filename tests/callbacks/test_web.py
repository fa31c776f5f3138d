"""Callbacks end to end: the app over real HTTP with signed Twilio requests, a real Redis, real
`ivr worker` and `ivr` processes, the stand-in Twilio REST API placing and playing the calls,
and the SQL log."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
import redis
import requests
from rq import Queue
from rq.registry import ScheduledJobRegistry

from callbacks import line
from callbacks.dispatch import dispatch_queue
from callbacks.runtime import QUEUE
from ivr.calllog.store import Store
from tests.cbutil import API_TOKEN, AppServer, config, env, run_worker
from tests.conftest import TOKEN, sign

ADA = {"From": "+14155550100", "To": "+15005550006"}
OPEN = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # the line is open (business hours of the flow)


@pytest.fixture
def flows(cb_flows):
    # Callers may be called at any hour in these tests, from every queue: the wall clock must
    # not matter (by default a booking made at night where the caller is would be refused).
    flow = cb_flows / "support.yaml"
    anytime = "        offer_after: 120\n        calling_hours: {mon-sun: 24h}\n        retry_after: 60\n"
    flow.write_text(re.sub(r"        offer_after: 120[^\n]*\n", anytime, flow.read_text()))
    return cb_flows


@pytest.fixture
def server(tmp_path, cb_redis_url, flows, standin, monkeypatch):
    import ivr.runtime.services
    from ivr import create_app

    monkeypatch.setattr(ivr.runtime.services, "clock", lambda: OPEN)
    made = {}

    def make(url):
        made["cfg"] = config(tmp_path, cb_redis_url, flows, standin, public_url=url)
        return create_app(made["cfg"])

    srv = AppServer(make)
    srv.cfg = made["cfg"]
    srv.rt = srv.app.extensions["ivr"].callbacks
    yield srv
    srv.stop()


class Phone:
    """Twilio's side of an incoming call: signed webhooks to the live server, TwiML back."""

    def __init__(self, base: str, sid: str, caller: dict):
        self.base, self.sid, self.caller = base, sid, caller

    def post(self, path: str, **params) -> ET.Element:
        params = {"CallSid": self.sid, **self.caller, **{k: str(v) for k, v in params.items()}}
        url = self.base + path
        response = requests.post(url, data=params, timeout=10,
                                 headers={"X-Twilio-Signature": sign(url, params)})
        assert response.status_code in (200, 204), (path, response.status_code, response.text)
        return ET.fromstring(response.content) if response.content else None


def said(root: ET.Element) -> str:
    return " ".join(e.text or "" for e in root.iter("Say"))


def book_by_phone(server, sid: str = "CA1") -> Phone:
    """Ada calls billing, hears the offer while waiting, presses 1 and confirms her number."""
    phone = Phone(server.url, sid, ADA)
    phone.post("/voice")
    assert phone.post("/voice/gather?s=1", Digits="1").find("Enqueue").text == "billing"
    wait = phone.post("/voice/queue/wait?s=2", QueuePosition=1, QueueTime=5, AvgQueueTime=60,
                      CurrentQueueSize=1)
    offer = wait.find("Gather")
    assert offer.get("action") == "/voice/queue/offer?s=2" and offer.get("input") == "dtmf speech"
    assert "press 1" in said(offer) and offer.find("Play") is not None  # the music, listening
    assert phone.post("/voice/queue/offer?s=2", Digits="1").find("Leave") is not None
    confirm = phone.post("/voice/queue/left?s=2", QueueResult="leave", QueueTime=20)
    assert "We'll call you back at 4 1 5, 5 5 5, 0 1 0 0" in said(confirm)
    booked = phone.post("/voice/gather?s=3", Digits="1")
    assert "you keep your place in line" in said(booked) and booked.find("Hangup") is not None
    phone.post("/voice/status", CallStatus="completed", CallDuration=60)
    return phone


def ivr(server, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "ivr.cli", *args], env=env(server.cfg), text=True,
                          capture_output=True, timeout=60, cwd=server.cfg.data_dir.parent)
    assert done.returncode == 0, done.stderr
    return done.stdout


def api(server, method: str, path: str, token: str | None = API_TOKEN, **kw) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, server.url + path, headers=headers, timeout=10, **kw)


def test_a_caller_is_called_back_with_an_agent_ready(server, standin, tmp_path):
    rt = server.rt
    book_by_phone(server)
    # the callback holds Ada's place from when she joined the queue
    [listed] = json.loads(ivr(server, "callbacks", "list", "--json"))
    assert listed["number"] == "+14155550100" and listed["status"] == "pending"
    assert listed["enqueued_at"] == "2026-11-24T15:00:00+00:00" and listed["requested_at"]
    assert line.entries(rt.redis, "billing")[0][0] == f"cb:{listed['id']}"

    # an agent becomes available through the API; a worker places the call
    assert api(server, "GET", "/api/agents", token=None).status_code == 401
    assert api(server, "GET", "/api/agents", token="wrong").status_code == 401
    assert api(server, "GET", "/api/agents", token="t\u00f6k").status_code == 401  # not ASCII: still 401
    agents = api(server, "GET", "/api/agents").json()
    assert {a["name"]: a["status"] for a in agents} == {"alice": "offline", "bob": "offline",
                                                        "tess": "offline"}
    bad = api(server, "PUT", "/api/agents/alice/status", json={"status": "awake"})
    assert bad.status_code == 400 and "available, away, offline" in bad.json()["error"]
    assert api(server, "PUT", "/api/agents/alcie/status", json={"status": "available"}).json()[
        "error"] == "no agent named 'alcie' in the agents file (did you mean 'alice'?)"
    assert api(server, "PUT", "/api/agents/alice/status", json={"status": "available"}).json()[
        "status"] == "available"
    run_worker(server.cfg, tmp_path)
    [call] = standin.calls
    assert call.to == "+14155550100" and call.from_ == "+15005550006"
    assert call.url == f"{server.url}/voice/callback?cb={listed['id']}&a=1"
    assert call.machine_detection == "Enable" and "completed" in call.events

    played = standin.answer(call)
    assert played.text.startswith("Hi Ada, this is Northwind Fibre. This is the callback you asked "
                                  "for a moment ago")
    dial = played.documents[0].find("Dial")
    assert dial.find("Number").text == "+15005550021"  # alice, reserved for this callback
    assert played.whisper.startswith("Callback for Ada Lovelace, customer C - 1 0 0 1 at 4 1 5, "
                                     "5 5 5, 0 1 0 0.")
    record = rt.callbacks.get(listed["id"])
    assert record["status"] == "completed" and record["dial_sid"] == call.sid
    assert 0 <= record["wait_s"] < 60
    assert rt.agents.get("alice")["status"] == "available"  # free for the next one

    # the log: the first call ended as a callback, the callback call is linked to it
    svc = server.app.extensions["ivr"]
    svc.migrate()
    svc.recorder().flush()
    store = Store(server.cfg.effective_database_url)
    assert store.call("CA1")["outcome"] == "callback"
    leg = store.call(call.sid)
    assert leg["parent_call_sid"] == "CA1" and leg["outcome"] == "transferred"
    row = store.callback(listed["id"])
    assert row["status"] == "completed" and row["wait_s"] == pytest.approx(record["wait_s"])
    assert rt.redis.xlen("ivr:log:dead") == 0  # every snapshot of the callback was stored
    report = json.loads(ivr(server, "callbacks", "report", "--json"))
    assert report["kept"] == 1 and report["wait_s"]["count"] == 1 and report["by_status"] == {
        "completed": 1}


def test_busy_no_answer_and_machines_are_retried_then_given_up(server, standin):
    rt = server.rt
    book_by_phone(server)
    [cid] = rt.callbacks.active_ids()
    rt.agents.set_status("bob", "available")
    now = datetime.now(UTC).timestamp()
    assert dispatch_queue(rt, "billing", now=now) == [cid]
    first = standin.wait_for_calls(1)[-1]
    standin.busy(first)
    record = rt.callbacks.get(cid)
    assert record["status"] == "pending" and record["result"] == "busy"
    assert record["not_before"] == pytest.approx(now + 60, abs=5)  # retry_after: 60 in the flow
    scheduled = ScheduledJobRegistry(queue=Queue(QUEUE, connection=rt.redis))
    assert any(abs(scheduled.get_scheduled_time(j).timestamp() - record["not_before"]) < 1
               for j in scheduled.get_job_ids())  # rq's scheduler brings the retry back
    assert dispatch_queue(rt, "billing", now=now + 10) == []  # not before its time
    assert dispatch_queue(rt, "billing", now=record["not_before"]) == [cid]
    second = standin.wait_for_calls(2)[-1]
    assert second.url.endswith("&a=2")
    played = standin.machine(second)
    assert played.documents[0].find("Hangup") is not None and played.text == ""  # no message left
    record = rt.callbacks.get(cid)
    assert record["result"] == "machine" and record["status"] == "pending"
    assert dispatch_queue(rt, "billing", now=record["not_before"]) == [cid]
    standin.no_answer(standin.wait_for_calls(3)[-1])
    record = rt.callbacks.get(cid)
    assert record["status"] == "failed"
    assert record["closed_reason"] == "no contact after 3 attempts (last: no-answer)"
    assert rt.agents.get("bob")["status"] == "available"
    # a late, repeated status callback for an old attempt changes nothing
    standin.busy(first)
    assert rt.callbacks.get(cid)["status"] == "failed"


def test_agent_who_does_not_answer_is_taken_off_and_the_caller_called_again(server, standin):
    rt = server.rt
    book_by_phone(server)
    [cid] = rt.callbacks.active_ids()
    rt.agents.set_status("alice", "available")
    dispatch_queue(rt, "billing")
    played = standin.answer(standin.wait_for_calls(1)[0], agent_answers=False)
    assert "couldn't take the call just now" in played.text
    record = rt.callbacks.get(cid)
    assert record["status"] == "pending" and record["result"] == "agent-no-answer"
    assert rt.agents.get("alice")["state"] == "away"  # not offered anyone until they say so


def test_a_caller_who_phones_again_can_cancel_the_pending_callback(server):
    rt = server.rt
    book_by_phone(server)
    [cid] = rt.callbacks.active_ids()
    again = Phone(server.url, "CA2", ADA)
    root = again.post("/voice")
    assert "You already asked us to call you back about billing" in said(root)
    root = again.post("/voice/gather?s=1", Digits="2")
    assert said(root).startswith("Your callback is cancelled.")
    record = rt.callbacks.get(cid)
    assert record["status"] == "cancelled" and record["closed_reason"] == "cancelled by the caller"
    assert line.entries(rt.redis, "billing") == []
    assert rt.callbacks.pending_for("+14155550100") is None


def test_live_callers_hold_their_place_until_they_leave(server):
    rt = server.rt
    phone = Phone(server.url, "CA7", {"From": "+12025550199", "To": "+15005550006"})
    phone.post("/voice")
    phone.post("/voice/gather?s=1", Digits="3")
    assert [m for m, _ in line.entries(rt.redis, "technical")] == ["call:CA7"]
    phone.post("/voice/queue/left?s=2", QueueResult="bridged", QueueTime=40)
    assert line.entries(rt.redis, "technical") == []
    phone = Phone(server.url, "CA8", {"From": "+12025550199", "To": "+15005550006"})
    phone.post("/voice")
    phone.post("/voice/gather?s=1", Digits="3")
    phone.post("/voice/status", CallStatus="completed", CallDuration=30)  # hung up while waiting
    assert line.entries(rt.redis, "technical") == []
    queues = {q["queue"]: q for q in api(server, "GET", "/api/queues").json()}
    assert queues["billing"]["agents_staffed"] == 0 and queues["billing"]["estimated_wait_s"] is None


def test_each_wait_cycle_sees_the_agents_as_they_are_now(server):
    """A hold-music cycle's estimate is read when the webhook takes the call's lock (with the
    reads the previous step stored), so an agent who just became free counts at once."""
    rt = server.rt
    phone = Phone(server.url, "CA9", ADA)
    phone.post("/voice")
    phone.post("/voice/gather?s=1", Digits="1")
    wait = phone.post("/voice/queue/wait?s=2", QueuePosition=1, QueueTime=5, AvgQueueTime=60,
                      CurrentQueueSize=1)
    assert wait.find("Gather") is not None  # nobody free: the callback offer
    rt.agents.set_status("alice", "available")
    wait = phone.post("/voice/queue/wait?s=2", QueuePosition=1, QueueTime=35, AvgQueueTime=60,
                      CurrentQueueSize=1)
    assert wait.find("Gather") is None and wait.find("Play") is not None  # next in line: no offer
    rt.agents.set_status("alice", "busy")
    wait = phone.post("/voice/queue/wait?s=2", QueuePosition=1, QueueTime=65, AvgQueueTime=60,
                      CurrentQueueSize=1)
    assert wait.find("Gather") is not None  # busy again: offered again
    phone.post("/voice/status", CallStatus="completed", CallDuration=70)
    assert line.entries(rt.redis, "billing") == []


def test_a_broken_estimate_read_costs_the_estimate_not_the_call(server):
    rt = server.rt
    phone = Phone(server.url, "CA10", ADA)
    phone.post("/voice")
    phone.post("/voice/gather?s=1", Digits="1")
    rt.redis.set("ivr:stats:billing", "not a hash")  # the stored reads' HMGET now fails
    wait = phone.post("/voice/queue/wait?s=2", QueuePosition=1, QueueTime=5, AvgQueueTime=60,
                      CurrentQueueSize=1)
    assert wait.find(".//Play") is not None and "Sorry" not in said(wait)  # still holding
    rt.redis.delete("ivr:stats:billing")
    phone.post("/voice/status", CallStatus="completed", CallDuration=10)


def test_agents_from_the_command_line(server, tmp_path):
    assert "alice is available" in ivr(server, "agents", "status", "alice", "available")
    listed = json.loads(ivr(server, "agents", "list", "--json"))
    assert {a["name"]: a["status"] for a in listed}["alice"] == "available"
    assert all({"name", "status", "queues", "contact"} <= set(a) for a in listed)
    bad = subprocess.run([sys.executable, "-m", "ivr.cli", "agents", "status", "alcie", "busy"],
                         env=env(server.cfg), capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1 and "did you mean 'alice'" in bad.stderr
    (tmp_path / "broken.yaml").write_text("agents:\n  eve:\n    queues: [billing]\n    contact: 12\n")
    checked = subprocess.run([sys.executable, "-m", "ivr.cli", "agents", "check",
                              str(tmp_path / "broken.yaml")], env=env(server.cfg),
                             capture_output=True, text=True, cwd=tmp_path)
    assert checked.returncode == 1
    assert "broken.yaml:4:14: error: contact 12 of agent 'eve' is not a phone number" in checked.stdout


def test_callback_webhooks_need_twilios_signature(server):
    for path in ("/voice/callback?cb=CB1&a=1", "/voice/callback/status?cb=CB1&a=1", "/voice/queue/offer?s=1"):
        assert requests.post(server.url + path, data={"CallSid": "CA1"}, timeout=5).status_code == 403
    stale = Phone(server.url, "CA99", ADA).post("/voice/callback?cb=CBnope&a=1", AnsweredBy="human")
    assert stale.find("Hangup") is not None and said(stale) == ""
    assert redis.Redis.from_url(server.cfg.redis_url).exists("ivr:call:CA99") == 0
    assert TOKEN  # (the stand-in and the server share the account's auth token)


def test_the_agent_hears_the_reason_the_caller_recorded(server, standin):
    rt = server.rt
    phone = Phone(server.url, "CA5", ADA)
    phone.post("/voice")
    phone.post("/voice/gather?s=1", Digits="3")  # technical support asks for a reason
    phone.post("/voice/queue/wait?s=2", QueuePosition=1, QueueTime=5)
    phone.post("/voice/queue/offer?s=2", SpeechResult="call me back")
    phone.post("/voice/queue/left?s=2", QueueResult="leave", QueueTime=9)
    question = phone.post("/voice/gather?s=3", Digits="1")
    assert question.find("Record").get("action") == "/voice/record?s=4"
    url = "https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE1"
    booked = phone.post("/voice/record?s=4", RecordingUrl=url, RecordingDuration=6)
    assert "We'll call you back at 4 1 5, 5 5 5, 0 1 0 0" in said(booked)
    [cid] = rt.callbacks.active_ids()
    record = rt.callbacks.get(cid)
    assert record["reason_url"] == url and record["queue"] == "technical"
    # the recording went to the speech job's queue; its transcript lands in SQL, as the job does
    assert Queue("recordings", connection=rt.redis).count == 1
    svc = server.app.extensions["ivr"]
    svc.migrate()
    svc.recorder().flush()
    svc.store.update_recording("CA5", record["reason_seq"], url, transcript="my router blinks red")
    rt.agents.set_status("tess", "available")
    dispatch_queue(rt, "technical")
    assert rt.callbacks.get(cid)["reason_text"] == "my router blinks red"
    played = standin.answer(standin.wait_for_calls(1)[0])
    assert played.documents[0].find("Dial/Sip").text == "sip:tess@pbx.example.test"
    assert played.whisper.endswith("They said: my router blinks red")
