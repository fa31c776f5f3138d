"""Values a database cannot hold as they came (too long for a name column, a NUL character,
which PostgreSQL text refuses) are stored with a note, through the real webhooks and the real
recorder, on SQLite and PostgreSQL: no step goes to the dead-letter list."""

from __future__ import annotations

import redis

from ivr.calllog.store import NAME_MAX
from tests.calllog.test_recorder import store  # noqa: F401  (the SQLite and PostgreSQL stores)
from tests.conftest import Twilio

LONG_TO = "+1" + "5" * 248
LONG_DIGITS = "1" * 250


def cut(value: str) -> bool:
    """Cut to NAME_MAX with a note saying so, and how long it was."""
    return len(value) == NAME_MAX and value.endswith("]") and f"{250} characters, cut" in value


def test_webhook_values_the_database_cannot_hold_are_stored_with_a_note(store, make_app, open_hours):  # noqa: F811
    app = make_app(database_url=store.url.render_as_string(hide_password=False))
    phone = Twilio(app.test_client())
    long_to, nul_speech, nul_sid = "CA" + "1" * 32, "CA" + "2" * 32, "CA\x00" + "3" * 30
    assert phone.post("/voice", CallSid=long_to, From="+14155550100", To=LONG_TO).status_code == 200
    assert phone.post("/voice/gather?s=1", CallSid=long_to, Digits=LONG_DIGITS).status_code == 200
    phone.post("/voice", CallSid=nul_speech, From="+14155550100", To="+15005550006")
    phone.post("/voice/gather?s=1", CallSid=nul_speech, SpeechResult="I was charged\x00 twice",
               Confidence="0.9")
    phone.post("/voice", CallSid=nul_sid, From="+14155550100", To="+15005550006")
    phone.post("/voice/gather?s=1", CallSid=nul_sid, Digits="1\x002")
    svc = app.extensions["ivr"]
    svc.recorder().flush()

    client = redis.Redis.from_url(svc.redis_url)
    assert client.xlen("ivr:log:dead") == 0
    assert client.xlen("ivr:log") == 0

    call = store.call(long_to)
    assert cut(call["to_number"]) and call["to_number"].startswith(LONG_TO[:100])
    typed = [s for s in store.steps(long_to) if s["digits"]]
    assert typed and cut(typed[0]["digits"]) and typed[0]["digits"].startswith("1" * 100)

    spoken = [s for s in store.steps(nul_speech) if s["speech"]]
    assert spoken[0]["speech"] == "I was charged\ufffd twice"  # the NUL shows as U+FFFD

    stored_sid = "CA\ufffd" + "3" * 30
    assert store.call(stored_sid) is not None
    steps = store.steps(stored_sid)
    assert len(steps) >= 2 and any(s["digits"] == "1\ufffd2" for s in steps)
