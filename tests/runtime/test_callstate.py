"""Live call state in Redis (ivr.runtime.callstate): the call's lock, its two scripts, retried
steps, and Redis connections that break, hang or are dropped on the way."""

from __future__ import annotations

import pytest


def test_a_step_whose_lock_expired_is_not_stored_twice(redis_url):
    """A request so slow that its lock expired while a retry ran the same step: only one of
    them stores the state and the step's log records."""
    import threading

    import redis as redis_lib

    from ivr.runtime.callstate import CallStates, LockLost

    client = redis_lib.Redis.from_url(redis_url)
    stream = "test:lock:log"
    client.delete(stream, "ivr:call:CASLOW", "ivr:call:CASLOW:lock")
    calls = CallStates(client, stream=stream)
    slow_has_lock, retry_done = threading.Event(), threading.Event()
    outcome = {}

    def slow():
        try:
            with calls.lock("CASLOW", hold_ms=200):
                slow_has_lock.set()
                retry_done.wait(5)  # the step takes longer than the lock lasts
                calls.save("CASLOW", {"by": "slow"}, [{"type": "step", "n": 1}], 1, "<Response/>")
        except LockLost:
            outcome["slow"] = "lost"

    t = threading.Thread(target=slow)
    t.start()
    slow_has_lock.wait(5)
    with calls.lock("CASLOW", wait_s=5):  # Twilio's retry, once the lock has expired
        calls.save("CASLOW", {"by": "retry"}, [{"type": "step", "n": 1}], 1, "<Response/>")
        retry_done.set()
        t.join(5)  # the slow request finishes while the retry still holds the lock
    assert outcome == {"slow": "lost"}
    assert calls.load("CASLOW")[0] == {"by": "retry"} and client.xlen(stream) == 1
    client.delete(stream, "ivr:call:CASLOW")


def test_call_state_survives_a_broken_redis_connection(redis_url):
    """Each thread keeps its own connection for the call-state scripts: when Redis drops it
    (a restart, a proxy timeout) the next webhook reconnects instead of failing safe."""
    import redis as redis_lib

    from ivr.runtime.callstate import CallStates

    client = redis_lib.Redis.from_url(redis_url)
    calls = CallStates(client, stream="test:broken:log")
    client.delete("test:broken:log", "ivr:call:CABROKEN")
    with calls.lock("CABROKEN"):
        calls.save("CABROKEN", {"n": 1}, [{"type": "step", "n": 1}], 1, "<Response/>")
    conn = calls.scripts._local.conn  # the thread's own connection: drop it, and only it
    conn.send_command("CLIENT", "ID")
    killer = redis_lib.Redis.from_url(redis_url)
    assert killer.client_kill_filter(_id=conn.read_response()) == 1
    with calls.lock("CABROKEN"):
        assert calls.load("CABROKEN")[0] == {"n": 1}
        calls.save("CABROKEN", {"n": 2}, [{"type": "step", "n": 2}], 2, "<Response/>")
    assert calls.load("CABROKEN")[:2] == ({"n": 2}, 2) and client.xlen("test:broken:log") == 2
    client.delete("test:broken:log", "ivr:call:CABROKEN")


def test_the_last_answer_is_read_back_only_for_a_repeated_step_or_a_stream(redis_url):
    """The last answer's TwiML (KBs of speech hints) is stored for retries; a request for the
    next step does not read it back, a retried one does, and so does one that must stop the
    Media Stream that answer started."""
    import redis as redis_lib

    from ivr.runtime.callstate import CallStates

    client = redis_lib.Redis.from_url(redis_url)
    calls = CallStates(client, stream="test:answer:log")
    client.delete("test:answer:log", "ivr:call:CAANSWER")
    menu = "<Response><Gather>" + "hint, " * 300 + "</Gather></Response>"
    with calls.lock("CAANSWER"):
        calls.save("CAANSWER", {"n": 1}, [], 3, menu)
    for step, expected in ((3, None), (4, None), (2, menu), (-1, menu), (None, None)):
        with calls.lock("CAANSWER", step=step):
            assert calls.load("CAANSWER") == ({"n": 1}, 3, expected), step
    assert calls.load("CAANSWER")[2] == menu  # without the lock: read as it is stored
    streamed = '<Response><Start><Stream name="ivr-3" url="wss://x" /></Start><Gather/></Response>'
    with calls.lock("CAANSWER"):
        calls.save("CAANSWER", {"n": 2}, [], 3, streamed)
    with calls.lock("CAANSWER", step=3):
        assert calls.load("CAANSWER")[2] == streamed
    client.delete("test:answer:log", "ivr:call:CAANSWER")


