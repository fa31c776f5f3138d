"""Self-service through Twilio's webhooks: the example flow's "where is my order" and "is there
an outage at my address" asking the fake order API on loopback (tests/order_api.py), with a
real Redis and SQLite. Quick answers, slow ones (the caller hears the prompt, then the hold
prompt), answers that never come, a circuit that opens, and the step log without secrets."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
import redis

import ivr.runtime.services
import ivr.web.voice
from ivr.calllog.recorder import STREAM
from tests.conftest import Twilio
from tests.order_api import OrderApi
from tests.webutil import CALLER, flush, parse, said

TOKEN = "nw-token-5f2b9e"


@pytest.fixture(autouse=True)
def _open_hours(open_hours):
    pass


@pytest.fixture
def api(monkeypatch):
    server = OrderApi().start()
    monkeypatch.setenv("NORTHWIND_API_URL", server.url)
    monkeypatch.setenv("NORTHWIND_API_TOKEN", TOKEN)
    yield server
    server.stop()


@pytest.fixture
def phone(make_app, api):
    """A caller's phone for one call of the support line (an app per test: its settings)."""

    def make(sid: str, caller: dict = CALLER, **config):
        config.setdefault("request_hosts", api.host)
        app = make_app(**config)
        twilio = Twilio(app.test_client())

        def post(path: str, **params):
            return parse(twilio.post(path, CallSid=sid, **caller, **params))

        def hang_up(duration: int = 30) -> None:
            assert twilio.post("/voice/status", CallSid=sid, CallStatus="completed",
                               CallDuration=str(duration)).status_code == 204

        post.app, post.hang_up = app, hang_up
        return post

    return make


def test_a_known_caller_hears_their_order_status_in_the_same_webhook(phone, api):
    post = phone("CA1", request_quick_ms=5000)  # waits for the answer, which comes at once
    post("/voice")
    root = post("/voice/gather?s=1", SpeechResult="where is my order", Confidence="0.9")
    assert said(root).startswith("Your latest order is shipped with UPS, and should arrive Thursday.")
    assert root.find("Gather") is not None and root.find("Redirect") is None
    assert api.requests[-1].path == "/v1/customers/C-1001/orders/latest"
    assert api.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"
    root = post("/voice/gather?s=2")  # silence: they got what they called for
    assert said(root) == "Thanks for calling Northwind Fibre. Goodbye." and root.find("Hangup") is not None
    post.hang_up(31)
    store = flush(post.app)
    assert store.call("CA1")["outcome"] == "completed"
    request = next(s for s in store.steps("CA1") if s["event"] == "request")
    assert request["node"] == "order_status" and request["action"] == "request:ok"
    detail = request["detail"]
    assert detail["status"] == 200 and detail["result"] == "ok" and detail["bytes"] > 50
    assert isinstance(detail["ms"], int)


def test_a_slow_api_plays_the_prompt_then_the_hold_prompt_never_silence(phone, api, monkeypatch):
    monkeypatch.setattr(ivr.web.voice, "REQUEST_POLL_S", 0.2)
    post = phone("CA2", request_quick_ms=0)
    post("/voice")
    api.hold = threading.Event()
    root = post("/voice/gather?s=1", Digits="2")
    assert said(root) == "One moment while I look that up."
    assert root.find("Redirect").text == "/voice/request?s=2"
    assert api.held.acquire(timeout=5)  # the request is at the API, which has not answered
    root = post("/voice/request?s=2")
    assert said(root) == "Still looking, thank you for waiting."
    assert root.find("Redirect").text == "/voice/request?s=3"
    api.hold.set()
    root = post("/voice/request?s=3")
    assert said(root).startswith("Your latest order is shipped")
    retry = post("/voice/request?s=3")  # Twilio retried: the same answer, not a second step
    assert said(retry) == said(root)
    steps = flush(post.app).steps("CA2")
    assert [s["event"] for s in steps if s["node"] == "order_status"] == ["enter", "request_wait", "request"]
    done = steps[[s["event"] for s in steps].index("request")]
    assert done["said"] == "One moment while I look that up." and done["action"] == "request:ok"
    assert len(api.requests) == 1


