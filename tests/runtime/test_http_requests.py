"""A flow's request leaving the server, against a real HTTP server on loopback (tests/order_api.py):
what is sent, the answers and failures it comes back with, the allowed hosts, the circuit
breaker in a real Redis, and secrets kept out of every log."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from ivr.config import AllowedHosts
from ivr.engine import actions as A
from ivr.runtime import http_requests
from ivr.runtime.circuit import Circuit
from ivr.runtime.http_requests import perform, prepare
from ivr.runtime.request_runner import RequestRunner
from tests.conftest import free_port
from tests.order_api import OrderApi

TOKEN = "tok-s3cret-8c1f"


@pytest.fixture
def api():
    server = OrderApi().start()
    yield server
    server.stop()


def order_request(api: OrderApi, customer: str = "C-1001", timeout: float = 2.0, rid: str = "1") -> A.Request:
    return A.Request(rid, "order_status", "GET", f"{api.url}/v1/customers/{customer}/orders/latest",
                     (("Authorization", "Bearer ~ivrsecret~ORDER_TOKEN~"),), timeout=timeout)


def send(api: OrderApi, req: A.Request | None = None, **kwargs):
    kwargs.setdefault("hosts", AllowedHosts.parse(api.host))
    kwargs.setdefault("environ", {"ORDER_TOKEN": TOKEN})
    return perform(req or order_request(api), **kwargs)


def test_an_answer_comes_back_with_its_status_time_and_size_and_the_secret_was_sent(api):
    done = send(api)
    assert done.error is None and done.status == 200 and done.request == "1"
    assert '"status": "shipped"' in done.body and done.size == len(done.body.encode())
    assert done.ms is not None and done.ms >= 0
    seen = api.requests[-1]
    assert seen.method == "GET" and seen.path == "/v1/customers/C-1001/orders/latest"
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["Accept"] == "application/json"


def test_a_json_body_is_sent_with_its_secrets_filled_in(api):
    req = A.Request("2", "echo", "POST", f"{api.url}/v1/echo", (),
                    json={"customer": "C-1001", "key": "~ivrsecret~ORDER_TOKEN~", "n": 3})
    done = send(api, req)
    assert done.status == 200
    assert api.requests[-1].body == f'{{"customer": "C-1001", "key": "{TOKEN}", "n": 3}}'


def test_a_404_and_a_500_are_answers_for_the_flow_to_judge(api):
    assert send(api, order_request(api, "C-9999")).status == 404
    api.fail_with = 500
    done = send(api)
    assert done.status == 500 and done.error is None


def test_an_api_that_does_not_answer_in_time_is_a_timeout(api):
    api.hold = threading.Event()  # never set while the request waits
    done = send(api, order_request(api, timeout=0.5))
    assert done.error == "timeout" and done.status is None
    assert api.held.acquire(timeout=5)  # it did reach the API


def test_nothing_listening_is_a_connection_error():
    port = free_port()
    req = A.Request("1", "order_status", "GET", f"http://127.0.0.1:{port}/v1/x", timeout=2)
    done = perform(req, hosts=AllowedHosts.parse(f"127.0.0.1:{port}"), environ={})
    assert done.error == "connection"


def test_a_host_not_allowed_is_refused_without_a_request(api, caplog):
    other_port = AllowedHosts.parse(f"127.0.0.1:{free_port()}")
    for hosts in (AllowedHosts(), AllowedHosts.parse("127.0.0.1"), other_port,
                  AllowedHosts.parse("localhost:" + api.host.split(":")[1])):
        with caplog.at_level(logging.ERROR, logger="ivr.requests"):
            assert send(api, hosts=hosts).error == "host_not_allowed"
    assert api.requests == []
    assert "is not in IVR_REQUEST_HOSTS" in caplog.text


def test_credentials_in_the_url_are_refused(api):
    req = A.Request("1", "x", "GET", f"http://user:pw@{api.host}/v1/outages?zip=1", timeout=2)
    assert send(api, req).error == "host_not_allowed" and api.requests == []


def test_a_secret_that_is_not_set_is_never_sent_as_a_blank(api, caplog):
    with caplog.at_level(logging.ERROR, logger="ivr.requests"):
        done = send(api, environ={})
    assert done.error == "secret_missing" and api.requests == []
    assert "secret ORDER_TOKEN is not set" in caplog.text


def test_redirects_are_not_followed():
    """A redirect could lead off the allowed hosts: it comes back as it is, a status of 300+."""
    api = OrderApi().start()

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"{api.url}/v1/customers/C-1001/orders/latest")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        req = A.Request("1", "x", "GET", f"http://{host}/old", timeout=2)
        done = perform(req, hosts=AllowedHosts.parse(f"{host},{api.host}"), environ={})
        assert done.status == 302 and api.requests == []
    finally:
        server.shutdown()
        server.server_close()
        api.stop()


def test_an_answer_too_large_to_keep_is_cut_off(api, monkeypatch):
    monkeypatch.setattr(http_requests, "MAX_BODY_BYTES", 50)
    assert send(api).error == "too_large"


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_repeated_failures_open_the_circuit_and_a_trial_closes_it(api, redis_url, caplog):
    clock = Clock()
    circuit = Circuit(redis.Redis.from_url(redis_url), failures=3, open_s=30, clock=clock)
    api.fail_with = 503
    with caplog.at_level(logging.INFO, logger="ivr.requests"):
        for _ in range(3):
            assert send(api, circuit=circuit).status == 503
        assert circuit.state(api.host) == "open"
        # open: callers no longer wait for the API, which hears nothing more
        assert send(api, circuit=circuit).error == "circuit_open"
        assert len(api.requests) == 3
        clock.now += 29
        assert send(api, circuit=circuit).error == "circuit_open" and len(api.requests) == 3
        # its time is up: one trial goes through; still failing, it opens again
        clock.now += 2
        assert circuit.state(api.host) == "trial"
        assert send(api, circuit=circuit).status == 503 and len(api.requests) == 4
        assert send(api, circuit=circuit).error == "circuit_open" and len(api.requests) == 4
        # the API is back: the next trial succeeds and the circuit closes for everyone
        api.fail_with = None
        clock.now += 31
        assert send(api, circuit=circuit).status == 200
        assert circuit.state(api.host) == "closed"
        assert [send(api, circuit=circuit).status for _ in range(2)] == [200, 200]
    assert len(api.requests) == 7
    messages = [r.getMessage() for r in caplog.records]
    assert any("opened after 3 failures in a row" in m for m in messages)
    assert any("closed: it answers again" in m for m in messages)


def test_an_open_circuit_lets_one_trial_through_at_a_time(api, redis_url):
    clock = Clock()
    circuit = Circuit(redis.Redis.from_url(redis_url), failures=1, open_s=10, clock=clock)
    key = api.host
    circuit.record(key, ok=False)
    clock.now += 11
    assert circuit.allow(key) is True  # the trial
    assert circuit.allow(key) is False  # others wait for its outcome
    circuit.record(key, ok=True)
    assert circuit.allow(key) is True and circuit.allow(key) is True


def test_timeouts_and_refusals_count_against_the_circuit_but_a_404_does_not(api, redis_url):
    circuit = Circuit(redis.Redis.from_url(redis_url), failures=2, open_s=30, clock=Clock())
    for _ in range(3):
        assert send(api, order_request(api, "C-9999"), circuit=circuit).status == 404
    assert circuit.state(api.host) == "closed"
    api.hold = threading.Event()
    for _ in range(2):
        assert send(api, order_request(api, timeout=0.5), circuit=circuit).error == "timeout"
    assert circuit.state(api.host) == "open"


def test_the_secret_is_in_no_log_line_even_when_the_request_fails(api, caplog):
    with caplog.at_level(logging.DEBUG):
        send(api)
        api.fail_with = 500
        send(api)
        send(api, hosts=AllowedHosts())
    assert caplog.records and TOKEN not in caplog.text


def test_a_request_started_by_one_process_is_answered_to_another_through_redis(api, redis_url):
    """The webhook that starts a request and the one Twilio sends for its answer may run in
    different web processes: the answer goes through Redis, and the request runs once."""
    client = redis.Redis.from_url(redis_url)
    environ = {"ORDER_TOKEN": TOKEN}
    hosts = AllowedHosts.parse(api.host)
    starter = RequestRunner(client, lambda req: prepare(req, hosts=hosts, environ=environ),
                            http_requests.send, threads=2)
    other = RequestRunner(client, lambda req: pytest.fail("the other process must not prepare it"),
                          lambda ready: pytest.fail("the other process must not send it"))
    api.hold = threading.Event()
    req = order_request(api, rid="7")
    assert starter.start("CA1", req, wait_s=0) is None  # still running
    assert api.held.acquire(timeout=5)
    assert other.start("CA1", req, wait_s=0) is None  # started already: not sent twice
    assert other.result("CA1", "7", wait_s=0) is None
    api.hold.set()
    done = other.result("CA1", "7", wait_s=5)
    assert done is not None and done.status == 200 and done.request == "7"
    assert len(api.requests) == 1
    assert TOKEN.encode() not in b"".join(client.get(k) or b"" for k in client.keys("ivr:req:*")
                                          if client.type(k) == b"string")
