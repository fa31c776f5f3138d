"""The calls in progress in Redis (ivr.runtime.live), as the wallboard and the metrics read them."""

from __future__ import annotations

import redis

from ivr.runtime import live


def test_each_save_keeps_the_call_where_it_is_and_the_end_removes_it(redis_url):
    r = redis.Redis.from_url(redis_url)
    for sid, node, wait, at in (("CA1", "menu", "ask", 1000.0), ("CA2", "billing", "queue", 1000.0),
                                ("CA3", "billing", "queue", 1000.0), ("CATEST", "menu", "ask", 1000.0),
                                ("CAOLD", "menu", "ask", 100.0), ("CADONE", "bye", "ended", 1000.0)):
        state = {"flow": "support", "node": node, "wait": wait, "test": sid == "CATEST"}
        for command in live.commands(sid, state, now=at):
            r.execute_command(*command)
    r.execute_command(*live.commands("CA3", {"flow": "support", "hung_up": True})[0])

    calls = live.calls(r, max_age_s=600, now=1010.0)
    # CA3 hung up; CAOLD's state would have expired long ago (its end never came): both gone
    assert set(calls) == {"CA1", "CA2", "CATEST", "CADONE"}
    assert not r.hexists(live.KEY, "CAOLD")
    assert live.by_node(calls) == [
        {"flow": "support", "node": "billing", "wait": "queue", "calls": 1},
        {"flow": "support", "node": "menu", "wait": "ask", "calls": 1},
    ]
    assert sum(row["calls"] for row in live.by_node(calls, include_tests=True)) == 3