def test_an_answer_that_never_comes_back_sends_the_caller_on_after_the_deadline(phone, api, monkeypatch):
    post = phone("CA3", request_quick_ms=0)
    post("/voice")
    api.hold = threading.Event()
    post("/voice/gather?s=1", Digits="2")
    assert api.held.acquire(timeout=5)
    later = ivr.runtime.services.clock() + timedelta(seconds=3 + ivr.web.voice.REQUEST_GRACE_S + 1)
    monkeypatch.setattr(ivr.runtime.services, "clock", lambda: later)
    root = post("/voice/request?s=2")
    assert said(root) == "Connecting you to our orders team."
    assert root.find("Enqueue").text == "orders"
    request = next(s for s in flush(post.app).steps("CA3") if s["event"] == "request")
    assert request["detail"]["result"] == "lost"


@pytest.mark.parametrize(("misbehave", "result"), [
    ({"fail_with": 500}, "status"), ({"bad_json": True}, "bad_json"), ({"fail_with": 404}, "status")])
def test_an_api_error_takes_the_caller_to_a_person(phone, api, misbehave, result):
    for name, value in misbehave.items():
        setattr(api, name, value)
    post = phone("CA4", request_quick_ms=5000)
    post("/voice")
    root = post("/voice/gather?s=1", Digits="2")
    assert said(root) == "Connecting you to our orders team." and root.find("Enqueue").text == "orders"
    request = next(s for s in flush(post.app).steps("CA4") if s["event"] == "request")
    assert request["detail"]["result"] == result and request["action"] == "request:error"


def test_a_refused_connection_and_a_host_not_allowed_take_on_error(phone, api):
    post = phone("CA5", request_hosts="api.northwind.example")  # not the API's host
    post("/voice")
    assert said(post("/voice/gather?s=1", Digits="2")) == "Connecting you to our orders team."
    assert api.requests == []
    api.stop()
    post = phone("CA6", request_quick_ms=5000)
    post("/voice")
    assert said(post("/voice/gather?s=1", Digits="2")) == "Connecting you to our orders team."
    results = {sid: next(s for s in flush(post.app).steps(sid) if s["event"] == "request")["detail"]["result"]
               for sid in ("CA5", "CA6")}
    assert results == {"CA5": "host_not_allowed", "CA6": "connection"}


def test_once_the_circuit_opens_callers_do_not_wait_for_a_failing_api(phone, api):
    api.fail_with = 503
    for n in (1, 2):
        post = phone(f"CA7{n}", request_circuit_failures=2, request_quick_ms=5000)
        post("/voice")
        post("/voice/gather?s=1", Digits="2")
    assert len(api.requests) == 2
    api.hold = threading.Event()  # were it asked again, it would not answer
    post = phone("CA73", request_circuit_failures=2, request_quick_ms=0)
    post("/voice")
    root = post("/voice/gather?s=1", Digits="2")
    assert said(root) == "Connecting you to our orders team."  # at once: no prompt, no wait
    assert len(api.requests) == 2
    request = next(s for s in flush(post.app).steps("CA73") if s["event"] == "request")
    assert request["detail"]["result"] == "circuit_open"


def test_an_outage_at_the_callers_address_is_told_instead_of_a_queue(phone, api):
    grace = {"From": "+14155550101", "To": "+15005550006"}
    post = phone("CA8", grace, request_quick_ms=5000)
    post("/voice")
    root = post("/voice/gather?s=1", SpeechResult="is there an outage in my area", Confidence="0.8")
    assert "there is an outage in Mission District, caused by a cut fibre cable" in said(root)
    assert api.requests[-1].path == "/v1/outages?zip=94110"
    anonymous = phone("CA9", {"From": "Anonymous", "To": "+15005550006"}, request_quick_ms=5000)
    anonymous("/voice")
    root = anonymous("/voice/gather?s=1", SpeechResult="is the internet down in my area", Confidence="0.8")
    assert "enter your 5 digit ZIP code" in said(root)
    root = anonymous("/voice/gather?s=2", Digits="10001")
    assert said(root).startswith("There is no known outage at your address")
    assert root.find("Enqueue").text == "technical"


