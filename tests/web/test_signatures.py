"""Twilio's signatures on every webhook (the voice blueprint's before_request): who is let in,
how the URL is rebuilt behind a proxy, SharedKey Webhook Settings, and refused bodies. Every
refusal is logged by `ivr.security`, which the deployment guide tells operators to alert on."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import PUBLIC, TOKEN, sign
from tests.webutil import CALLER

ENDPOINTS = ["/voice", "/voice/gather?s=1", "/voice/queue/wait?s=1", "/voice/queue/offer?s=1",
             "/voice/queue/left?s=1", "/voice/dial?s=1", "/voice/record?s=1",
             "/voice/whisper?call=CA1", "/voice/status", "/voice/fallback", "/voice/fallback/done",
             "/voice/callback?cb=CB1&a=1", "/voice/callback/status?cb=CB1&a=1", "/voice/request?s=1"]


def test_the_list_of_endpoints_is_every_webhook(app):
    webhooks = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("voice.")}
    assert webhooks == {path.partition("?")[0] for path in ENDPOINTS}


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


def test_forwarded_headers_are_believed_only_from_a_trusted_proxy(make_app):
    """Without PUBLIC_URL, anyone could name the URL checked: only the proxies in
    IVR_TRUSTED_PROXIES (loopback by default) may."""
    params = {"CallSid": "CA104", **CALLER}
    signature = sign("https://support.example.org/voice", params)
    headers = {"X-Twilio-Signature": signature, "X-Forwarded-Proto": "https",
               "X-Forwarded-Host": "support.example.org"}

    def status(app, peer: str) -> int:
        return app.test_client().post("/voice", data=params, headers=headers,
                                      environ_base={"REMOTE_ADDR": peer}).status_code

    default = make_app(public_url="")
    assert status(default, "127.0.0.1") == 200
    assert status(default, "203.0.113.7") == 403  # straight from a client: its headers are ignored
    behind = make_app(public_url="", trusted_proxies="10.0.0.0/8, 192.0.2.1")
    assert status(behind, "10.20.30.40") == 200 and status(behind, "192.0.2.1") == 200
    assert status(behind, "127.0.0.1") == 403 and status(behind, "192.0.2.2") == 403


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


def test_a_webhook_body_over_the_limit_is_refused_unread(make_app, caplog):
    """Twilio's bodies are a few KB: one over MAX_CONTENT_LENGTH is refused with 413 and
    logged, whether its signature is checked or not (never the fail-safe TwiML)."""
    for validate in (True, False):
        app = make_app(validate_signatures=validate)
        body = "CallSid=CA1&SpeechResult=" + "a" * app.config["MAX_CONTENT_LENGTH"]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ivr.security"):
            r = app.test_client().post("/voice/gather?s=1", data=body,
                                       headers={"X-Twilio-Signature": "x"},
                                       content_type="application/x-www-form-urlencoded")
        assert r.status_code == 413, validate
        assert b"<Response>" not in r.data
        if validate:
            assert "whose signature could not be checked: RequestEntityTooLarge" in caplog.text


def test_a_body_that_cannot_be_read_for_the_signature_check_is_refused_not_answered(app, caplog):
    """A chunked multipart body over the limit fails while the signature is being checked:
    the request was never verified, so it gets a refusal, not the fail-safe TwiML (which
    dials the fallback number)."""
    import io

    from werkzeug.test import EnvironBuilder, run_wsgi_app

    limit = app.config["MAX_CONTENT_LENGTH"]
    environ = EnvironBuilder(path="/voice", method="POST", headers={"X-Twilio-Signature": "bogus"},
                             data={"CallSid": "CA1", "Junk": "a" * (limit + 1024)},
                             content_type="multipart/form-data").get_environ()
    body = environ["wsgi.input"].read()
    del environ["CONTENT_LENGTH"]  # as a chunked body arrives: its end told by the server
    environ["wsgi.input"], environ["wsgi.input_terminated"] = io.BytesIO(body), True
    with caplog.at_level(logging.WARNING, logger="ivr.security"):
        chunks, status, _ = run_wsgi_app(app.wsgi_app, environ)
    assert status.split()[0] == "413", status
    assert b"<Response>" not in b"".join(chunks)
    assert [r.name for r in caplog.records] == ["ivr.security"]


def test_the_step_token_is_part_of_what_twilio_signed(twilio):
    """The URL's query is signed with the rest: a request replayed to another step is refused."""
    params = {"CallSid": "CA140", "Digits": "1"}
    signature = sign(PUBLIC + "/voice/gather?s=1", params)
    moved = twilio.client.post("/voice/gather?s=2", data=params, headers={"X-Twilio-Signature": signature})
    assert moved.status_code == 403
