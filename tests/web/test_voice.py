"""The voice blueprint's webhooks on the Flask test client, with a real Redis and a real
SQLite store: calls from first ring to hang-up, retries, the fail-safe answers and the
fallback URL."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from twilio.twiml import voice_response as V

from ivr.calllog.recorder import STREAM
from ivr.calllog.store import Store
from tests.conftest import PUBLIC, Twilio, free_port, sign
from tests.webutil import CALLER, flush, parse, said


@pytest.fixture(autouse=True)
def _open_hours(open_hours):
    pass


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


def test_a_call_twilio_reports_failed_is_failed_not_abandoned(app, twilio):
    parse(twilio.post("/voice", CallSid="CA120", **CALLER))
    assert twilio.post("/voice/status", CallSid="CA120", CallStatus="failed").status_code == 204
    call = flush(app).call("CA120")
    assert call["status"] == "failed" and call["outcome"] == "failed"
    assert call["last_node"] == "main_menu"


def test_the_apology_fits_how_the_caller_answered_the_menu(app, twilio):
    """A wrong key is not answered with "you can also use the keypad"; words not understood are."""
    parse(twilio.post("/voice", CallSid="CA121", **CALLER))
    pressed = parse(twilio.post("/voice/gather?s=1", CallSid="CA121", Digits="9"))
    assert said(pressed).startswith("Sorry, 9 isn't one of the choices.")
    assert "keypad" not in said(pressed) and pressed.find("Gather") is not None
    spoken = parse(twilio.post("/voice/gather?s=2", CallSid="CA121", SpeechResult="purple elephants",
                               Confidence="0.9"))
    assert said(spoken).startswith("Sorry, I didn't catch that. You can also use the keypad.")


def test_hold_music_cycles_tell_the_truth_and_grow_shorter(app, twilio):
    """No agent is staffed here: the caller first in line hears that the agents are busy, not
    that they are next, with a pause before the callback offer; the next cycle is shorter."""
    parse(twilio.post("/voice", CallSid="CA122", **CALLER))
    parse(twilio.post("/voice/gather?s=1", CallSid="CA122", Digits="1"))
    first = parse(twilio.post("/voice/queue/wait?s=2", CallSid="CA122", QueuePosition="1",
                              QueueTime="5", AvgQueueTime="0", CurrentQueueSize="1"))
    assert said(first).startswith("All our agents are busy right now. You'll be the first to be answered.")
    assert "next in line" not in said(first)
    offer = first.find("Gather")
    assert offer is not None and offer[0].tag == "Pause" and "press 1" in said(offer)
    again = parse(twilio.post("/voice/queue/wait?s=2", CallSid="CA122", QueuePosition="1",
                              QueueTime="45", AvgQueueTime="0", CurrentQueueSize="1"))
    assert said(again).startswith("Thanks for holding. To be called back instead, press 1")
    assert len(said(again)) < len(said(first)) / 2


def _transfer_with_whisper(flows_dir, app) -> None:
    flow = flows_dir / "support.yaml"
    flow.write_text(flow.read_text().replace(
        "    queue:\n      name: billing\n      say: \"Connecting you to our billing team.\"",
        "    transfer:\n      to: \"+15005550012\"\n      say: \"Connecting you to our billing team.\""
    ).replace("      wait_say: \"Thanks for waiting. Your call matters to us, and a billing specialist "
              "will be with you shortly.\"\n      announce_wait: true\n      callback:\n"
              "        offer_after: 120           # offer when the estimated wait is over 2 minutes\n",
              ""))
    app.extensions["ivr"].registry.reload()


def test_whisper_tells_the_agent_who_calls_and_why(app, twilio, flows_dir):
    _transfer_with_whisper(flows_dir, app)
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
    if failed.startswith("/voice/queue/"):  # on hold: out of the queue, then to a person
        assert [child.tag for child in root] == ["Leave"]
        root = parse(twilio.post("/voice/queue/left?s=2", CallSid="CA120", QueueResult="leave"))
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
    from ivr.web.voice import FALLBACK_LOCK_WAIT_S, LOCK_WAIT_S

    parse(twilio.post("/voice", CallSid="CA128", **CALLER))
    calls = app.extensions["ivr"].calls
    real_lock, asked = calls.lock, []

    def lock(sid, **kwargs):  # the real lock, noting how long each request agreed to wait
        asked.append(kwargs.get("wait_s"))
        return real_lock(sid, **kwargs)

    calls.lock = lock
    with real_lock("CA128"):  # the slow request
        root = parse(twilio.post("/voice/fallback", CallSid="CA128", Digits="1", ErrorCode="11200",
                                 ErrorUrl=f"{PUBLIC}/voice/gather?s=1"))
    assert root.find("Dial").text == "+15005550010"  # the lock was never free: the apology
    assert asked == [FALLBACK_LOCK_WAIT_S] and FALLBACK_LOCK_WAIT_S < LOCK_WAIT_S
    ordinary = parse(twilio.post("/voice/gather?s=1", CallSid="CA128", Digits="1"))
    assert ordinary.find("Enqueue") is not None and asked[-1] == LOCK_WAIT_S


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


def test_fail_safe_uses_the_flow_fallback_number(make_app, redis_url, caplog):
    app = make_app(fallback_number="", propagate_exceptions=False)  # the fail-safe is under test
    client = Twilio(app.test_client())
    parse(client.post("/voice", CallSid="CA115", **CALLER))
    # the live state is corrupted mid-call: the flow's own fallback number takes the caller
    redis.Redis.from_url(redis_url).hset("ivr:call:CA115", "state", '{"flow": "support"}')
    root = parse(client.post("/voice/gather?s=1", CallSid="CA115", Digits="1"))
    assert root.find("Dial/Number").text == "+15005550010"
    assert said(root).startswith("We're sorry, something went wrong on our side.")
    # the supervisor's log says where and why, with the traceback of what went wrong
    failed = [r for r in caplog.records if r.name == "ivr.voice" and "failed at node" in r.getMessage()]
    assert [r.getMessage() for r in failed] == [
        "call CA115: flow 'support' failed at node 'check_hours' and the caller was handed to a person: "
        "KeyError: 'node'"]
    assert isinstance(failed[0].exc_info[1], KeyError) and "Traceback" in caplog.text


def test_with_propagation_on_a_bug_reaches_the_test_instead_of_an_apology(make_app, redis_url):
    app = make_app()  # IVR_PROPAGATE_EXCEPTIONS, as every test runs
    client = Twilio(app.test_client())
    parse(client.post("/voice", CallSid="CA116", **CALLER))
    redis.Redis.from_url(redis_url).hset("ivr:call:CA116", "state", '{"flow": "support"}')
    with pytest.raises(KeyError, match="node"):
        client.post("/voice/gather?s=1", CallSid="CA116", Digits="1")
    # an outage the server plans for is still answered safely
    down = Twilio(make_app(redis_url="redis://127.0.0.1:1/0").test_client())
    assert parse(down.post("/voice", CallSid="CA117", **CALLER)).find("Dial").text == "+15005550010"


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


def test_a_forged_call_sid_stays_a_value_in_the_twiml(app, twilio, flows_dir):
    """The TwiML of common steps is cached with a stand-in for the call id: a signed request
    whose CallSid holds quotes and tags must not put its own verbs into the answer."""
    _transfer_with_whisper(flows_dir, app)
    parse(twilio.post("/voice", CallSid="CA120", **CALLER))  # fills the cache for this step
    parse(twilio.post("/voice/gather?s=1", CallSid="CA120", Digits="1"))
    forged = 'CA121"/><Redirect>https://evil.example/x</Redirect><Number url="&amp;'
    parse(twilio.post("/voice", CallSid=forged, **CALLER))
    root = parse(twilio.post("/voice/gather?s=1", CallSid=forged, Digits="1"))
    dial = root.find("Dial")
    assert [child.tag for child in dial] == ["Number"]
    assert root.find(".//Redirect") is None
    whisper = dial.find("Number").get("url")
    assert parse_qs(urlsplit(whisper).query)["call"] == [forged]


# What Twilio runs in an Enqueue's waitUrl (and the action of a <Gather> inside it).
WAIT_URL_VERBS = {verb.__name__ for verb in (V.Play, V.Say, V.Pause, V.Hangup, V.Redirect, V.Leave, V.Gather)}


def _hold_answer(response) -> ET.Element:
    root = parse(response)
    assert {child.tag for child in root} <= WAIT_URL_VERBS, response.data
    assert [child.tag for child in root] == ["Leave"]
    return root


@pytest.mark.parametrize("path", ["/voice/queue/wait?s=2", "/voice/queue/offer?s=2"])
def test_redis_down_on_hold_the_caller_leaves_the_queue_for_a_person(make_app, path):
    app = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = Twilio(app.test_client())
    _hold_answer(client.post(path, CallSid="CA130", QueuePosition="1", QueueTime="5", Digits="1"))
    root = parse(client.post("/voice/queue/left?s=2", CallSid="CA130", QueueResult="leave", QueueTime="6"))
    assert said(root).count("we're having technical difficulties") == 1
    assert root.find("Dial").text == "+15005550010"


def test_a_hold_without_live_state_leaves_the_queue_and_the_enqueue_action_apologises(app, twilio):
    _hold_answer(twilio.post("/voice/queue/wait?s=2", CallSid="CA131", QueuePosition="1", QueueTime="5"))
    root = parse(twilio.post("/voice/queue/left?s=2", CallSid="CA131", QueueResult="leave", QueueTime="6"))
    assert "we're having technical difficulties" in said(root)
    assert root.find("Dial").text == "+15005550010"
    # the next caller who leaves the queue by themselves is not apologised to
    parse(twilio.post("/voice", CallSid="CA132", **CALLER))
    parse(twilio.post("/voice/gather?s=1", CallSid="CA132", Digits="1"))
    left = parse(twilio.post("/voice/queue/left?s=2", CallSid="CA132", QueueResult="bridged", QueueTime="6"))
    assert left.find("Dial") is None and "difficulties" not in said(left)


def test_a_flow_that_fails_on_hold_hands_the_caller_to_a_person_after_leaving(make_app, redis_url):
    app = make_app(propagate_exceptions=False)  # the fail-safe is under test
    client = Twilio(app.test_client())
    parse(client.post("/voice", CallSid="CA133", **CALLER))
    assert parse(client.post("/voice/gather?s=1", CallSid="CA133", Digits="1")).find("Enqueue") is not None
    # the live state is corrupted while the caller holds
    redis.Redis.from_url(redis_url).hset("ivr:call:CA133", "state", '{"flow": "support"}')
    _hold_answer(client.post("/voice/queue/wait?s=2", CallSid="CA133", QueuePosition="1", QueueTime="5"))
    root = parse(client.post("/voice/queue/left?s=2", CallSid="CA133", QueueResult="leave", QueueTime="6"))
    assert said(root).count("We're sorry, something went wrong on our side.") == 1
    dial = root.find("Dial")
    assert dial.find("Number").text == "+15005550010" and dial.get("action") == "/voice/dial?s=3"
    done = parse(client.post("/voice/dial?s=3", CallSid="CA133", DialCallStatus="completed",
                             DialCallDuration="60"))
    assert done.find("Hangup") is not None
    client.post("/voice/status", CallSid="CA133", CallStatus="completed", CallDuration="90")
    assert flush(app).call("CA133")["outcome"] == "transferred"
