"""The post-call survey through the real webhooks (Flask test client, real Redis, SQLite):
the agent hangs up, the caller's leg comes back on the Dial's action URL, and the survey's
TwiML asks for a score by keys or words, "solved today?", and a recorded comment."""

from __future__ import annotations

import pytest
from rq import Queue

from ivr.flows.survey import sampled
from tests.webutil import CALLER, flush, parse, said


@pytest.fixture(autouse=True)
def _open_hours(open_hours):
    pass


def _sid(prefix: str, share: float, inside: bool = True) -> str:
    """A call id that falls inside (or outside) a survey's share, as real call ids do."""
    return next(f"{prefix}{i}" for i in range(1000) if sampled(f"{prefix}{i}", share) is inside)


def _to_billing_agent(twilio, sid: str, **caller) -> None:
    """A caller presses 1, waits in the billing queue, and the server puts them through to an
    agent with a <Dial> (the routing's), whose action URL is /voice/dial."""
    parse(twilio.post("/voice", CallSid=sid, **(caller or CALLER)))
    root = parse(twilio.post("/voice/gather?s=1", CallSid=sid, Digits="1"))
    assert root.find("Enqueue").text == "billing"


def test_after_the_agent_hangs_up_the_caller_answers_by_keys_and_words_and_leaves_a_comment(app, twilio):
    sid = _sid("CAsv", 0.5)
    _to_billing_agent(twilio, sid)
    # the agent hangs up after 3 minutes: the caller's leg goes on with what the action returns
    root = parse(twilio.post("/voice/dial?s=2", CallSid=sid, DialCallStatus="completed",
                             DialCallDuration="180"))
    gather = root.find("Gather")
    assert gather is not None and root.find("Hangup") is None
    assert gather.get("action") == "/voice/gather?s=3" and gather.get("input") == "dtmf speech"
    assert gather.get("numDigits") == "1" and gather.get("language") == "en-US"
    assert "five" in gather.get("hints") and "excellent" in gather.get("hints")
    assert "On a scale of 1 to 5, how well did we solve your problem?" in said(root)

    solved = parse(twilio.post("/voice/gather?s=3", CallSid=sid, SpeechResult="Four out of five.",
                               Confidence="0.88"))
    assert said(solved) == "Did we solve your problem today? Say yes or press 1. Say no or press 2."
    comment = parse(twilio.post("/voice/gather?s=4", CallSid=sid, Digits="2"))
    record = comment.find("Record")
    assert record.get("action") == "/voice/record?s=5" and record.get("maxLength") == "30"
    assert said(comment).startswith("After the tone")

    done = parse(twilio.post("/voice/record?s=5", CallSid=sid,
                             RecordingUrl="https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE9",
                             RecordingDuration="7"))
    assert said(done) == "Thank you for your answers. Goodbye." and done.find("Hangup") is not None
    assert twilio.post("/voice/status", CallSid=sid, CallStatus="completed",
                       CallDuration="260").status_code == 204

    # the comment goes to the recordings job, like any message
    jobs = Queue("recordings", connection=app.extensions["ivr"].redis).jobs
    assert [j.args[:2] for j in jobs] == [(sid, jobs[0].args[1])]
    store = flush(app)
    assert store.call(sid)["outcome"] == "queued"
    end = [s for s in store.steps(sid) if s["event"] == "survey_end"]
    assert end[0]["detail"] == {"score": 4, "solved": False, "comment": True, "queue": "billing",
                                "agent": None, "hung_up": False, "phase": "comment"}
    comment_step = next(s for s in store.steps(sid) if s["event"] == "survey_comment")
    assert jobs[0].args[1] == comment_step["seq"]
    assert store.recordings(sid)[0]["seq"] == comment_step["seq"]


def test_a_caller_who_hangs_up_is_no_answer_not_a_bad_score(app, twilio):
    sid = _sid("CAsvh", 0.5)
    _to_billing_agent(twilio, sid)
    parse(twilio.post("/voice/dial?s=2", CallSid=sid, DialCallStatus="completed", DialCallDuration="90"))
    assert twilio.post("/voice/status", CallSid=sid, CallStatus="completed",
                       CallDuration="200").status_code == 204
    store = flush(app)
    end = next(s for s in store.steps(sid) if s["event"] == "survey_end")
    assert end["detail"]["score"] is None and end["detail"]["hung_up"] is True
    assert store.call(sid)["outcome"] == "queued"  # served, not abandoned


def test_silence_or_words_that_are_no_score_ask_again_then_let_the_caller_go(app, twilio):
    sid = _sid("CAsvs", 0.5)
    _to_billing_agent(twilio, sid)
    parse(twilio.post("/voice/dial?s=2", CallSid=sid, DialCallStatus="completed"))
    again = parse(twilio.post("/voice/gather?s=3", CallSid=sid, SpeechResult="purple elephants"))
    assert said(again) == "Please press a key from 1 to 5, 5 being excellent."
    on = parse(twilio.post("/voice/gather?s=4", CallSid=sid))  # silence: no score, on to the next
    assert said(on).startswith("Did we solve your problem today?")


def test_outside_the_share_the_call_ends_when_the_agent_hangs_up(app, twilio):
    sid = _sid("CAsvo", 0.5, inside=False)
    _to_billing_agent(twilio, sid)
    root = parse(twilio.post("/voice/dial?s=2", CallSid=sid, DialCallStatus="completed"))
    assert root.find("Hangup") is not None and root.find("Gather") is None and not said(root)


def test_nobody_answered_the_put_through_the_caller_keeps_waiting_in_the_queue(app, twilio):
    sid = _sid("CAsvn", 0.5)
    _to_billing_agent(twilio, sid)
    root = parse(twilio.post("/voice/dial?s=2", CallSid=sid, DialCallStatus="no-answer"))
    assert root.find("Enqueue").text == "billing" and root.find("Gather") is None


def test_a_french_caller_says_cinq_then_oui(app, twilio):
    sid = "CAsv-fr"
    caller = {"From": "+33639980001", "To": "+33185000000"}
    parse(twilio.post("/voice", CallSid=sid, **caller))
    assert parse(twilio.post("/voice/gather?s=1", CallSid=sid, Digits="1")).find("Enqueue") is not None
    ask = parse(twilio.post("/voice/dial?s=2", CallSid=sid, DialCallStatus="completed"))
    assert ask.find("Gather").get("language") == "fr-FR"
    assert said(ask).startswith("Avant de raccrocher, une petite question. Sur une échelle de 1 à 5")
    solved = parse(twilio.post("/voice/gather?s=3", CallSid=sid, SpeechResult="Très bien !",
                               Confidence="0.8"))
    assert said(solved).startswith("Avons-nous résolu votre problème aujourd'hui ?")
    comment = parse(twilio.post("/voice/gather?s=4", CallSid=sid, SpeechResult="Oui."))
    assert comment.find("Record") is not None
    store_steps = flush(app).steps(sid)
    score = next(s for s in store_steps if s["event"] == "survey_score")
    assert score["detail"] == {"answer": 5} and score["speech"] == "Très bien !"
