"""Agents' states against a real Redis: the transitions calls drive, the ones set by hand, the
events published, the records the reports are made from, and races between processes."""

from __future__ import annotations

import json
import threading

import pytest
import redis

from callbacks import agent_state as S
from callbacks import keys
from callbacks.agents import AgentsError, parse_file
from callbacks.dispatch import attempt_over, dispatch_queue
from callbacks.runtime import Runtime
from tests.cbutil import config

T = 1_800_000_000.0


@pytest.fixture
def r(cb_redis_url):
    return redis.Redis.from_url(cb_redis_url)


def records(r) -> list[dict]:
    out = []
    for _, fields in r.xrange(keys.LOG_STREAM):
        rec = json.loads(fields[b"r"])
        if rec["type"] == "agent_state":
            out.append(rec)
    return out


def test_an_agent_goes_through_a_call_and_its_wrap_up(r):
    assert S.state(r, "alice")["state"] == "offline"  # never seen
    S.set_status(r, "alice", "available", by="alice", now=T)
    assert S.reserve(r, "alice", "CA1", "billing", now=T + 10)
    assert not S.reserve(r, "alice", "CA2", "billing", now=T + 10)  # one caller at a time
    ringing = S.state(r, "alice", now=T + 11)
    assert (ringing["state"], ringing["call_sid"], ringing["queue"]) == ("ringing", "CA1", "billing")
    assert not S.answered(r, "alice", "CA2", now=T + 12)  # another call's event changes nothing
    assert S.answered(r, "alice", "CA1", now=T + 12)
    assert S.ended(r, "alice", "CA1", wrap_s=30, now=T + 100) == "wrap_up"
    wrap = S.state(r, "alice", now=T + 110)
    assert (wrap["state"], wrap["call_sid"], wrap["wrap_until"]) == ("wrap_up", "CA1", T + 130)
    assert not S.reserve(r, "alice", "CA3", "billing", now=T + 129)  # still writing notes
    # The wrap-up ends by itself: read as available from its end, before anyone writes it down.
    after = S.state(r, "alice", now=T + 131)
    assert (after["state"], after["since"], after["idle_since"]) == ("available", T + 130, T + 130)
    assert S.reserve(r, "alice", "CA3", "billing", now=T + 140)
    moves = [(x["from"], x["to"], x["at"], x["call_sid"]) for x in records(r)]
    assert moves == [("offline", "available", T, ""), ("available", "ringing", T + 10, "CA1"),
                     ("ringing", "on_call", T + 12, "CA1"), ("on_call", "wrap_up", T + 100, "CA1"),
                     ("wrap_up", "available", T + 130, "CA1"), ("available", "ringing", T + 140, "CA3")]
    assert [x["seq"] for x in records(r)] == [1, 2, 3, 4, 5, 6]


def test_a_missed_call_makes_the_agent_away_and_busy_still_means_away(r):
    S.set_status(r, "bob", "available", now=T)
    assert S.reserve(r, "bob", "CA1", "billing", now=T + 1)
    assert S.missed(r, "bob", "CA1", "no-answer", now=T + 21)
    assert S.state(r, "bob", now=T + 22)["state"] == "away"
    assert S.set_status(r, "bob", "busy", now=T + 30)["state"] == "away"
    with pytest.raises(ValueError, match="on_call"):
        S.set_status(r, "bob", "on_call")


def test_a_status_set_during_a_call_takes_effect_when_it_ends(r):
    S.set_status(r, "carol", "available", now=T)
    S.reserve(r, "carol", "CA1", "billing", now=T + 1)
    S.answered(r, "carol", "CA1", now=T + 2)
    during = S.set_status(r, "carol", "offline", by="supervisor", now=T + 3)
    assert (during["state"], during["after"]) == ("on_call", "offline")
    assert S.ended(r, "carol", "CA1", wrap_s=30, now=T + 50) == "offline"
    assert S.state(r, "carol", now=T + 51)["state"] == "offline"


def test_end_wrap_records_the_end_at_its_own_time_once(r):
    S.set_status(r, "dan", "available", now=T)
    S.reserve(r, "dan", "CA1", "billing", now=T + 1)
    S.answered(r, "dan", "CA1", now=T + 2)
    S.ended(r, "dan", "CA1", wrap_s=10, now=T + 20)
    assert not S.end_wrap(r, "dan", now=T + 25)
    assert S.end_wrap(r, "dan", now=T + 40)
    assert not S.end_wrap(r, "dan", now=T + 41)
    last = records(r)[-1]
    assert (last["from"], last["to"], last["at"]) == ("wrap_up", "available", T + 30)
    assert len(records(r)) == 5


