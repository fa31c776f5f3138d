"""Text messages from a flow (the example's "the details by text message"), end to end: the
webhook queues the text, a real `ivr worker` sends it through the Twilio stand-in, the
stand-in reports its delivery on the signed /sms/status, and the step log keeps it all;
numbers that texted STOP, or that Twilio reports unsubscribed, get no more texts."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from ivr.runtime import sms
from tests import cbutil
from tests.conftest import Twilio, sign
from tests.order_api import OrderApi
from tests.webutil import flush, parse, said

ADA = {"From": "+14155550100", "To": "+15005550006"}


@pytest.fixture(autouse=True)
def _open_hours(open_hours):
    pass


@pytest.fixture
def line(tmp_path, redis_url, flows_dir, standin, monkeypatch):
    """The support line served over loopback HTTP, with the order API and Twilio's stand-in."""
    from ivr import create_app

    api = OrderApi().start()
    monkeypatch.setenv("NORTHWIND_API_URL", api.url)
    monkeypatch.setenv("NORTHWIND_API_TOKEN", "t0k")
    holder = {}

    def make(url):
        holder["cfg"] = cbutil.config(tmp_path, redis_url, flows_dir, standin, public_url=url,
                                      request_hosts=api.host, request_quick_ms=5000)
        return create_app(holder["cfg"])

    server = cbutil.AppServer(make)
    server.cfg = holder["cfg"]
    server.twilio = Twilio(server.app.test_client(), base=server.url)
    yield server
    server.stop()
    api.stop()


def send_texts(line, tmp_path) -> None:
    """`ivr worker` for the messages queue, until nothing is left to do."""
    proc = subprocess.run([sys.executable, "-m", "ivr.cli", "worker", "--burst", "--queue", "messages"],
                          env=cbutil.env(line.cfg), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def ask_for_the_text(line, sid: str) -> str:
    twilio = line.twilio
    parse(twilio.post("/voice", CallSid=sid, **ADA))
    told = said(parse(twilio.post("/voice/gather?s=1", CallSid=sid, Digits="2")))
    assert "Your latest order is shipped" in told
    return said(parse(twilio.post("/voice/gather?s=2", CallSid=sid, Digits="2")))


def test_a_text_is_sent_by_a_worker_and_its_delivery_is_logged(line, standin, tmp_path):
    assert ask_for_the_text(line, "CA1") == ("I've sent the details to your phone. Thanks for calling "
                                             "Northwind Fibre. Goodbye.")
    assert standin.messages == []  # the webhook answered without waiting for Twilio
    send_texts(line, tmp_path)
    [text] = standin.messages
    assert text.to == "+14155550100" and text.from_ == "+15005550006"  # the number the caller rang
    assert text.body == ("Northwind Fibre: your order NW-58213 is shipped. Track it at "
                         "https://track.example.com/NW-58213")
    step = next(s for s in flush(line.app).steps("CA1") if s["node"] == "text_order")
    assert text.status_callback == f"{line.url}/sms/status?call=CA1&n={step['seq']}"
    assert step["action"] == "sms" and step["detail"] == {"to": "+14155550100", "chars": len(text.body),
                                                          "segments": 1}
    assert standin.deliver(text, "sent").status_code == 204
    assert standin.deliver(text, "delivered").status_code == 204
    [row] = flush(line.app).messages("CA1")
    assert row["status"] == "delivered" and row["message_sid"] == text.sid and row["node"] == "text_order"
    assert row["to_number"] == "+14155550100" and row["segments"] == 1 and row["seq"] == step["seq"]
    # a report that comes late never takes the text back
    standin.deliver(text, "sent")
    assert flush(line.app).messages("CA1")[0]["status"] == "delivered"


def test_a_number_twilio_reports_unsubscribed_gets_no_more_texts(line, standin, tmp_path, redis_url):
    standin.refuse_messages = (400, 21610)
    ask_for_the_text(line, "CA2")
    send_texts(line, tmp_path)
    assert standin.messages == []
    [row] = flush(line.app).messages("CA2")
    assert row["status"] == "opted_out" and row["error_code"] == 21610
    assert sms.opted_out(redis.Redis.from_url(redis_url), "+14155550100")
    # the next call knows at once, and the caller goes to a person instead
    heard = ask_for_the_text(line, "CA3")
    assert heard == ("Sorry, I can't send a text message to the number you're calling from. "
                     "Connecting you to our orders team.")
    step = next(s for s in flush(line.app).steps("CA3") if s["node"] == "text_order")
    assert step["action"] == "sms:not_sent" and step["detail"]["why"] == "opted_out"


def test_stop_and_start_texted_to_the_line_change_the_opt_out_list(line, redis_url):
    client = redis.Redis.from_url(redis_url)

    def text_in(body: str):
        params = {"From": "+14155550100", "To": "+15005550006", "Body": body, "MessageSid": "SM1"}
        return line.twilio.post("/sms/incoming", **params)

    assert text_in(" Stop ").status_code == 200
    assert sms.opted_out(client, "+14155550100")
    text_in("hello")
    assert sms.opted_out(client, "+14155550100")
    text_in("START")
    assert not sms.opted_out(client, "+14155550100")


def test_the_messaging_webhooks_need_twilios_signature(line):
    client = line.app.test_client()
    for path in ("/sms/status?call=CA1&n=3", "/sms/incoming"):
        assert client.post(path, data={"MessageStatus": "delivered", "Body": "STOP"}).status_code == 403
        params = {"MessageStatus": "delivered", "Body": "STOP"}
        forged = client.post(path, data=params, headers={"X-Twilio-Signature": sign(line.url + "/x", params)})
        assert forged.status_code == 403


def test_opt_outs_by_hand(line, tmp_path):
    env = cbutil.env(line.cfg)

    def ivr(*args):
        return subprocess.run([sys.executable, "-m", "ivr.cli", "sms", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    assert ivr("opt-out", "(415) 555-0199").stdout == "+14155550199 is now on the opt-out list\n"
    assert ivr("opted-out").stdout == "+14155550199\n"
    assert ivr("opt-in", "+14155550199").stdout == "+14155550199 is no longer on the opt-out list\n"
    assert "is not a phone number" in ivr("opt-out", "hello").stderr