def _run_for_at_most(limit: float, fn) -> tuple[BaseException | None, float]:
    """Run fn in a thread: (what it raised, seconds it took); fails the test past `limit`."""
    import threading
    import time

    out: dict = {}

    def run():
        start = time.monotonic()
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc
        out["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert "seconds" in out, f"still blocked after {limit} s"
    return out.get("error"), out["seconds"]


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_a_redis_that_stops_answering_fails_the_step_within_the_socket_timeout(tmp_path, tls):
    """The call-state connections block in the kernel with its own timeout (no poll before
    each read; over TLS, Python's timeout): a Redis that hangs mid-call must still free the
    webhook to fail safe, after one socket timeout, well within Twilio's 15 s."""
    import os
    import signal
    import time

    import redis as redis_lib

    from ivr.runtime.callstate import CallStates
    from tests.cbutil import RedisServer

    server = RedisServer(tmp_path / "hung", tls=tls).start()

    probe = redis_lib.Redis.from_url(server.url)  # one connection, open before Redis stops

    def sent() -> tuple[int, int]:
        """(scripts run, connections accepted) by the server: a script sent again, or a new
        connection to send it on, shows here once the server resumes."""
        stats = probe.info("commandstats")
        scripts = sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))
        return scripts, probe.info("stats")["total_connections_received"]

    def resume_and_count(before: tuple[int, int]) -> tuple[int, int]:
        """What the client sent while the server was stopped: (scripts, new connections)."""
        os.kill(server.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while sent()[0] <= before[0] and time.monotonic() < deadline:
            time.sleep(0.02)  # the resumed server runs what was queued while it was stopped
        after = sent()  # a second look, after everything queued before the first
        return after[0] - before[0], after[1] - before[1]

    try:
        client = redis_lib.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        calls = CallStates(client)
        ran: dict = {}

        def take_lock_on_a_connection_made_before():
            with calls.lock("CAHUNG"):
                calls.save("CAHUNG", {"n": 1}, [], 1, "<Response/>")
            if not tls:
                assert calls.scripts._connection()._sock.gettimeout() is None  # kernel-timed
            ran["before"] = sent()
            os.kill(server.proc.pid, signal.SIGSTOP)
            with calls.lock("CAHUNG"):
                pass

        # In a thread of its own (the connections are per thread): a hang fails the test
        # instead of stalling it.
        error, _ = _run_for_at_most(5, take_lock_on_a_connection_made_before)  # not forever
        assert isinstance(error, (redis_lib.ConnectionError, redis_lib.TimeoutError)), error
        # One wait: the lock's script sent once, not again on a new connection
        assert resume_and_count(ran["before"]) == (1, 0)
        # (the resumed Redis ran the queued lock of CAHUNG: held until it expires)
        with calls.lock("CAOTHER"):  # the next webhook reconnects
            calls.save("CAOTHER", {"n": 2}, [], 1, "<Response/>")
        assert calls.load("CAOTHER")[:2] == ({"n": 2}, 1)

        # Redis hangs after the lock is taken: the save fails after one wait, and the lock
        # is left to expire rather than waited on again.
        def save_after_hang():
            with calls.lock("CATHIRD"):
                ran["before"] = sent()
                os.kill(server.proc.pid, signal.SIGSTOP)
                calls.save("CATHIRD", {"n": 3}, [], 1, "<Response/>")

        error, _ = _run_for_at_most(5, save_after_hang)
        assert isinstance(error, (redis_lib.ConnectionError, redis_lib.TimeoutError)), error
        # The save's script only: neither sent again nor followed by the lock's release
        assert resume_and_count(ran["before"]) == (1, 0)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.kill()


def test_an_idle_connection_dropped_on_the_way_is_replaced_not_failed(redis_url):
    """A firewall or NAT that forgets an idle connection drops what is sent on it without a
    word: the script times out, and is sent again on a new connection (only when the old one
    sat idle; a busy one that times out means Redis itself is not answering)."""
    import socket
    import threading

    import redis as redis_lib

    from ivr.runtime.callstate import CallStates

    swallowed: set[int] = set()  # connections whose traffic now goes nowhere
    opened: list[int] = []

    def pipe(src, dst, n):
        try:
            while data := src.recv(65536):
                if n not in swallowed:
                    dst.sendall(data)
        except OSError:
            pass

    listener = socket.create_server(("127.0.0.1", 0))
    host, port = redis_url.split("//")[1].split("/")[0].split(":")

    def accept():
        while True:
            client, _ = listener.accept()
            upstream = socket.create_connection((host, int(port)))
            opened.append(len(opened) + 1)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b, opened[-1]), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    db, proxy_port = redis_url.rsplit("/", 1)[1], listener.getsockname()[1]
    calls = CallStates(redis_lib.Redis.from_url(f"redis://127.0.0.1:{proxy_port}/{db}", socket_timeout=0.5))

    def webhook(n):
        with calls.lock("CAIDLE"):
            calls.save("CAIDLE", {"n": n}, [], n, "<Response/>")

    def dropped_while_idle():
        webhook(1)
        swallowed.update(opened)
        calls.scripts._local.used -= 60  # as after a minute without a call on this thread
        webhook(2)

    error, seconds = _run_for_at_most(5, dropped_while_idle)
    assert error is None, error
    assert 0.5 <= seconds < 1.5 and len(opened) == 2  # one wait, then a new connection
    assert calls.load("CAIDLE")[:2] == ({"n": 2}, 2)


