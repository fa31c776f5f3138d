"""The per-host lease that lets one web process record the step log and another take over."""

from __future__ import annotations

import threading
import time

import redis

from ivr.calllog.leader import lead


def test_one_leader_at_a_time_and_a_successor_when_it_goes(redis_url):
    client = redis.Redis.from_url(redis_url)
    working: list[str] = []
    stops = {name: threading.Event() for name in ("a", "b")}

    def worker(name):
        def work(lost):
            working.append(name)
            while not lost.is_set():
                lost.wait(0.05)
            working.remove(name)
        return work

    threads = [threading.Thread(target=lead, args=(client, "ivr:test:lease", worker(n), stops[n], 600),
                                daemon=True) for n in ("a", "b")]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while not working and time.monotonic() < deadline:  # one of them takes the lease
        time.sleep(0.02)
    assert len(working) == 1  # never two writers
    first = working[0]
    stops[first].set()  # the leader's process stops: its lease is released
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and working[:1] != [n for n in "ab" if n != first]:
        time.sleep(0.05)
    assert working == [n for n in "ab" if n != first]
    for s in stops.values():
        s.set()
    for t in threads:
        t.join(timeout=5)
    assert not working