def test_every_change_is_published(r):
    sub = r.pubsub()
    sub.subscribe(S.CHANNEL)
    assert sub.get_message(timeout=2)["type"] == "subscribe"
    S.set_status(r, "erin", "available", now=T)
    S.reserve(r, "erin", "CA9", "technical", now=T + 1)
    got = [S.event(sub.get_message(timeout=2)) for _ in range(2)]
    assert got == [{"agent": "erin", "state": "available", "since": T, "call_sid": "", "queue": ""},
                   {"agent": "erin", "state": "ringing", "since": T + 1, "call_sid": "CA9",
                    "queue": "technical"}]
    sub.close()
    assert set(S.all_states(r)) == {"erin"}


def test_a_hash_written_before_states_followed_calls_still_reads(r):
    r.hset(keys.agent("old"), mapping={"status": "busy", "since": T, "reserved_for": ""})
    assert S.state(r, "old")["state"] == "away"
    r.hset(keys.agent("old2"), mapping={"status": "available", "since": T, "reserved_for": ""})
    assert S.reserve(r, "old2", "CA1", "billing", now=T + 1)


def test_racing_processes_never_give_an_agent_two_callers(cb_redis_url):
    names = [f"a{i}" for i in range(5)]
    first = redis.Redis.from_url(cb_redis_url)
    for n in names:
        S.set_status(first, n, "available")
    won: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        r = redis.Redis.from_url(cb_redis_url)
        for c in range(20):
            sid = f"CA{w}-{c}"
            for n in names:
                if S.reserve(r, n, sid, "billing"):
                    with lock:
                        won.append((n, sid))
                    break

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(n for n, _ in won) == names  # each agent reserved exactly once
    assert {S.state(first, n)["call_sid"] for n in names} == {sid for _, sid in won}


AGENTS_FILE = """queues:
  billing: {wrap_up: 20, ring_timeout: 15}
agents:
  alice:
    queues: [billing]
    contact: "+15005550021"
  bob:
    queues: [billing]
    priority: {billing: 2}
    contact: "+15005550022"
"""


def test_the_agents_file_gives_wrap_up_ring_timeout_and_priority():
    agents, queues = parse_file(AGENTS_FILE, "agents.yaml")
    assert (queues["billing"].wrap_up, queues["billing"].ring_timeout) == (20, 15)
    assert agents["bob"].priority_in("billing") == 2 and agents["alice"].priority_in("billing") == 0
    with pytest.raises(AgentsError) as bad:
        parse_file(AGENTS_FILE.replace("wrap_up: 20", "wrapup: 20").replace("{billing: 2}", "{biling: 2}"),
                   "agents.yaml")
    text = str(bad.value)
    assert "agents.yaml:2" in text and "wrap_up" in text and "biling" in text and "billing" in text


def test_a_specialist_comes_first_then_the_longest_idle(tmp_path, cb_redis_url, cb_flows, standin):
    (cb_flows / "agents.yaml").write_text(AGENTS_FILE.replace("{billing: 2}", "{billing: 0}")
                                          + "  carol:\n    queues: [billing]\n    priority: {billing: 5}\n"
                                          "    contact: '+15005550023'\n")
    rt = Runtime(config(tmp_path, cb_redis_url, cb_flows, standin, agents_file=cb_flows / "agents.yaml"),
                 redis.Redis.from_url(cb_redis_url))
    for i, name in enumerate(["bob", "alice", "carol"]):
        rt.agents.set_status(name, "available", now=T + i)
    assert [a.name for a in rt.agents.available_for("billing", now=T + 10)] == ["carol", "bob", "alice"]


def test_a_callback_agent_is_ringing_then_on_call_then_in_wrap_up(tmp_path, cb_redis_url, cb_flows, standin):
    (cb_flows / "agents.yaml").write_text(AGENTS_FILE)
    rt = Runtime(config(tmp_path, cb_redis_url, cb_flows, standin, public_url="http://127.0.0.1:9",
                        agents_file=cb_flows / "agents.yaml"), redis.Redis.from_url(cb_redis_url))
    rt.agents.set_status("alice", "available")
    cid, _ = rt.callbacks.request(call_sid="CAorig", number="+15005550100", queue="billing",
                                  enqueued_at=T, max_attempts=3, retry_after=300, zones=["UTC"],
                                  calling_hours={"mon-sun": "24h"}, line_number="+15005550006")
    assert dispatch_queue(rt, "billing") == [cid]
    alice = rt.agents.get("alice")
    assert (alice["state"], alice["call"]["callback"]) == ("ringing", cid)
    assert alice["call"]["call_sid"] == "CAorig"  # the call that booked it: its words, its path
    record = rt.callbacks.get(cid)
    rt.callbacks.progress(cid, 1, sid="CAleg", answered_by="human", human=True)
    assert rt.callbacks.connected(cid, 1)
    assert rt.agents.get("alice")["state"] == "on_call"
    attempt_over(rt, rt.callbacks.get(cid) or record, 1, "completed")
    alice = rt.agents.get("alice")
    assert alice["state"] == "wrap_up" and alice["wrap_until"]
