"""The meaning model is connected to live calls: a caller's paraphrase, with none of the
intent's keywords, reaches the right queue, and off-topic words fall back to the menu, both
from Twilio's recognizer (SpeechResult) and from vosk (the server's own recognizer, whose words
come back through the redirect ivr.web.media makes). Keyword matching alone routes neither
("my money was taken twice" has no billing keyword), so these fail if the live matcher is
reduced to keywords."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from ivr.web import media
from ivr.web.signatures import stream_token
from tests.conftest import PUBLIC, TOKEN, Twilio
from tests.twilio_standin import TwilioStandIn
from tests.webutil import CALLER, flush, parse, said

ACCOUNT = "AC" + "4" * 32
PARAPHRASE = "my money was taken twice"  # billing, without billing's keywords or phrases
OFF_TOPIC = "what will the weather be like in Paris tomorrow"


@pytest.fixture(autouse=True)
def _open_hours(open_hours):
    pass


@pytest.fixture
def standin():
    s = TwilioStandIn(ACCOUNT, TOKEN).start()
    yield s
    s.stop()


@pytest.fixture
def line(make_app, flows_dir, standin):
    """The example support line, listening with vosk, and Twilio's REST API on loopback."""
    flow = flows_dir / "support.yaml"
    vosk = flow.read_text().replace("  escape: agent_queue", "  escape: agent_queue\n  speech: vosk")
    flow.write_text(vosk)
    app = make_app(twilio_account_sid=ACCOUNT, twilio_api_base_url=standin.url)
    return app, Twilio(app.test_client())


def spoken_by_twilio(line, standin, sid: str, step: int, words: str):
    app, twilio = line
    return parse(twilio.post(f"/voice/gather?s={step}", CallSid=sid, SpeechResult=words, Confidence="0.9"))


def spoken_to_vosk(line, standin, sid: str, step: int, words: str):
    """What ivr.web.media does once vosk has heard words in the menu's Media Stream: redirect
    the live call through Twilio's REST API to the menu's action, words in the URL; then Twilio
    fetches that URL. English speech cannot be recognised here (no English vosk model installs
    from the registries), so vosk's result and the stream's session are stand-ins carrying the
    words and the token the menu's <Stream> carried; everything after them is real."""
    app, twilio = line
    svc = app.extensions["ivr"]
    session = SimpleNamespace(call_sid=sid, info=SimpleNamespace(custom_parameters={
        "step": str(step), "token": stream_token(TOKEN, sid, step)}))
    heard = SimpleNamespace(text=words, phrase=None, confidence=0.8)
    seen = len(standin.requests)
    with app.app_context():
        media._move_call_on(svc, PUBLIC, session, heard)
    update = standin.wait_for(lambda r: r in standin.requests[seen:] and r.method == "POST"
                              and r.path.endswith(f"/Calls/{sid}.json"))
    assert update is not None, "the call was not moved on"
    url = urlsplit(update.form["Url"])
    return parse(twilio.post(f"{url.path}?{url.query}", CallSid=sid))


HEARD_BY = {"twilio": spoken_by_twilio, "vosk": spoken_to_vosk}


@pytest.mark.parametrize("recognizer", HEARD_BY)
def test_off_topic_words_fall_back_and_a_paraphrase_reaches_billing(line, standin, recognizer):
    app, twilio = line
    sid = f"CAMEAN{recognizer}"
    parse(twilio.post("/voice", CallSid=sid, **CALLER))
    lost = HEARD_BY[recognizer](line, standin, sid, 1, OFF_TOPIC)
    assert lost.find("Enqueue") is None and lost.find("Gather") is not None
    assert said(lost).startswith("Sorry, I didn't catch that.")
    routed = HEARD_BY[recognizer](line, standin, sid, 2, PARAPHRASE)
    assert routed.find("Enqueue") is not None and routed.find("Enqueue").text == "billing", said(routed)
    steps = {s.get("speech"): s for s in flush(app).steps(sid) if s.get("speech")}
    assert steps[OFF_TOPIC]["event"] == "no_match" and steps[OFF_TOPIC]["intent"] is None
    assert steps[PARAPHRASE]["event"] == "speech" and steps[PARAPHRASE]["intent"] == "billing"
