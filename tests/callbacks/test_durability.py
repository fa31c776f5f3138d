"""Never lost, never twice: real `ivr worker` processes killed with SIGKILL in the middle of a
dial, several workers racing for the same callbacks, and a Redis server killed and started
again from its append-only file."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime

import redis
from rq import Queue, Worker

from callbacks import line
from callbacks.dispatch import attempt_over, dispatch, request_dispatch
from callbacks.runtime import QUEUE, Runtime
from tests.cbutil import RedisServer, config, kill_tree, run_worker, wait_until, worker

AGENT_COUNT = 12


def runtime(tmp_path, redis_url, flows, standin) -> Runtime:
    cfg = config(tmp_path, redis_url, flows, standin, public_url="http://127.0.0.1:9")
    return Runtime(cfg, redis.Redis.from_url(redis_url))


def book(rt: Runtime, n: int, queue: str = "billing", start: int = 0) -> list[str]:
    ids = []
    now = time.time()
    for i in range(start, start + n):
        cid, _ = rt.callbacks.request(
            call_sid=f"CA{i:04d}", number=f"+1415555{i:04d}", queue=queue, enqueued_at=now - 600 + i,
            line_number="+15005550006", zones=["UTC"], calling_hours={"mon-sun": "24h"},
            max_attempts=3, retry_after=60)
        ids.append(cid)
    return ids


def test_worker_killed_after_twilio_took_the_call_never_dials_twice(tmp_path, cb_redis_url, cb_flows,
                                                                   standin):
    rt = runtime(tmp_path, cb_redis_url, cb_flows, standin)
    [cid] = book(rt, 1)
    rt.agents.set_status("alice", "available")
    request_dispatch(rt.redis, ["billing"])
    standin.hold = threading.Event()
    first = worker(rt.config, tmp_path)
    assert standin.held.wait(30), "the worker never asked Twilio for the call"
    kill_tree(first)  # kill -9 while Twilio's answer is on its way
    standin.hold.set()  # Twilio created the call, but the worker never heard of it
    [placed] = standin.wait_for_calls(1)
    record = rt.callbacks.get(cid)
    assert record["status"] == "dialing" and not record.get("dial_sid")
    time.sleep(max(0.0, record["claimed_at"] + rt.config.callback_dial_grace + 0.2 - time.time()))
    run_worker(rt.config, tmp_path)  # its scheduler starts the watchdog: it asks Twilio
    record = rt.callbacks.get(cid)
    assert record["dial_sid"] == placed.sid and record["status"] == "dialing"
    assert len(standin.calls) == 1  # never twice
    assert any(r.method == "GET" and "To=%2B14155550000" in r.path for r in standin.requests)
    notes = [h["note"] for h in rt.callbacks.history(cid)]
    assert notes[-1] == f"call {placed.sid}" and "the call was never placed; back in line" not in notes


def test_worker_killed_before_twilio_had_the_call_dials_once_later(tmp_path, cb_redis_url, cb_flows,
                                                                  standin):
    rt = runtime(tmp_path, cb_redis_url, cb_flows, standin)
    [cid] = book(rt, 1)
    rt.agents.set_status("alice", "available")
    request_dispatch(rt.redis, ["billing"])
    standin.hold = threading.Event()
    standin.drop_held = True  # the request dies with the worker: Twilio never sees it
    first = worker(rt.config, tmp_path)
    assert standin.held.wait(30)
    kill_tree(first)
    standin.hold.set()
    standin.hold = None
    record = rt.callbacks.get(cid)
    assert record["status"] == "dialing" and standin.calls == []
    time.sleep(max(0.0, record["claimed_at"] + rt.config.callback_dial_grace + 0.2 - time.time()))
    run_worker(rt.config, tmp_path)  # watchdog: nothing at Twilio, back in line, dialled again
    [placed] = standin.wait_for_calls(1)
    record = rt.callbacks.get(cid)
    assert record["dial_sid"] == placed.sid and record["attempts"] == 1  # the lost try is not counted
    notes = [h["note"] for h in rt.callbacks.history(cid)]
    assert "the call was never placed; back in line" in notes


def test_a_restarted_worker_takes_over_the_scheduler_of_one_killed_mid_dial(tmp_path, cb_redis_url,
                                                                           cb_flows, standin):
    """kill -9 of a running `ivr worker` (its scheduler with it) leaves rq's scheduler lock for
    61 s. The restarted worker cannot take it at start; it must try again soon after, or no
    watchdog, retry or sweep runs: rq's own default was every 10 minutes."""
    rt = runtime(tmp_path, cb_redis_url, cb_flows, standin)
    [cid] = book(rt, 1)
    rt.agents.set_status("alice", "available")
    request_dispatch(rt.redis, ["billing"])
    standin.hold = threading.Event()
    lock = "rq:scheduler-lock:callbacks"
    first = worker(rt.config, tmp_path, burst=False)
    second = None
    try:
        assert standin.held.wait(30), "the worker never asked Twilio for the call"
        dead_scheduler = wait_until(lambda: rt.redis.get(lock))
        kill_tree(first)  # kill -9 while Twilio's answer is on its way
        standin.hold.set()
        [placed] = standin.wait_for_calls(1)
        assert rt.callbacks.get(cid)["status"] == "dialing" and not rt.callbacks.get(cid).get("dial_sid")
        second = worker(rt.config, tmp_path, burst=False)
        # Idle means rq is past its start, where it tried the lock and found the dead one's.
        wait_until(lambda: any(w.get_state() == "idle" for w in Worker.all(connection=rt.redis)
                               if w.pid == second.pid), timeout=60)
        assert rt.redis.get(lock) == dead_scheduler
        rt.redis.pexpire(lock, 100)  # as if the crash were a minute ago: the lock runs out now
        # The new worker's scheduler runs the watchdog, which finds the call Twilio placed.
        wait_until(lambda: rt.callbacks.get(cid).get("dial_sid"), timeout=40)
        record = rt.callbacks.get(cid)
        assert record["dial_sid"] == placed.sid and record["status"] == "dialing"
        assert rt.redis.get(lock) not in (None, dead_scheduler)
        assert len(standin.calls) == 1
    finally:
        kill_tree(first)
        if second is not None:
            kill_tree(second)


