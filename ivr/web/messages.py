"""Twilio's messaging webhooks: the `sms` blueprint.

- `POST /sms/status`: the status callback of each text a flow sent (ivr.runtime.sms):
  queued, sent, delivered, undelivered, failed. Each report is a `message` record of the
  step log, shown in the call's timeline.
- `POST /sms/incoming`: texts people send to the line's number (the number's "A message
  comes in" webhook). STOP and its synonyms put the number on the opt-out list, START takes
  it off; nothing else is answered.

Both must carry a valid X-Twilio-Signature, checked as for the voice webhooks (403 without).
"""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, Response, current_app, request

from ivr.calllog import recorder
from ivr.phone import normalize
from ivr.runtime import sms
from ivr.runtime.services import Services

from .voice import check_signature

log = logging.getLogger("ivr.sms")

bp = Blueprint("sms", __name__, url_prefix="/sms")
bp.before_request(check_signature)

STATUSES = {"queued", "accepted", "sending", "sent", "delivered", "undelivered", "failed", "read"}


def _services() -> Services:
    return current_app.extensions["ivr"]


def _empty(status: int = 204) -> Response:
    response = Response(status=status)
    del response.headers["Content-Type"]
    return response


@bp.post("/status")
def status() -> Response:
    """A text's delivery, as Twilio reports it."""
    form, args = request.form, request.args
    call_sid, seq, state = args.get("call", ""), args.get("n", ""), form.get("MessageStatus", "")
    if not call_sid or not seq.isdigit() or state not in STATUSES:
        log.warning("a text's status callback without its call, step or a known status: call=%r n=%r "
                    "MessageStatus=%r", call_sid, seq, state)
        return _empty(400)
    code = form.get("ErrorCode", "")
    fields: dict = {"sid": form.get("MessageSid") or None}
    if code.isdigit():
        fields["error_code"] = int(code)
    svc = _services()
    try:
        recorder.append(svc.redis, [sms.record(call_sid, seq, state, **fields)])
        if code == str(sms.UNSUBSCRIBED) and form.get("To"):
            sms.opt_out(svc.redis, form["To"])
    except redis.RedisError:
        log.exception("text %s/%s: its status %s could not be recorded", call_sid, seq, state)
        return _empty(503)
    if state in ("undelivered", "failed"):
        log.warning("text %s/%s was not delivered: %s (error %s)", call_sid, seq, state, code or "none")
    return _empty()


@bp.post("/incoming")
def incoming() -> Response:
    """STOP and START from people texting the line."""
    form = request.form
    word = " ".join(form.get("Body", "").lower().split())
    number = normalize(form.get("From"), _services().config.default_region)
    if number and word in sms.STOP_WORDS:
        sms.opt_out(_services().redis, number)
        log.info("%s asked for no more texts", number)
    elif number and word in sms.START_WORDS:
        sms.opt_in(_services().redis, number)
        log.info("%s asked for texts again", number)
    return Response('<?xml version="1.0" encoding="UTF-8"?><Response />', mimetype="text/xml")