def test_call_state_scripts_can_be_sent_twice(redis_url):
    """A script whose reply was lost with its connection is sent again: taking the lock again
    with the same token succeeds, and saving again stores the step (and its log) once."""
    import json

    import redis as redis_lib

    from ivr.runtime.callstate import CallStates

    client = redis_lib.Redis.from_url(redis_url)
    calls = CallStates(client, stream="test:twice:log")
    client.delete("test:twice:log", "ivr:call:CATWICE", "ivr:call:CATWICE:lock")
    keys = ["ivr:call:CATWICE:lock", "ivr:call:CATWICE"]
    assert calls.scripts.run(calls._acquire, keys, ["tok", 5000])[0] == 1
    assert calls.scripts.run(calls._acquire, keys, ["tok", 5000])[0] == 1  # the same request
    assert calls.scripts.run(calls._acquire, keys, ["other", 5000]) == [0]  # anyone else waits
    save_keys = ["ivr:call:CATWICE", "ivr:call:CATWICE:lock", "test:twice:log"]
    args = ["tok", 600, json.dumps({"n": 1}), "1", "<Response/>", "0", "", "", '{"type":"step"}']
    assert calls.scripts.run(calls._save, save_keys, args) == [1]
    assert calls.scripts.run(calls._save, save_keys, args) == [2]  # already stored, not again
    assert client.xlen("test:twice:log") == 1 and client.hget("ivr:call:CATWICE", "v") == b"1"
    assert not client.exists("ivr:call:CATWICE:lock")
    client.delete("test:twice:log", "ivr:call:CATWICE")


@pytest.mark.parametrize("decoded", [False, True])
def test_call_state_keeps_numbers_and_keys_as_json_would(redis_url, decoded):
    """orjson writes and reads the state; what it would change (integers past 64 bits read
    as floats, keys that are not strings, NaN written by an older version) goes through json."""
    import redis as redis_lib

    from ivr.runtime.callstate import CallStates

    client = redis_lib.Redis.from_url(redis_url, decode_responses=decoded)
    calls = CallStates(client, stream="test:numbers:log")
    client.delete("ivr:call:CANUM")
    state = {"vars": {"account": 2**70 + 1, "debt": -(2**65) - 1, "small": 2**63}, "ids": {7: "seven"},
             "name": "Zoë"}
    with calls.lock("CANUM"):
        calls.save("CANUM", state, [], 1, "<Response/>")
    assert calls.load("CANUM")[0] == {"vars": {"account": 2**70 + 1, "debt": -(2**65) - 1,
                                               "small": 2**63}, "ids": {"7": "seven"}, "name": "Zoë"}
    client.hset("ivr:call:CANUM", "state", '{"score": NaN}')  # as json.dumps wrote it once
    assert str(calls.load("CANUM")[0]["score"]) == "nan"
    client.delete("ivr:call:CANUM", "test:numbers:log")
    client.close()