def test_workers_racing_for_the_same_callbacks_dial_each_once(tmp_path, cb_redis_url, cb_flows, standin):
    agents = "agents:\n" + "".join(
        f"  a{i}:\n    queues: [billing]\n    contact: \"+1500555{i:04d}\"\n" for i in range(AGENT_COUNT))
    (cb_flows / "agents.yaml").write_text(agents)
    rt = runtime(tmp_path, cb_redis_url, cb_flows, standin)
    ids = book(rt, 30)
    for i in range(AGENT_COUNT):
        rt.agents.set_status(f"a{i}", "available")
    q = Queue(QUEUE, connection=rt.redis)
    for _ in range(12):  # many dispatch jobs at once, as from many agents and webhooks
        q.enqueue(dispatch, "billing", result_ttl=0)
    workers = [worker(rt.config, tmp_path, burst=False) for _ in range(3)]
    try:
        calls = standin.wait_for_calls(AGENT_COUNT, timeout=30)
        time.sleep(1.0)  # anything a racing worker would wrongly add arrives now
        assert len(standin.calls) == AGENT_COUNT  # one per free agent, never more
        numbers = Counter(c.to for c in calls)
        assert max(numbers.values()) == 1
        dialled = [cid for cid in ids if rt.callbacks.get(cid)["status"] == "dialing"]
        assert len(dialled) == AGENT_COUNT
        # the oldest callbacks first: the line's order
        assert dialled == ids[:AGENT_COUNT]
        assert {rt.agents.get(f"a{i}")["reserved_for"] for i in range(AGENT_COUNT)} == set(dialled)
    finally:
        for w in workers:
            kill_tree(w)


def test_callbacks_survive_a_redis_restart_and_are_dialled_after_it(tmp_path, cb_flows, standin):
    server = RedisServer(tmp_path / "redis").start()
    try:
        rt = runtime(tmp_path, server.url, cb_flows, standin)
        waiting = book(rt, 3)
        retry = book(rt, 1, start=10)[0]
        line.join(rt.redis, "billing", "call:CALIVE", time.time() - 5000)  # an old live entry
        rt.agents.set_status("bob", "available")
        rt.callbacks.claim(retry, "bob")
        # no answer: the next attempt is scheduled with rq, 2 seconds from now
        attempt_over(rt, rt.callbacks.get(retry), 1, "no-answer", retry_after=2)
        due = rt.callbacks.get(retry)["not_before"]
        before = {cid: rt.callbacks.get(cid) for cid in waiting + [retry]}
        order = line.entries(rt.redis, "billing")
        assert [m for m, _ in order] == ["call:CALIVE"] + [f"cb:{c}" for c in waiting + [retry]]
        scheduled = rt.redis.zrange("rq:scheduled:callbacks", 0, -1, withscores=True)
        server.kill()  # kill -9: only the append-only file survives
        server.start()
        rt = runtime(tmp_path, server.url, cb_flows, standin)
        assert {cid: rt.callbacks.get(cid) for cid in before} == before
        assert line.entries(rt.redis, "billing") == order
        assert rt.redis.zrange("rq:scheduled:callbacks", 0, -1, withscores=True) == scheduled
        assert rt.agents.get("bob")["status"] == "available"
        rt.agents.set_status("alice", "available")
        time.sleep(max(0.0, due + 0.2 - time.time()))
        run_worker(rt.config, tmp_path)
        # two free agents: the two oldest callbacks; the caller whose call is gone is dropped, and
        # the retry, due now, waits behind the third
        assert sorted(c.to for c in standin.calls) == ["+14155550000", "+14155550001"]
        assert [rt.callbacks.get(c)["status"] for c in waiting + [retry]] == [
            "dialing", "dialing", "pending", "pending"]
        assert [m for m, _ in line.entries(rt.redis, "billing")] == [f"cb:{waiting[2]}", f"cb:{retry}"]
        assert datetime.fromtimestamp(due, UTC) < datetime.now(UTC)
    finally:
        server.kill()
