"""The app factory: what it says at start-up about settings that put calls at risk."""

from __future__ import annotations

import logging

from tests.webutil import CALLER


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
