"""The real server: `ivr serve` under gunicorn in its own process, driven over HTTP."""

from __future__ import annotations

import shutil
import socket
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import redis
import requests

from ivr.calllog.store import Store
from tests.conftest import FLOWS, sign


def post(base: str, path: str, **params) -> requests.Response:
    params = {k: str(v) for k, v in params.items()}
    return requests.post(base + path, data=params, timeout=10,
                         headers={"X-Twilio-Signature": sign(base + path, params)})


def wait_for(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    return check()


@pytest.fixture
def open_flows(tmp_path) -> Path:
    """The example flows with the support line open at every hour of every day: a server in
    its own process reads the real clock, and each test must take the same path by day and by
    night (the engine's clock is pinned only in-process, by the open_hours fixture)."""
    folder = tmp_path / "open-flows"
    shutil.copytree(FLOWS, folder)
    flow = folder / "support.yaml"
    text = flow.read_text()
    start, end = text.index("hours:\n  support:\n"), text.index("\n\n", text.index("holidays:"))
    flow.write_text(text[:start] + "hours:\n  support:\n    timezone: America/New_York\n"
                    "    open: {mon-sun: 24h}" + text[end:])
    return folder


def call_through(base: str, sid: str) -> None:
    """A known caller presses 1 for billing, waits in its queue and hangs up after 42 s."""
    first = post(base, "/voice", CallSid=sid, From="+14155550101", To="+15005550006")
    assert first.status_code == 200
    assert "Northwind Fibre" in first.text
    gather = ET.fromstring(first.text).find("Gather")
    assert gather is not None, first.text  # the line is open (open_flows)
    second = post(base, gather.get("action"), CallSid=sid, Digits="1")
    assert ET.fromstring(second.text).find("Enqueue").text == "billing"
    assert post(base, "/voice/status", CallSid=sid, CallStatus="completed",
                CallDuration="42").status_code == 204


def test_real_server_with_real_redis_records_every_step(start_server, redis_url, tmp_path, open_flows):
    db = tmp_path / "steps.db"
    base = start_server({"REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{db}",
                         "IVR_FLOWS_DIR": str(open_flows)})
    assert requests.post(base + "/voice", data={"CallSid": "CA1"}, timeout=5).status_code == 403
    for i in range(5):
        call_through(base, f"CAREAL{i}")
    store = Store(f"sqlite:///{db}")
    # the workers' recorder threads move the log from Redis into SQL by themselves

    def closed_calls():
        calls = [store.call(f"CAREAL{i}") or {} for i in range(5)]
        return [c for c in calls if c.get("duration_s") == 42]

    wait_for(lambda: len(closed_calls()) == 5)
    calls = closed_calls()
    assert len(calls) == 5
    assert all(c["from_number"] == "+14155550101" and c["caller_known"] for c in calls)
    assert all(c["outcome"] == "abandoned" and c["last_node"] == "billing_queue" for c in calls)
    assert wait_for(lambda: redis.Redis.from_url(redis_url).xlen("ivr:log") == 0)


def test_two_workers_answer_calls_from_one_preloaded_app(start_server, redis_url, tmp_path, open_flows):
    """The app is built once in the master and forked into the workers, which answer calls as
    usual. How much memory they share is a figure of bench/webhooks.py (docs/performance.md),
    not of this test: it depends on the machine."""
    import subprocess

    base = start_server({"REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
                         "IVR_FLOWS_DIR": str(open_flows)}, workers=2)
    for i in range(4):
        call_through(base, f"CASHARE{i}")
    port = base.rsplit(":", 1)[1]
    master = subprocess.run(["pgrep", "-f", f"serve --port {port}"], capture_output=True,
                            text=True).stdout.split()
    # gunicorn forks its workers up to 0.1 s apart: the first may have served these calls alone
    workers = wait_for(lambda: len(found := subprocess.run(
        ["pgrep", "-P", master[0]], capture_output=True, text=True).stdout.split()) == 2 and found)
    assert workers and len(workers) == 2


def test_the_intent_matchers_are_built_before_the_workers_fork(make_app):
    """gunicorn forks the workers once Services.before_fork returns: every flow's intent
    matcher, and the model under it, must be built by then, so the workers share them rather
    than each loading its own (about 90 MB a process)."""
    svc = make_app().extensions["ivr"]
    svc.before_fork()
    built = {flow_id for flow_id, _ in svc.matchers._cache}
    assert built == {f.id for f in svc.registry.flows.values() if f.intents}
    assert not svc.warmup.is_alive()


def test_first_run_needs_no_redis_or_database_server(start_server, tmp_path, open_flows):
    base = start_server({"IVR_FLOWS_DIR": str(open_flows)}, workers=1)
    call_through(base, "CAEMBED1")
    assert (tmp_path / "var" / "redis.sock").exists()
    store = Store(f"sqlite:///{tmp_path / 'var' / 'ivr.db'}")
    call = wait_for(lambda: (store.call("CAEMBED1") or {}).get("duration_s") == 42 and
                    store.call("CAEMBED1"))
    assert call and call["flow"] == "support"


def test_idle_kept_alive_connections_stay_open_for_the_keepalive_seconds(start_server, redis_url,
                                                                       tmp_path):
    """A proxy pooling connections to the server relies on this: gunicorn alone drops idle
    ones after 2 s, and a proxy's request crossing that close fails the webhook."""
    env = {"REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path / 'k.db'}",
           "IVR_FLOWS_DIR": str(FLOWS)}
    default = start_server(env, workers=1)
    short = start_server(env, workers=1, args=("--keepalive", "1"))
    request = b"GET /healthz HTTP/1.1\r\nHost: ivr\r\n\r\n"

    def answer(sock: socket.socket) -> bytes:
        """One whole answer (gunicorn may send its head and body separately)."""
        def more() -> bytes:
            chunk = sock.recv(4096)
            assert chunk, "the server closed the connection"
            return chunk

        data = b""
        while b"\r\n\r\n" not in data:
            data += more()
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.lower().split(b"\r\n")
                          if line.startswith(b"content-length:")))
        while len(body) < length:
            body += more()
        return head

    def opened(base: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=5)
        sock.sendall(request)
        assert answer(sock).startswith(b"HTTP/1.1 200")
        return sock

    kept, dropped = opened(default), opened(short)
    try:
        time.sleep(3)
        assert dropped.recv(4096) == b""  # closed by the server after 1 s idle
        kept.sendall(request)  # still open after 3 s idle
        assert answer(kept).startswith(b"HTTP/1.1 200")
    finally:
        kept.close()
        dropped.close()