def test_the_secret_is_sent_to_the_api_and_kept_nowhere_else(phone, api, redis_url, caplog):
    post = phone("CA10", request_quick_ms=5000, recorder=False)
    with caplog.at_level(logging.DEBUG):
        post("/voice")
        answers = [post("/voice/gather?s=1", Digits="2")]
        api.fail_with = 500
        other = phone("CA11", request_quick_ms=5000)
        other("/voice")
        answers.append(other("/voice/gather?s=1", Digits="2"))
    assert all(s.headers["Authorization"] == f"Bearer {TOKEN}" for s in api.requests)
    client = redis.Redis.from_url(redis_url)
    everything = b"".join(str(client.dump(k)).encode() for k in client.keys("*"))
    everything += str(client.xrange(STREAM)).encode()
    store = flush(post.app)
    steps = str(store.steps("CA10")) + str(store.steps("CA11"))
    assert TOKEN not in steps and TOKEN.encode() not in everything and TOKEN not in caplog.text
    assert TOKEN not in "".join(said(a) for a in answers)
    assert "northwind-api" not in steps and "order_status" in steps


CRM_FLOW = """
id: crm
numbers: ["+15005550077"]
directory:
  url: "{{ secrets.CRM_URL }}/v1/callers?phone={{ phone }}"
  record: data
  timeout: 0.5
nodes:
  hello:
    hangup: "{{ 'Hi ' ~ caller.first_name if caller.known else 'Hello' }}, thanks for calling."
"""


def test_the_caller_directory_can_be_the_crms_http_api(make_app, flows_dir, api, monkeypatch):
    """Looked up in the call's first webhook (the caller hears it ring), kept in Redis, and an
    unknown caller when the CRM does not answer in time."""
    monkeypatch.setenv("CRM_URL", api.url)
    (flows_dir / "crm.yaml").write_text(CRM_FLOW)
    app = make_app(request_hosts=api.host)
    twilio = Twilio(app.test_client())
    ada = {"From": "+14155550100", "To": "+15005550077"}
    assert said(parse(twilio.post("/voice", CallSid="CA20", **ada))) == "Hi Ada, thanks for calling."
    assert said(parse(twilio.post("/voice", CallSid="CA21", **ada))) == "Hi Ada, thanks for calling."
    assert len(api.requests) == 1  # the second call found her in the cache
    api.hold = threading.Event()  # the CRM stops answering
    other = {"From": "+12025550199", "To": "+15005550077"}
    assert said(parse(twilio.post("/voice", CallSid="CA22", **other))) == "Hello, thanks for calling."
    store = flush(app)
    assert store.call("CA20")["caller_known"] is True and store.call("CA20")["customer_id"] == "C-1001"
    assert store.call("CA22")["caller_known"] is False


def test_under_ivr_serve_a_slow_answer_reaches_whichever_worker_twilio_asks(start_server, redis_url,
                                                                             tmp_path, api):
    """gunicorn with two workers: the request runs on a thread of the worker that took the
    first webhook, and /voice/request, on either worker, gets its answer through Redis."""
    import requests

    from tests.conftest import sign

    flows = tmp_path / "served-flows"
    flows.mkdir()
    (flows / "orders.yaml").write_text("""
id: orders
default: true
nodes:
  look:
    request:
      url: "{{ secrets.NORTHWIND_API_URL }}/v1/customers/C-1001/orders/latest"
      headers: {Authorization: "Bearer {{ secrets.NORTHWIND_API_TOKEN }}"}
      save_as: order
      timeout: 8
    next: tell
    on_error: sorry
  tell:
    hangup: "Your order is {{ vars.order.status }}."
  sorry:
    hangup: "Sorry."
""")
    base = start_server({"REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
                         "IVR_FLOWS_DIR": str(flows), "IVR_REQUEST_HOSTS": api.host,
                         "IVR_REQUEST_QUICK_MS": "0", "NORTHWIND_API_URL": api.url,
                         "NORTHWIND_API_TOKEN": TOKEN}, workers=2)

    def post(path: str, **params):
        params = {"CallSid": "CASERVE", **{k: str(v) for k, v in params.items()}}
        r = requests.post(base + path, data=params, timeout=10,
                          headers={"X-Twilio-Signature": sign(base + path, params)})
        assert r.status_code == 200, r.text
        return r.text

    api.hold = threading.Event()
    first = post("/voice", From="+14155550100", To="+15005550006")
    assert "One moment while I look that up." in first and "/voice/request?s=1" in first
    assert api.held.acquire(timeout=10)
    api.hold.set()
    assert "Your order is shipped." in post("/voice/request?s=1")
    assert api.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"
