"""The Twilio webhooks on the Flask test client, with a real Redis and a real SQLite store."""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET

import pytest
import redis

from ivr.calllog.recorder import STREAM
from ivr.calllog.store import Store
from tests.conftest import PUBLIC, TOKEN, Twilio, free_port, sign

CALLER = {"From": "+14155550100", "To": "+15005550006"}
ENDPOINTS = ["/voice", "/voice/gather?s=1", "/voice/queue/wait?s=1", "/voice/queue/left?s=1",
             "/voice/dial?s=1", "/voice/record?s=1", "/voice/whisper?call=CA1", "/voice/status",
             "/voice/fallback", "/voice/fallback/done"]


def parse(response) -> ET.Element:
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/xml"
    root = ET.fromstring(response.data)
    assert root.tag == "Response"
    return root


def said(root: ET.Element) -> str:
    return " ".join(e.text or "" for e in root.iter("Say"))


@pytest.fixture(autouse=True)
def _open_hours(open_hours):
    pass


def flush(app) -> Store:
    svc = app.extensions["ivr"]
    svc.migrate()
    svc.recorder().flush()
    return svc.store


def test_a_call_end_to_end(app, twilio):
    root = parse(twilio.post("/voice", CallSid="CA100", **CALLER))
    assert said(root).startswith("Hi Ada, thanks for calling Northwind Fibre.")
    gather = root.find("Gather")
    assert gather.get("action") == "/voice/gather?s=1"
    assert gather.get("input") == "dtmf speech" and gather.get("actionOnEmptyResult") == "true"
    assert "billing" in gather.get("hints")

    root = parse(twilio.post("/voice/gather?s=1", CallSid="CA100", SpeechResult="I was charged twice",
                             Confidence="0.91"))
    enqueue = root.find("Enqueue")
    assert enqueue.text == "billing"
    assert enqueue.get("waitUrl") == "/voice/queue/wait?s=2"

    wait = parse(twilio.post("/voice/queue/wait?s=2", CallSid="CA100", QueuePosition="2",
                             QueueTime="15", AvgQueueTime="60", CurrentQueueSize="3"))
    assert said(wait).startswith("You are number 2 in line.")
    assert wait.find(".//Play") is not None  # never silence while waiting (inside a callback offer)

    assert twilio.post("/voice/queue/left?s=2", CallSid="CA100", QueueResult="bridged",
                       QueueTime="40").status_code == 200
    assert twilio.post("/voice/status", CallSid="CA100", CallStatus="completed",
                       CallDuration="240").status_code == 204

    store = flush(app)
    call = store.call("CA100")
    assert call["from_number"] == "+14155550100" and call["caller_known"] is True
    assert call["customer_id"] == "C-1001" and call["flow"] == "support"
    assert call["duration_s"] == 240 and call["status"] == "completed"
    assert call["outcome"] == "queued" and call["last_node"] == "billing_queue"
    steps = store.steps("CA100")
    assert [s["seq"] for s in steps] == list(range(1, len(steps) + 1))
    speech = next(s for s in steps if s["event"] == "speech")
    assert speech["speech"] == "I was charged twice" and speech["confidence"] == pytest.approx(0.91)
    assert speech["intent"] == "billing" and speech["node"] == "main_menu"
    assert [s["event"] for s in steps if s["node"] == "billing_queue"] == [
        "enter", "queue_wait", "queue_left", "hangup"]


def test_anonymous_caller_is_unknown_not_an_error(app, twilio):
    root = parse(twilio.post("/voice", CallSid="CA101", From="Anonymous", To="+15005550006"))
    assert said(root).startswith("Thanks for calling Northwind Fibre.")
    root = parse(twilio.post("/voice", CallSid="CA102", From="+266696687", To="+15005550006"))
    assert "Hi " not in said(root)
    assert flush(app).call("CA101")["from_number"] is None


@pytest.mark.parametrize("path", ENDPOINTS)
def test_every_endpoint_rejects_unsigned_requests(twilio, path, caplog):
    with caplog.at_level(logging.WARNING, logger="ivr.security"):
        assert twilio.post(path, signed=False, CallSid="CA1", **CALLER).status_code == 403
    # the logger and words the deployment guide tells operators to alert on
    assert [r.name for r in caplog.records] == ["ivr.security"]
    assert caplog.records[0].getMessage().startswith("rejected unsigned or badly signed request")
    bad = twilio.client.post(path, data={"CallSid": "CA1"}, headers={"X-Twilio-Signature": "Zm9v"})
    assert bad.status_code == 403