def test_a_process_that_stops_while_the_intent_model_loads_exits_cleanly(redis_url, tmp_path):
    """A worker stopped seconds after it started (a deploy, Ctrl-C) must not abort in the middle
    of loading the intent model (SIGABRT from onnxruntime's thread at interpreter exit)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "IVR_FLOWS_DIR": str(FLOWS), "REDIS_URL": redis_url, "IVR_RECORDER": "false",
           "IVR_DATA_DIR": str(tmp_path / "var"), "DATABASE_URL": f"sqlite:///{tmp_path}/ivr.db"}
    done = subprocess.run([sys.executable, "-c", "from ivr import create_app; create_app()"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "terminate called" not in done.stderr


def test_stopping_the_server_ends_every_worker_cleanly_and_at_once(redis_url, tmp_path, open_flows):
    """A deploy stops the server: its workers, forked from a master that loaded the intent
    model, must neither abort (SIGABRT from onnxruntime's exit handlers) nor hang until the
    graceful timeout, and what they answered is still recorded."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import TOKEN, free_port, wait_http

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"TWILIO_AUTH_TOKEN": TOKEN, "PUBLIC_URL": f"http://127.0.0.1:{port}", "REDIS_URL": redis_url,
                "IVR_FLOWS_DIR": str(open_flows), "IVR_DATA_DIR": str(tmp_path / "var")})
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "serve", "--port", str(port),
                                 "--workers", "3"], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/healthz", proc=proc)
            for n in range(6):  # spread over the workers
                call_through(base, f"CASTOP{n}")
            store = Store(f"sqlite:///{tmp_path / 'var' / 'ivr.db'}")
            assert wait_for(lambda: all((store.call(f"CASTOP{n}") or {}).get("duration_s") == 42
                                        for n in range(6)))
            proc.send_signal(signal.SIGTERM)
            # A worker still running at the graceful timeout (10 s) is killed, and gunicorn logs
            # "was sent SIGKILL" (checked below): no stopwatch needed.
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    # the recorder gave up its lease on the way out: the next server records at once
    assert redis.Redis.from_url(redis_url).keys("ivr:recorder:leader:*") == []
    text = log.read_text()
    assert text.count("Worker exiting") == 3, text[-2000:]
    for sign_of_a_crash in ("SIGABRT", "terminate called", "Traceback", "was sent SIGKILL"):
        assert sign_of_a_crash not in text, text[-2000:]


def test_the_worker_exit_hook_leaves_the_master_running():
    """gunicorn's master also calls worker_exit, for a worker that is already gone: the hook
    ends only the worker's own process."""
    import os
    from types import SimpleNamespace

    from ivr.web.server import _end_worker

    _end_worker(None, SimpleNamespace(pid=os.getpid() + 1, wsgi=None))  # returns: still here


def test_bad_settings_are_named_at_start_not_a_traceback(tmp_path):
    from click.testing import CliRunner

    from ivr.cli import cli

    cases = [({"REDIS_URL": "localhost:6379"}, "REDIS_URL 'localhost:6379'"),
             ({"DATABASE_URL": "mysql://nope"}, "unsupported database 'mysql'"),
             ({"DATABASE_URL": "nonsense"}, "is not a database URL"),
             ({"IVR_STATE_TTL": "0"}, "IVR_STATE_TTL must be at least 60"),
             ({"IVR_DATA_DIR": "/proc/ivr"}, "IVR_DATA_DIR '/proc/ivr' cannot be created")]
    for env, words in cases:
        result = CliRunner().invoke(cli, ["recorder", "--once"], env={"IVR_DATA_DIR": str(tmp_path), **env})
        assert result.exit_code == 2 and words in result.output, (env, result.output)
        assert "Traceback" not in result.output


def _raw(base: str, head: str) -> bytes:
    """The status line of the answer to one raw HTTP request."""
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n")[0]


def test_a_script_name_header_is_a_clear_400_not_a_500(start_server, redis_url, tmp_path):
    """gunicorn took the path the app is mounted at from a SCRIPT_NAME header (from
    127.0.0.1, where the proxy is): one the path did not start with was a 500."""
    base = start_server({"REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
                         "IVR_FLOWS_DIR": str(FLOWS)}, workers=1)
    for header in ("SCRIPT_NAME: /elsewhere", "SCRIPT_NAME: /voice", "Script_Name: /x"):
        status = _raw(base, f"POST /voice HTTP/1.1\r\nHost: ivr\r\n{header}\r\nContent-Length: 0\r\n"
                            "Connection: close\r\n")
        assert status == b"HTTP/1.1 400 Bad Request", (header, status)
    # the same request without it is Twilio's business as usual: refused for want of a signature
    status = _raw(base, "POST /voice HTTP/1.1\r\nHost: ivr\r\nContent-Length: 0\r\nConnection: close\r\n")
    assert status.startswith(b"HTTP/1.1 403")
