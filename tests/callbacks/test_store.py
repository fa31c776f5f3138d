"""Callback records, the line and the agents against a real Redis (database 4), and their SQL
log in SQLite and the real PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest
import redis
import sqlalchemy as sa

from callbacks import agent_state, keys, line
from callbacks.agents import Agents, Roster, UnknownAgent
from callbacks.dispatch import attempt_over, dispatch_queue, sweep_once
from callbacks.estimate import for_caller, handle_time
from callbacks.runtime import Runtime
from callbacks.store import CallbackError, Callbacks, public
from ivr.calllog.recorder import Recorder
from ivr.engine import actions as A
from ivr.engine import events as E
from tests.calllog.test_store import PG_URL, pg_schema_url
from tests.cbutil import AGENTS, config

T = datetime(2026, 11, 17, 20, 53, 20, tzinfo=UTC).timestamp()  # a fixed "now": exact time rules


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """The SQL log: a SQLite file, or a fresh schema in the real PostgreSQL."""
    import uuid

    import sqlalchemy as sa

    from ivr.calllog.store import Store

    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path}/log.db")
        s.migrate()
        yield s
        s.close()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    s = Store(pg_schema_url(schema))
    try:
        s.migrate()
        yield s
    finally:
        s.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def r(cb_redis_url):
    return redis.Redis.from_url(cb_redis_url)


@pytest.fixture
def rt(tmp_path, cb_redis_url, cb_flows, standin):
    return Runtime(config(tmp_path, cb_redis_url, cb_flows, standin, public_url="http://127.0.0.1:9"),
                   redis.Redis.from_url(cb_redis_url))


def book(cbs: Callbacks, sid: str, number: str, enqueued_at: float, queue: str = "billing",
         now: float = T, **kw):
    kw.setdefault("max_attempts", 3)
    kw.setdefault("retry_after", 300)
    kw.setdefault("zones", ["UTC"])
    kw.setdefault("calling_hours", {"mon-sun": "24h"})
    kw.setdefault("line_number", "+15005550006")
    return cbs.request(call_sid=sid, number=number, queue=queue, enqueued_at=enqueued_at, now=now, **kw)


def test_a_callback_keeps_the_callers_place_among_live_callers_and_callbacks(r):
    cbs = Callbacks(r)
    line.join(r, "billing", "call:CA1", T - 300)  # joined first, still holding
    line.join(r, "billing", "call:CA2", T - 200)  # asks for a callback below
    line.join(r, "billing", "call:CA3", T - 100)
    line.join(r, "billing", "call:CA3", T - 10)  # joining again does not lose the first place
    cid, created = book(cbs, "CA2", "+14155550102", T - 200)
    assert created
    later, _ = book(cbs, "CA4", "+14155550104", T - 50)  # a callback booked by a later caller
    assert [m for m, _ in line.entries(r, "billing")] == ["call:CA1", f"cb:{cid}", "call:CA3", f"cb:{later}"]
    assert line.position(r, "billing", f"cb:{later}") == 4


def test_booking_is_idempotent_per_call_and_per_number(r):
    cbs = Callbacks(r)
    first, created = book(cbs, "CA1", "+14155550100", T - 60)
    again, created_again = book(cbs, "CA1", "+14155550100", T - 60)
    assert created and not created_again and again == first
    # the same number books again from another call: it keeps the earlier callback and place
    same, created_same = book(cbs, "CA9", "+14155550100", T - 5)
    assert same == first and not created_same
    assert cbs.pending_for("+14155550100")["id"] == first
    assert len(cbs.list()) == 1
    listed = public(cbs.get(first))
    assert listed["number"] == "+14155550100" and listed["status"] == "pending"
    assert listed["enqueued_at"] == datetime.fromtimestamp(T - 60, UTC).isoformat(timespec="seconds")
    assert listed["requested_at"] == datetime.fromtimestamp(T, UTC).isoformat(timespec="seconds")


def test_two_claims_never_win_the_same_callback(r, tmp_path, cb_redis_url):
    agents_file = tmp_path / "agents.yaml"
    agents_file.write_text(AGENTS)
    agents = Agents(r, Roster(agents_file))
    for name in ("alice", "bob"):
        agents.set_status(name, "available")
    cbs = Callbacks(r)
    cid, _ = book(cbs, "CA1", "+14155550100", T)
    results: list = []
    barrier = threading.Barrier(8)

    def claim(agent):
        mine = Callbacks(redis.Redis.from_url(cb_redis_url))  # a connection of its own
        barrier.wait()
        results.append(mine.claim(cid, agent, now=T))

    threads = [threading.Thread(target=claim, args=(["alice", "bob"][i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [x for x in results if x[0]]
    assert len(winners) == 1 and winners[0][1] == 1
    record = cbs.get(cid)
    assert record["status"] == "dialing" and record["attempts"] == 1
    loser = "bob" if record["agent"] == "alice" else "alice"
    assert agents.get(record["agent"])["reserved_for"] == cid
    assert agents.get(loser)["status"] == "available"  # the loser's agent was never taken
    assert line.position(r, "billing", f"cb:{cid}") is None  # being served: out of the line


def test_attempts_retry_in_the_window_then_fail_with_a_reason(rt):
    cbs, agents = rt.callbacks, rt.agents
    agents.set_status("alice", "available")
    cid, _ = book(cbs, "CA1", "+14155550100", T - 100, max_attempts=2, retry_after=600,
                  calling_hours={"mon-sun": "08:00-21:00"}, zones=["Europe/London"],
                  expire_after=24 * 3600)
    late, _ = book(cbs, "CA2", "+14155550102", T - 90, zones=["Europe/London"], retry_after=600,
                   calling_hours={"mon-sun": "08:00-21:00"})  # expires at 00:53, before 08:00
    ok, attempt = cbs.claim(cid, "alice", now=T)
    assert ok and attempt == 1
    assert cbs.progress(cid, 1, sid="CA100", now=T + 1) == "dialing"
    assert cbs.progress(cid, 2, sid="CAOLD", now=T + 1) is None  # another attempt's webhook
    # 2026-11-17 20:53 London: a retry 10 minutes later would be after 21:00, so next morning
    status = attempt_over(rt, cbs.get(cid), 1, "busy", now=T + 5)
    record = cbs.get(cid)
    assert status == "pending" and record["result"] == "busy" and record["attempts"] == 1
    assert datetime.fromtimestamp(record["not_before"], UTC) == datetime(2026, 11, 18, 8, 0, tzinfo=UTC)
    assert agents.get("alice")["status"] == "available"  # freed for the next caller
    assert line.position(rt.redis, "billing", f"cb:{cid}") == 1  # back at its old place
    assert attempt_over(rt, cbs.get(cid), 1, "busy", now=T + 6) is None  # a repeated status
    agents.set_status("bob", "available")
    cbs.claim(late, "bob", now=T)
    assert attempt_over(rt, cbs.get(late), 1, "no-answer", now=T + 5) == "expired"
    assert cbs.get(late)["closed_reason"] == ("no time left in the calling window before it expires "
                                              "(last: no-answer)")
    assert not cbs.claim(cid, "alice", now=T + 60)[0]  # not due yet
    ok, attempt = cbs.claim(cid, "alice", now=record["not_before"])
    assert ok and attempt == 2
    assert attempt_over(rt, cbs.get(cid), 2, "no-answer", now=record["not_before"] + 30) == "failed"
    record = cbs.get(cid)
    assert record["closed_reason"] == "no contact after 2 attempts (last: no-answer)"
    assert cbs.pending_for("+14155550100") is None and cid not in cbs.active_ids()
    statuses = [h["status"] for h in cbs.history(cid)]
    assert statuses == ["pending", "dialing", "dialing", "pending", "dialing", "failed"]
    assert 0 < rt.redis.ttl(keys.callback(cid)) <= 7 * 86400  # finished: kept a week in Redis


def test_a_cancel_while_the_callback_is_being_dialled_takes_effect_when_that_attempt_ends(rt):
    """The caller phones again and cancels just as a worker dials them (their line is busy:
    they are on the phone with us). They were told it is cancelled: it must not be retried."""
    from callbacks.web import after_step

    cbs = rt.callbacks
    rt.agents.set_status("alice", "available")
    cid, _ = book(cbs, "CA1", "+14155550100", T - 100)
    assert cbs.claim(cid, "alice", now=T) == (True, 1)

    class Step:  # what the engine returned for "press 2 to cancel"
        actions = [A.CancelCallback(cid)]
        state = {}

    after_step(rt, "CA9", E.Digits("2"), {}, Step(), None)
    assert cbs.get(cid)["status"] == "dialing"  # too late to stop this attempt...
    assert attempt_over(rt, cbs.get(cid), 1, "busy", now=T + 5) == "cancelled"  # ...but no retry
    assert cbs.get(cid)["status"] == "cancelled" and cid not in cbs.active_ids()


def test_expiry_cancel_and_a_call_that_never_reached_twilio(rt):
    cbs = rt.callbacks
    rt.agents.set_status("alice", "available")
    a, _ = book(cbs, "CA1", "+14155550101", T, expire_after=600)
    b, _ = book(cbs, "CA2", "+14155550102", T)
    c, _ = book(cbs, "CA3", "+14155550103", T)
    assert not cbs.expire(a, now=T + 10)
    assert cbs.expire(a, now=T + 601)
    assert cbs.get(a)["closed_reason"] == "not reached before it expired (0 attempts)"
    assert cbs.cancel(b, by="the caller")["status"] == "cancelled"
    with pytest.raises(CallbackError, match="is cancelled, not pending"):
        cbs.cancel(b, by="the caller")
    ok, attempt = cbs.claim(c, "alice", now=T)
    with pytest.raises(CallbackError, match="is dialing"):
        cbs.cancel(c, by="a supervisor")
    assert cbs.requeue_lost(c, attempt, now=T + 70)  # the worker died before Twilio had it
    record = cbs.get(c)
    assert record["status"] == "pending" and record["attempts"] == 0  # not counted
    assert rt.agents.get("alice")["status"] == "available"
    # The next dial has a number of its own: a late check of the lost one (a sweep that read
    # the record before) cannot put this one back in line while it is being placed.
    ok, again = cbs.claim(c, "alice", now=T + 71)
    assert ok and again == attempt + 1 and cbs.get(c)["attempts"] == 1
    assert not cbs.requeue_lost(c, attempt, now=T + 72)
    assert cbs.get(c)["status"] == "dialing"
    with pytest.raises(UnknownAgent, match="did you mean 'alice'"):
        rt.agents.set_status("alcie", "busy")


def test_dispatch_serves_the_line_in_order_and_live_callers_hold_agents(rt, standin):
    cbs = rt.callbacks
    rt.redis.hset("ivr:call:CALIVE", "state", json.dumps({"line": {"queue": "billing", "since": "x"}}))
    line.join(rt.redis, "billing", "call:CALIVE", T - 500)  # a live caller first in line
    line.join(rt.redis, "billing", "call:CAGONE", T - 400)  # a caller whose call is over
    # a caller joining right now: the webhook holds the call's lock and has not saved yet
    rt.redis.set("ivr:call:CAJOINING:lock", "token", px=5000)
    line.join(rt.redis, "billing", "call:CAJOINING", T - 350)
    first, _ = book(cbs, "CA1", "+14155550101", T - 300)
    second, _ = book(cbs, "CA2", "+14155550102", T - 200)
    assert dispatch_queue(rt, "billing", now=T) == []  # nobody available
    rt.agents.set_status("alice", "available")
    # one agent, and a live caller ahead: the agent is theirs, no callback is dialled
    assert dispatch_queue(rt, "billing", now=T) == []
    assert line.position(rt.redis, "billing", "call:CAGONE") is None  # the dead caller is dropped
    assert line.position(rt.redis, "billing", "call:CAJOINING") == 2  # mid-webhook: kept
    rt.redis.delete("ivr:call:CAJOINING:lock")
    line.leave(rt.redis, "billing", "call:CAJOINING")  # (its call then ends)
    rt.agents.set_status("bob", "available")
    assert dispatch_queue(rt, "billing", now=T) == [first]  # the oldest callback, not the newer one
    placed = standin.wait_for_calls(1)[0]
    assert placed.to == "+14155550101" and placed.machine_detection == "Enable"
    assert placed.url == f"http://127.0.0.1:9/voice/callback?cb={first}&a=1"
    assert placed.from_ == "+15005550006"  # callers see the number they rang
    record = cbs.get(first)
    assert record["dial_sid"] == placed.sid and record["agent"] in ("alice", "bob")


def test_estimate_sees_callbacks_ahead_and_agents(rt):
    cbs = rt.callbacks
    for i in range(3):
        book(cbs, f"CA{i}", f"+1415555010{i}", T - 100 + i)
    line.join(rt.redis, "billing", "call:CAME", T)
    est = for_caller(rt.redis, rt.agents, "billing", "call:CAME", 300)
    assert est.position == 4 and est.agents_available == 0 and est.wait_s is None
    rt.agents.set_status("alice", "available")
    assert agent_state.reserve(rt.redis, "alice", "CAother", "billing")  # alice is on a call...
    rt.agents.set_status("bob", "available")
    est = for_caller(rt.redis, rt.agents, "billing", "call:CAME", 300)
    # 3 ahead, 1 free agent: 3 calls must finish first, at 2 agents per 300 s
    assert est.wait_s == pytest.approx(450) and est.agents_available == 1
    rt.agents.set_status("bob", "busy")  # ...and bob is away (busy is another word for it)
    assert for_caller(rt.redis, rt.agents, "billing", "call:CAME", 300).wait_s == pytest.approx(1200)
    # Twilio's own position is a lower bound for live callers the line may have missed
    assert for_caller(rt.redis, rt.agents, "billing", "call:CAME", 300, twilio_position=9).position == 9
    rt.redis.hset(keys.stats("billing"), mapping={"handle_time": 120, "samples": 40})
    assert handle_time(rt.redis, "billing", 300) == 120


def test_every_change_reaches_sql_in_order_whatever_order_it_arrives(rt, store, r):
    cbs = rt.callbacks
    rt.agents.set_status("alice", "available")
    cid, _ = book(cbs, "CA1", "+14155550100", T - 120, caller={"customer_id": "C-1001"})
    ok, attempt = cbs.claim(cid, "alice", now=T)
    cbs.progress(cid, attempt, sid="CA200", now=T + 2)
    cbs.progress(cid, attempt, sid="CA200", answered_by="human", human=True, now=T + 20)
    cbs.connected(cid, attempt, now=T + 30)
    attempt_over(rt, cbs.get(cid), attempt, "completed", now=T + 400)
    entries = r.xrange(keys.LOG_STREAM)
    everything = [json.loads(fields[b"r"]) for _, fields in entries]
    records = [x for x in everything if x["type"] == "callback"]
    assert [x["status"] for x in records] == ["pending", "dialing", "dialing", "answered", "connected",
                                              "completed"]
    store.record(list(reversed(records)))  # newest first: the newest version must still win
    store.record(records[:2])  # and a replay of old versions changes nothing
    row = store.callback(cid)
    assert row["status"] == "completed" and row["customer_id"] == "C-1001"
    assert row["wait_s"] == pytest.approx(30)  # from the request (T) to the agent connected (T + 30)
    assert row["enqueued_at"] == datetime.fromtimestamp(T - 120, UTC)
    assert row["callback_call_sid"] == "CA200" and row["attempts"] == 1
    [att] = store.callback_attempts(cid)
    assert att["result"] == "completed" and att["answered_by"] == "human" and att["call_sid"] == "CA200"
    # alice's day goes there too, for the per-agent reports
    store.record([x for x in everything if x["type"] == "agent_state"] * 2)  # a replay is stored once
    with store.engine.connect() as conn:
        moves = conn.execute(sa.text("SELECT from_state, to_state, callback_id FROM agent_states "
                                     "WHERE agent = 'alice' ORDER BY seq")).all()
    assert [tuple(m) for m in moves] == [("offline", "available", None), ("available", "ringing", cid),
                                         ("ringing", "on_call", cid), ("on_call", "available", cid)]
    # and through the real recorder, which drains the stream into SQL
    r.delete(keys.LOG_STREAM)
    cbs.note(cid, "reason_text", "router blinks red", now=T + 500)
    assert Recorder(r, store).flush() == 1
    assert store.callback(cid)["reason_text"] == "router blinks red"


def test_sweep_expires_and_redispatches(rt, standin):
    cbs = rt.callbacks
    old, _ = book(cbs, "CA1", "+14155550101", T - 50, expire_after=300)
    due, _ = book(cbs, "CA2", "+14155550102", T - 40)
    rt.agents.set_status("alice", "available")
    done = sweep_once(rt, now=T + 400)
    assert done["expired"] == 1 and done["dialled"] == 1
    assert cbs.get(old)["status"] == "expired" and cbs.get(due)["status"] == "dialing"
    assert [c.to for c in standin.wait_for_calls(1)] == ["+14155550102"]


def test_twilio_errors_are_retried_or_fail_the_callback_with_twilios_reason(rt, standin):
    cbs = rt.callbacks
    rt.agents.set_status("alice", "available")
    now = datetime.now(UTC).timestamp()  # the retry is planned from the real clock
    cid, _ = book(cbs, "CA1", "+14155550101", now - 30, now=now)
    standin.fail_with = 503  # Twilio's API is having a bad day: try again soon, uncounted
    assert dispatch_queue(rt, "billing", now=now) == [cid]
    record = cbs.get(cid)
    assert record["status"] == "pending" and record["result"] == "api-error" and record["attempts"] == 0
    assert record["not_before"] == pytest.approx(now + 30, abs=2)
    assert rt.agents.get("alice")["status"] == "available"
    standin.fail_with, standin.fail_code = 400, 21210  # our caller ID is not verified: our fault
    assert dispatch_queue(rt, "billing", now=record["not_before"]) == [cid]
    # the watchdog of each dial watches that dial's own number, however many were uncounted
    from rq.registry import ScheduledJobRegistry

    scheduled = ScheduledJobRegistry(queue=rt.queue())
    watched = {rt.queue().fetch_job(j).description for j in scheduled.get_job_ids()}
    assert {f"watchdog {cid}/1", f"watchdog {cid}/2"} <= watched
    record = cbs.get(cid)
    assert record["status"] == "pending" and record["result"] == "not-configured" and record["attempts"] == 0
    assert record["not_before"] == pytest.approx(datetime.now(UTC).timestamp() + 60, abs=5)
    standin.fail_with, standin.fail_code = 400, 21211  # the number itself cannot be called
    assert dispatch_queue(rt, "billing", now=record["not_before"]) == [cid]
    record = cbs.get(cid)
    assert record["status"] == "failed" and record["result"] == "refused-21211"
    assert record["closed_reason"].startswith("Twilio refused the call: HTTP 400, code 21211")
    assert standin.calls == []


def test_handling_times_come_from_the_call_log(rt, store):
    from callbacks.estimate import handling_times, refresh_stats

    now = datetime.now(UTC)
    t0 = now.timestamp() - 3600
    records = []
    for i in range(6):  # six billing calls bridged after 30 s in the queue, talking 100 + 10*i s
        sid, start = f"CAH{i}", t0 + i * 300
        records += [
            {"type": "call_started", "call_sid": sid, "flow": "support", "started_at": start},
            {"type": "step", "call_sid": sid, "seq": 1, "at": start, "node": "billing_queue",
             "kind": "queue", "event": "enter", "action": "enqueue:billing"},
            {"type": "step", "call_sid": sid, "seq": 2, "at": start + 130 + 10 * i, "node": "billing_queue",
             "kind": "queue", "event": "queue_left", "detail": {"result": "bridged", "queue_time": 30}},
        ]
    abandoned = {"type": "step", "call_sid": "CAX", "seq": 2, "at": t0, "node": "billing_queue",
                 "kind": "queue", "event": "queue_left", "detail": {"result": "hangup", "queue_time": 80}}
    store.record(records + [abandoned])
    times = handling_times(store, now)
    assert sorted(times["billing"]) == [100.0, 110.0, 120.0, 130.0, 140.0, 150.0]
    stats = refresh_stats(rt.redis, store, now)
    assert stats["billing"] == {"handle_time": 125.0, "samples": 6}
    assert handle_time(rt.redis, "billing", 300) == 125.0
    assert handle_time(rt.redis, "technical", 300) == 300  # no calls yet: the default