def test_signature_over_tampered_params_is_rejected(twilio):
    params = {"CallSid": "CA1", **CALLER}
    signature = sign(PUBLIC + "/voice", params)
    response = twilio.client.post("/voice", data={**params, "From": "+19995550000"},
                                  headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403


def test_a_repeated_parameter_is_signed_with_all_its_values(app):
    from twilio.request_validator import RequestValidator
    from werkzeug.datastructures import MultiDict

    form = MultiDict([("CallSid", "CA105"), ("From", "+14155550100"), ("To", "+15005550006"),
                      ("StatusCallbackEvent", "initiated"), ("StatusCallbackEvent", "ringing")])
    signature = RequestValidator(TOKEN).compute_signature("https://ivr.example.test/voice", form)
    r = app.test_client().post("/voice", data=form, headers={"X-Twilio-Signature": signature})
    assert r.status_code == 200


def test_our_signature_is_the_twilio_librarys():
    """The server computes signatures itself (for speed): it must agree with twilio's own."""
    import random

    from twilio.request_validator import RequestValidator
    from werkzeug.datastructures import MultiDict

    from ivr.web.signatures import signature

    rng = random.Random(7)
    alphabet = "abcXYZ019+ &=%?/éü☎"
    for _ in range(300):
        pairs = [(rng.choice(["CallSid", "From", "SpeechResult", "Digits", "a", "ä", "Z"]),
                  "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))))
                 for _ in range(rng.randint(0, 6))]
        form = MultiDict(pairs)
        url = "https://ivr.example.test/voice/gather?s=" + str(rng.randint(0, 9))
        assert signature(TOKEN, url, form) == RequestValidator(TOKEN).compute_signature(url, form)
        plain = dict(pairs)
        assert signature(TOKEN, url, plain) == RequestValidator(TOKEN).compute_signature(url, plain)


def test_behind_a_proxy_the_url_is_rebuilt_from_forwarded_headers(make_app):
    app = make_app(public_url="")
    client = app.test_client()
    params = {"CallSid": "CA103", **CALLER}
    signature = sign("https://support.example.org/voice", params)
    headers = {"X-Twilio-Signature": signature, "X-Forwarded-Proto": "https",
               "X-Forwarded-Host": "support.example.org"}
    assert client.post("/voice", data=params, headers=headers).status_code == 200
    # the same request without the proxy's headers looks like http://localhost: rejected
    assert client.post("/voice", data=params,
                       headers={"X-Twilio-Signature": signature}).status_code == 403


def test_webhooks_signed_with_a_twilio_shared_key(make_app, caplog):
    """A Twilio Webhook Setting can sign with a SharedKey and HMAC-SHA256 instead of the auth
    token: the header names the key, TWILIO_WEBHOOK_SHARED_KEYS holds its secret."""
    from twilio.request_validator import RequestValidator

    # secrets are base64 and may end in "=": the key id is separated by ":"
    app = make_app(twilio_webhook_shared_keys="webhooks_sharedkey_old:s3cret/old==, "
                                              "webhooks_sharedkey_new:s3cret+new=")
    client = app.test_client()
    params = {"CallSid": "CA130", **CALLER}
    url = PUBLIC + "/voice"

    def post(secret, key, algorithm="HMAC_SHA256", claim=None, **extra):
        signature = RequestValidator(secret).compute_signature(url, params, algorithm)
        settings = f"key={key},algorithm={claim or algorithm}"
        return client.post("/voice", data={**params, **extra}, headers={
            "X-Twilio-Signature": signature, "X-Twilio-Webhooks-Signature-Settings": settings})

    assert post("s3cret+new=", "webhooks_sharedkey_new").status_code == 200
    assert post("s3cret/old==", "webhooks_sharedkey_old", "HMAC_SHA1").status_code == 200  # rotation
    assert post("s3cret/old==", "webhooks_sharedkey_new").status_code == 403  # the other key's
    assert post(TOKEN, "webhooks_sharedkey_new").status_code == 403  # the header picks the secret
    assert post("s3cret+new=", "webhooks_sharedkey_new", From="+19995550000").status_code == 403
    assert post("s3cret+new=", "webhooks_sharedkey_new", claim="HMAC_MD5").status_code == 403
    with caplog.at_level(logging.ERROR, logger="ivr.security"):
        assert post("s3cret-x", "webhooks_sharedkey_unknown").status_code == 403
        assert post("s3cret-x", "webhooks_sharedkey_unknown").status_code == 403
    told = [r.getMessage() for r in caplog.records if "webhooks_sharedkey_unknown" in r.getMessage()]
    assert len(told) == 1 and "TWILIO_WEBHOOK_SHARED_KEYS" in told[0]  # said once, with the fix
    # the auth token still signs webhooks without the header, or with an empty one
    for extra in ({}, {"X-Twilio-Webhooks-Signature-Settings": ""}):
        assert client.post("/voice", data=params, headers={"X-Twilio-Signature": sign(url, params),
                                                           **extra}).status_code == 200
    # made-up key ids cannot fill the log or the memory
    for i in range(100):
        post("s3cret-x", f"made_up_{i}" + "x" * 5000)
    assert len([r for r in caplog.records if "made_up_" in r.getMessage()]) <= 20


def test_malformed_shared_keys_are_refused_at_start():
    from ivr.config import Config

    with pytest.raises(ValueError, match="entry 2: no secret after 'k2:'"):
        Config(twilio_webhook_shared_keys="k1:a,k2:").check()
    with pytest.raises(ValueError, match="names 'k1' twice") as raised:
        Config(twilio_webhook_shared_keys="k1:secret-one,k1:secret-two").check()
    assert "secret-" not in str(raised.value)  # secrets never appear in messages
    assert Config(twilio_webhook_shared_keys=" c2VjcmV0Cg== ").shared_keys == {"": "c2VjcmV0Cg=="}


def test_published_under_a_path_every_twiml_url_keeps_it(make_app):
    """PUBLIC_URL https://support.example.org/ivr: the proxy strips /ivr, and Twilio resolves
    the URLs in our TwiML against the host, so they must start with /ivr/voice."""
    client = make_app(public_url="https://support.example.org/ivr/").test_client()

    def post(path, **params):
        params = {"CallSid": "CA104", **CALLER, **params}
        signature = sign("https://support.example.org/ivr" + path, params)
        r = client.post(path, data=params, headers={"X-Twilio-Signature": signature})
        assert r.status_code == 200, r.data
        return ET.fromstring(r.data)

    first = post("/voice")
    assert first.find("Gather").get("action") == "/ivr/voice/gather?s=1"
    queued = post("/voice/gather?s=1", Digits="1")
    enqueue = queued.find("Enqueue")
    assert enqueue.get("action").startswith("/ivr/voice/queue/left?")
    assert enqueue.get("waitUrl").startswith("/ivr/voice/queue/wait?")


def test_a_redis_out_of_reach_at_start_is_said_at_start(make_app, caplog):
    """A mistyped REDIS_URL shows in the log when the server starts, not first as callers
    hearing the apology; the server still starts and answers them safely."""
    from tests.conftest import free_port

    with caplog.at_level(logging.ERROR, logger="ivr"):
        app = make_app(redis_url=f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    assert "cannot reach Redis at redis://:***@127.0.0.1:" in caplog.text
    assert "hunter2" not in caplog.text
    from tests.conftest import PUBLIC, sign

    params = {"CallSid": "CA104", **CALLER}
    response = app.test_client().post("/voice", data=params,
                                      headers={"X-Twilio-Signature": sign(PUBLIC + "/voice", params)})
    assert response.status_code == 200 and "technical difficulties" in response.text


def test_validation_off_is_explicit_and_warns(make_app, caplog):
    with caplog.at_level(logging.WARNING, logger="ivr"):
        app = make_app(validate_signatures=False)
    assert "signature validation is OFF" in caplog.text
    response = app.test_client().post("/voice", data={"CallSid": "CA104", **CALLER})
    assert response.status_code == 200


def test_retried_webhook_gets_the_same_answer_and_runs_once(app, twilio):
    first = twilio.post("/voice", CallSid="CA105", **CALLER)
    again = twilio.post("/voice", CallSid="CA105", **CALLER)
    assert again.data == first.data
    step = twilio.post("/voice/gather?s=1", CallSid="CA105", Digits="3")
    retry = twilio.post("/voice/gather?s=1", CallSid="CA105", Digits="3")
    assert retry.data == step.data and b"<Enqueue" in retry.data
    steps = flush(app).steps("CA105")
    assert [s["event"] for s in steps].count("digits") == 1
    assert [s["node"] for s in steps].count("main_menu") == 2  # entered once, answered once


def test_redis_down_the_caller_hears_an_apology_and_a_person(make_app):
    port = free_port()  # nothing listens here
    app = make_app(redis_url=f"redis://127.0.0.1:{port}/0")
    client = Twilio(app.test_client())
    root = parse(client.post("/voice", CallSid="CA106", **CALLER))
    assert "we're having technical difficulties" in said(root)
    assert root.find("Dial").text == "+15005550010"
    root = parse(client.post("/voice/gather?s=1", CallSid="CA106", Digits="1"))
    assert root.find("Dial") is not None
    assert app.test_client().get("/healthz").status_code == 503


def test_without_fallback_number_the_apology_offers_voicemail(make_app):
    app = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0", fallback_number="")
    root = parse(Twilio(app.test_client()).post("/voice", CallSid="CA107", **CALLER))
    assert root.find("Record") is not None and "leave a message" in said(root)


def test_database_down_calls_go_on_and_the_log_waits_in_redis(make_app, redis_url, tmp_path):
    app = make_app(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test")
    client = Twilio(app.test_client())
    parse(client.post("/voice", CallSid="CA108", **CALLER))
    parse(client.post("/voice/gather?s=1", CallSid="CA108", Digits="2"))
    r = redis.Redis.from_url(redis_url)
    assert r.xlen(STREAM) == 2  # one entry per webhook (call_started + steps), waiting for the database
    from ivr.calllog.recorder import Recorder

    store = Store(f"sqlite:///{tmp_path}/recovered.db")
    store.migrate()
    assert Recorder(r, store).flush() >= 6
    assert store.call("CA108")["flow"] == "support"
    assert r.xlen(STREAM) == 0


def test_status_callback_for_an_unknown_call_is_still_recorded(app, twilio):
    assert twilio.post("/voice/status", CallSid="CA109", CallStatus="no-answer").status_code == 204
    assert twilio.post("/voice/status", CallSid="CA109", CallStatus="ringing").status_code == 204
    assert flush(app).call("CA109")["status"] == "no-answer"


def test_whisper_tells_the_agent_who_calls_and_why(app, twilio, flows_dir):
    flow = flows_dir / "support.yaml"
    flow.write_text(flow.read_text().replace(
        "    queue:\n      name: billing\n      say: \"Connecting you to our billing team.\"",
        "    transfer:\n      to: \"+15005550012\"\n      say: \"Connecting you to our billing team.\""
    ).replace("      wait_say: \"Thanks for waiting. Your call matters to us, and a billing specialist "
              "will be with you shortly.\"\n      announce_wait: true\n      callback:\n"
              "        offer_after: 120           # offer when the estimated wait is over 2 minutes\n",
              ""))
    app.extensions["ivr"].registry.reload()
    parse(twilio.post("/voice", CallSid="CA110", **CALLER))
    root = parse(twilio.post("/voice/gather?s=1", CallSid="CA110", Digits="1"))
    number = root.find("Dial/Number")
    assert number.text == "+15005550012" and number.get("url") == "/voice/whisper?call=CA110&s=2"
    whisper = parse(twilio.post("/voice/whisper?call=CA110&s=2", CallSid="CA999"))
    assert said(whisper) == "Call from Ada Lovelace, customer C - 1 0 0 1. Calling about billing."
    done = parse(twilio.post("/voice/dial?s=2", CallSid="CA110", DialCallStatus="completed",
                             DialCallDuration="300"))
    assert done.find("Hangup") is not None
    twilio.post("/voice/status", CallSid="CA110", CallStatus="completed", CallDuration="320")
    assert flush(app).call("CA110")["outcome"] == "transferred"


def test_changed_flow_is_reloaded_and_a_broken_one_never_replaces_it(app, twilio, flows_dir, caplog):
    registry = app.extensions["ivr"].registry
    registry.interval = 0
    flow = flows_dir / "support.yaml"
    original = flow.read_text()
    flow.write_text(original.replace("Thanks for calling Northwind Fibre.\"",
                                     "Welcome to the new Northwind Fibre line.\""))
    time.sleep(0.01)
    root = parse(twilio.post("/voice", CallSid="CA111", From="Anonymous", To="+15005550006"))
    assert said(root).startswith("Welcome to the new Northwind Fibre line.")
    with caplog.at_level(logging.ERROR, logger="ivr.flows"):
        flow.write_text(original.replace("next: main_menu", "next: main_manu", 1))
        time.sleep(0.01)
        root = parse(twilio.post("/voice", CallSid="CA112", From="Anonymous", To="+15005550006"))
    assert said(root).startswith("Welcome to the new Northwind Fibre line.")  # last good version
    assert "failed its check and was NOT loaded" in caplog.text
    assert "there is no node 'main_manu' (did you mean 'main_menu'?)" in caplog.text


def test_a_new_flow_never_takes_over_a_number_another_flow_answers(app, twilio, flows_dir, caplog):
    """Which flow answers the support line must not depend on the order files load in: a
    file claiming a number a loaded flow answers is refused, loudly, and the line keeps its
    flow; the problems between flows are logged when they appear, not at every check."""
    registry = app.extensions["ivr"].registry
    registry.interval = 0
    with caplog.at_level(logging.ERROR, logger="ivr.flows"):
        (flows_dir / "aaa-promo.yaml").write_text(
            'id: promo\nnumbers: ["+1 500 555 0006"]\nnodes:\n'
            "  hi: {say: Promo!, next: gone}\n  gone: {goto_flow: nosuchflow}\n")
        time.sleep(0.01)
        root = parse(twilio.post("/voice", CallSid="CA120", From="Anonymous", To="+15005550006"))
        assert not said(root).startswith("Promo")
        assert registry.get("promo") is None
        assert "aaa-promo.yaml:2:11: error: +15005550006 is already answered by flow 'support'" in caplog.text
        caplog.clear()
        (flows_dir / "aaa-promo.yaml").write_text(
            'id: promo\nnumbers: ["+15005550099"]\nnodes:\n'
            "  hi: {say: Promo!, next: gone}\n  gone: {goto_flow: nosuchflow}\n")
        time.sleep(0.01)
        for sid in ("CA121", "CA122", "CA123"):
            twilio.post("/voice", CallSid=sid, From="Anonymous", To="+15005550006")
    assert registry.get("promo") is not None  # its own number: loaded
    assert caplog.text.count("goes to flow 'nosuchflow', which is not loaded") == 1


def _numbered_flow(folder, name: str, flow_id: str, *numbers: str) -> None:
    listed = ", ".join(f'"{n}"' for n in numbers)
    (folder / name).write_text(f"id: {flow_id}\nnumbers: [{listed}]\nnodes:\n  hi: {{hangup: {flow_id}.}}\n")


def test_a_number_moved_between_files_reaches_its_new_flow(tmp_path):
    """Saved in either order, a number moved from one file to another ends with the file that
    now lists it: the refused file is tried again once the other gives the number up."""
    from ivr.flows.registry import FlowRegistry

    _numbered_flow(tmp_path, "billing.yaml", "billing", "+15005550007")
    _numbered_flow(tmp_path, "support.yaml", "support", "+15005550006")
    registry = FlowRegistry(tmp_path, interval=0)
    _numbered_flow(tmp_path, "billing.yaml", "billing", "+15005550007", "+15005550006")
    registry.reload()
    assert registry.for_number("+15005550006").id == "support"  # still listed there: refused
    time.sleep(0.01)
    _numbered_flow(tmp_path, "support.yaml", "support", "+15005550008")
    registry.reload()  # support gives it up; billing, refused before, is tried again
    registry.reload()
    assert registry.for_number("+15005550006").id == "billing"
    assert registry.for_number("+15005550007").id == "billing"


def test_a_restart_with_two_files_claiming_a_number_keeps_both_flows(tmp_path, caplog):
    from ivr.flows.registry import FlowRegistry

    _numbered_flow(tmp_path, "billing.yaml", "billing", "+15005550006", "+15005550007")
    _numbered_flow(tmp_path, "support.yaml", "support", "+15005550006", "+15005550008")
    with caplog.at_level(logging.ERROR, logger="ivr.flows"):
        registry = FlowRegistry(tmp_path)
    assert set(registry.flows) == {"billing", "support"}  # neither flow is dropped whole
    assert registry.for_number("+15005550006").id == "billing"  # the first by file name
    assert registry.for_number("+15005550008").id == "support"
    assert "+15005550006 is listed by flow 'billing'" in caplog.text


def test_a_new_file_takes_a_number_from_a_deleted_file(tmp_path):
    from ivr.flows.registry import FlowRegistry

    _numbered_flow(tmp_path, "support.yaml", "support", "+15005550006")
    registry = FlowRegistry(tmp_path, interval=0)
    (tmp_path / "support.yaml").unlink()  # the deleted flow keeps serving until a restart...
    assert registry.for_number("+15005550006").id == "support"
    _numbered_flow(tmp_path, "support-v2.yaml", "support2", "+15005550006")
    registry.reload()
    assert registry.for_number("+15005550006").id == "support2"  # ...but gives way to a new file


def test_a_renamed_flow_file_keeps_being_served_and_reloaded(app, twilio, flows_dir, caplog):
    registry = app.extensions["ivr"].registry
    registry.interval = 0
    renamed = flows_dir / "support-2026.yaml"
    (flows_dir / "support.yaml").rename(renamed)
    renamed.write_text(renamed.read_text().replace("Thanks for calling Northwind Fibre.\"",
                                                   "Welcome to the renamed line.\""))
    time.sleep(0.01)
    with caplog.at_level(logging.ERROR, logger="ivr.flows"):
        root = parse(twilio.post("/voice", CallSid="CA114", From="Anonymous", To="+15005550006"))
        assert said(root).startswith("Welcome to the renamed line.")
        assert "already used by" not in caplog.text
    registry.reload()
    assert registry.get("support").file.endswith("support-2026.yaml")


def test_fallback_url_apologises_and_transfers_when_our_answer_was_at_fault(twilio):
    # 12100: Twilio could not parse the TwiML we sent; running the webhook again would repeat it
    root = parse(twilio.post("/voice/fallback", CallSid="CA113", ErrorCode="12100",
                             ErrorUrl=f"{PUBLIC}/voice", **CALLER))
    assert "we're having technical difficulties" in said(root)
    assert root.find("Dial").text == "+15005550010"


@pytest.mark.parametrize("failed", ["/voice/status", "/voice/fallback", "/voice/nowhere",
                                    "/dashboard/", "/other/voice", "/voice/queue/wait?s=2",
                                    "/voice/queue/offer?s=2", "/voice/whisper?call=CA1"])
def test_fallback_runs_only_our_call_webhooks_again(twilio, failed):
    root = parse(twilio.post("/voice/fallback", CallSid="CA120", ErrorCode="11200",
                             ErrorUrl=f"{PUBLIC}{failed}", **CALLER))
    assert root.find("Dial").text == "+15005550010"


def test_fallback_runs_a_webhook_twilio_could_not_fetch_and_the_call_goes_on(app, twilio):
    """A dropped connection to the Voice URL (11205) or an error status (11200): the caller
    gets the menu from the fallback URL instead of an apology, and the call carries on."""
    root = parse(twilio.post("/voice/fallback", CallSid="CA121", ErrorCode="11205",
                             ErrorUrl=f"{PUBLIC}/voice", **CALLER))
    assert said(root).startswith("Hi Ada") and root.find("Gather") is not None
    root = parse(twilio.post("/voice/gather?s=1", CallSid="CA121", Digits="1"))
    assert root.find("Enqueue") is not None
    steps = flush(app).steps("CA121")
    assert [s["event"] for s in steps].count("digits") == 1


def test_fallback_answers_a_step_the_failed_request_stored_as_before(app, twilio):
    """The answer was lost on its way back (the step did run): the fallback gives the same
    answer without running the step twice, reading the step token from the failed URL."""
    parse(twilio.post("/voice", CallSid="CA122", **CALLER))
    lost = twilio.post("/voice/gather?s=1", CallSid="CA122", Digits="1")
    again = twilio.post("/voice/fallback", CallSid="CA122", Digits="1", ErrorCode="11200",
                        ErrorUrl=f"{PUBLIC}/voice/gather?s=1")
    assert again.data == lost.data and b"<Enqueue" in again.data
    steps = flush(app).steps("CA122")
    assert [s["event"] for s in steps].count("digits") == 1


def test_fallback_runs_a_step_the_failed_request_never_stored(app, twilio):
    """The key press never reached the server: the fallback request carries it, and the step
    runs with the failed URL's step token (this URL has none)."""
    parse(twilio.post("/voice", CallSid="CA126", **CALLER))
    root = parse(twilio.post("/voice/fallback", CallSid="CA126", Digits="1", ErrorCode="11205",
                             ErrorUrl="https://other-name.example.test/voice/gather?s=1"))
    assert root.find("Enqueue").text == "billing"
    steps = flush(app).steps("CA126")
    assert [s["event"] for s in steps].count("digits") == 1


def test_fallback_without_what_the_caller_did_apologises(app, twilio):
    """Without Digits or SpeechResult the menu would run as if the caller had said nothing."""
    first = parse(twilio.post("/voice", CallSid="CA127", **CALLER))
    root = parse(twilio.post("/voice/fallback", CallSid="CA127", ErrorCode="11200",
                             ErrorUrl=f"{PUBLIC}/voice/gather?s=1"))
    assert root.find("Dial").text == "+15005550010" and root.find("Gather") is None
    assert first.find("Gather") is not None


def test_fallback_waits_only_briefly_for_a_request_still_holding_the_call(app, twilio):
    """Twilio gave up on a request that still runs: the fallback must answer within Twilio's
    own 15 s, so it waits 2 s for the call's lock, not the 8 s a webhook waits."""
    parse(twilio.post("/voice", CallSid="CA128", **CALLER))
    calls = app.extensions["ivr"].calls
    with calls.lock("CA128"):  # the slow request
        started = time.monotonic()
        root = parse(twilio.post("/voice/fallback", CallSid="CA128", Digits="1", ErrorCode="11200",
                                 ErrorUrl=f"{PUBLIC}/voice/gather?s=1"))
        waited = time.monotonic() - started
    assert root.find("Dial").text == "+15005550010"
    assert 1.5 < waited < 5


def test_fallback_that_would_refuse_the_request_again_apologises(twilio):
    root = parse(twilio.post("/voice/fallback", ErrorCode="11200", ErrorUrl=f"{PUBLIC}/voice",
                             **CALLER))  # no CallSid: /voice answers 400
    assert root.find("Dial").text == "+15005550010"


def test_fallback_that_fails_again_apologises_and_transfers(make_app):
    app = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    root = parse(Twilio(app.test_client()).post(
        "/voice/fallback", CallSid="CA123", ErrorCode="11200", ErrorUrl=f"{PUBLIC}/voice", **CALLER))
    assert "we're having technical difficulties" in said(root)
    assert root.find("Dial").text == "+15005550010"


def test_missing_call_sid_is_a_clear_400(twilio):
    response = twilio.post("/voice", From="+14155550100")
    assert response.status_code == 400 and b"missing its call id" in response.data


def test_live_state_is_small_and_expires(app, twilio, redis_url):
    parse(twilio.post("/voice", CallSid="CA114", **CALLER))
    r = redis.Redis.from_url(redis_url)
    assert r.memory_usage("ivr:call:CA114") <= 4096
    assert 0 < r.ttl("ivr:call:CA114") <= app.config["IVR"].state_ttl


def test_fail_safe_uses_the_flow_fallback_number(make_app, redis_url):
    app = make_app(fallback_number="")
    client = Twilio(app.test_client())
    parse(client.post("/voice", CallSid="CA115", **CALLER))
    # the live state is corrupted mid-call: the flow's own fallback number takes the caller
    redis.Redis.from_url(redis_url).hset("ivr:call:CA115", "state", '{"flow": "support"}')
    root = parse(client.post("/voice/gather?s=1", CallSid="CA115", Digits="1"))
    assert root.find("Dial").text == "+15005550010"


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
    try:
        client = redis_lib.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        calls = CallStates(client)

        def take_lock_on_a_connection_made_before():
            with calls.lock("CAHUNG"):
                calls.save("CAHUNG", {"n": 1}, [], 1, "<Response/>")
            if not tls:
                assert calls.scripts._connection()._sock.gettimeout() is None  # kernel-timed
            os.kill(server.proc.pid, signal.SIGSTOP)
            with calls.lock("CAHUNG"):
                pass

        # In a thread of its own (the connections are per thread): a hang fails the test
        # instead of stalling it.
        error, seconds = _run_for_at_most(5, take_lock_on_a_connection_made_before)
        assert isinstance(error, (redis_lib.ConnectionError, redis_lib.TimeoutError)), error
        assert seconds < 0.9  # one wait of 0.5 s: not sent again, not forever
        os.kill(server.proc.pid, signal.SIGCONT)
        # (the resumed Redis ran the queued lock of CAHUNG: held until it expires)
        with calls.lock("CAOTHER"):  # the next webhook reconnects
            calls.save("CAOTHER", {"n": 2}, [], 1, "<Response/>")
        assert calls.load("CAOTHER")[:2] == ({"n": 2}, 1)

        # Redis hangs after the lock is taken: the save fails after one wait, and the lock
        # is left to expire rather than waited on again.
        def save_after_hang():
            with calls.lock("CATHIRD"):
                os.kill(server.proc.pid, signal.SIGSTOP)
                hung["at"] = time.monotonic()
                calls.save("CATHIRD", {"n": 3}, [], 1, "<Response/>")

        hung: dict = {}
        error, _ = _run_for_at_most(5, save_after_hang)
        assert isinstance(error, (redis_lib.ConnectionError, redis_lib.TimeoutError)), error
        assert time.monotonic() - hung["at"] < 0.9
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


def test_form_bodies_read_as_urllib_reads_them():
    import random
    from urllib.parse import parse_qsl, quote_plus

    from ivr.web.webhook import parse_form

    rng = random.Random(11)
    pieces = ["a", "=", "&", "%", "%2", "%41", "%zz", "+", " ", "é", "%C3%A9", "%FF", "==", ""]
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert parse_form(text) == parse_qsl(text, keep_blank_values=True), text
    text = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in [("From", "+1 415"), ("x", "a&b=c")])
    assert parse_form(text) == [("From", "+1 415"), ("x", "a&b=c")]


def test_webhooks_read_their_form_and_url_as_werkzeug_does():
    """Webhooks are read from the WSGI environ without Flask: the same form (every value of a
    repeated name kept for the signature, the first one answered), the same URL parameters."""
    from werkzeug import Request
    from werkzeug.test import EnvironBuilder

    from ivr.web.webhook import Webhook

    def environ(query: str = "s=2&speech=caf%C3%A9+au+lait", **kw):
        kw.setdefault("data", "CallSid=CA1&From=%2B14155550100&Digits=1&Digits=2&x=&%zz=caf%C3%A9")
        kw.setdefault("content_type", "application/x-www-form-urlencoded")
        return EnvironBuilder(path="/voice/gather", query_string=query, method="POST", **kw).get_environ()

    ours, theirs = Webhook(environ()), Request(environ())
    assert ours.pairs == list(theirs.form.items(multi=True))
    assert ours.form == theirs.form.to_dict() and ours.form["From"] == "+14155550100"
    assert ours.form["Digits"] == "1"
    for query in ("s=2", "s=2&speech=caf%C3%A9+au+lait", "a=1;b=2&a=3", "", "x=%zz"):
        assert Webhook(environ(query)).args == Request(environ(query)).args.to_dict(), query
    assert Webhook(environ("s=%FF")).args == {"s": "\ufffd"}  # not UTF-8: as urllib reads it
    # a multipart form is not Twilio's way, but it is a form
    multipart = environ(data={"CallSid": "CA2", "Digits": "5"}, content_type="multipart/form-data")
    assert Webhook(multipart).form == {"CallSid": "CA2", "Digits": "5"}
    assert Webhook(environ(content_type="application/json")).form == {}


def test_a_webhook_body_over_the_limit_is_refused_unread(app):
    from ivr.web.webhook import MAX_BODY

    body = "CallSid=CA1&SpeechResult=" + "a" * MAX_BODY
    r = app.test_client().post("/voice/gather?s=1", data=body, headers={"X-Twilio-Signature": "x"},
                               content_type="application/x-www-form-urlencoded")
    assert r.status_code == 413


def test_a_body_that_cannot_be_read_for_the_signature_check_is_refused_not_answered(app):
    """A chunked multipart body over the limit fails while the signature is being checked:
    the request was never verified, so it gets a refusal, not the fail-safe TwiML (which
    dials the fallback number)."""
    import io

    from werkzeug.test import EnvironBuilder, run_wsgi_app

    from ivr.web.webhook import MAX_BODY

    environ = EnvironBuilder(path="/voice", method="POST", headers={"X-Twilio-Signature": "bogus"},
                             data={"CallSid": "CA1", "Junk": "a" * (MAX_BODY + 1024)},
                             content_type="multipart/form-data").get_environ()
    body = environ["wsgi.input"].read()
    del environ["CONTENT_LENGTH"]  # as a chunked body arrives: its end told by the server
    environ["wsgi.input"], environ["wsgi.input_terminated"] = io.BytesIO(body), True
    chunks, status, _ = run_wsgi_app(app.wsgi_app, environ)
    assert status.split()[0] == "413", status
    assert b"<Response>" not in b"".join(chunks)


def test_webhook_paths_answer_post_only(app):
    client = app.test_client()
    r = client.get("/voice")
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert client.post("/voice/nothing-here").status_code == 404  # Flask's, as any unknown path
    assert client.get("/healthz").status_code in (200, 503)  # everything else is Flask's


def test_webhook_text_arrives_exactly_as_twilio_sent_it(app, twilio):
    """Url-encoded bodies are read in one step: accents, symbols and '+' come through intact."""
    parse(twilio.post("/voice", CallSid="CA120", **CALLER))
    words = "café, naïve & 1+1=2 ☎ ok%"
    parse(twilio.post("/voice/gather?s=1", CallSid="CA120", SpeechResult=words, Confidence="0.8"))
    steps = flush(app).steps("CA120")
    assert [s["speech"] for s in steps if s["speech"]] == [words]  # (no menu choice matched it)


def test_a_new_flow_refused_for_its_directory_loads_once_the_directory_is_fixed(tmp_path, caplog):
    from ivr.flows.registry import FlowRegistry

    (tmp_path / "people.csv").write_text("phone,name\n+14155550100,Ada\n")  # no first_name column
    (tmp_path / "sales.yaml").write_text("id: sales\ndirectory: people.csv\nnodes:\n  x: {hangup: Bye.}\n")
    with caplog.at_level(logging.ERROR, logger="ivr.flows"):
        registry = FlowRegistry(tmp_path, interval=0)
        registry.reload()
        registry.reload()
    assert registry.get("sales") is None
    assert caplog.text.count("failed its check") == 1  # said once, not on every check
    time.sleep(0.01)
    (tmp_path / "people.csv").write_text("phone,first_name\n+14155550100,Ada\n")
    registry.reload()
    assert registry.get("sales") is not None


def test_fallback_finds_the_failed_webhook_under_the_path_the_server_is_published_at(make_app):
    app = make_app(public_url=f"{PUBLIC}/ivr")  # a proxy forwards /ivr/voice... as /voice...
    twilio = Twilio(app.test_client(), base=f"{PUBLIC}/ivr")
    root = parse(twilio.post("/voice/fallback", CallSid="CA124", ErrorCode="11200",
                             ErrorUrl=f"{PUBLIC}/ivr/voice", **CALLER))
    assert root.find("Gather") is not None
    assert root.find("Gather").get("action").startswith("/ivr/voice/gather")
    root = parse(twilio.post("/voice/fallback", CallSid="CA125", ErrorCode="11200",
                             ErrorUrl=f"{PUBLIC}/voice", **CALLER))  # not under /ivr: not ours
    assert root.find("Dial").text == "+15005550010"


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
