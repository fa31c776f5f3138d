"""Text messages a flow sends (`sms:` nodes), and the numbers that asked for no more.

The webhook whose step sends a text queues `send_text` on the rq queue `messages`; a worker
(`ivr worker`) sends it through Twilio's REST API with a status callback, so the call never
waits for it and a text is not lost when a web process stops. Each change of a text's
state is a `message` record of the step log (the `messages` table): queued or refused when
the worker sends it, then sent, delivered, undelivered or failed as Twilio reports it on
the signed /sms/status (ivr.web.messages).

The opt-out list is a Redis set of E.164 numbers, `ivr:sms:optout`: the engine sends
nothing to a number on it, the worker checks again before sending, and numbers are added
when their owner texts STOP to the line (/sms/incoming), when Twilio refuses a number as
unsubscribed (error 21610), or by hand (`ivr sms opt-out`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from redis import Redis
from rq import Queue, Retry
from twilio.base.exceptions import TwilioRestException

from ivr.calllog import recorder
from ivr.config import Config
from ivr.engine import actions as A

log = logging.getLogger("ivr.sms")

QUEUE = "messages"
OPT_OUT = "ivr:sms:optout"
UNSUBSCRIBED = 21610  # Twilio: the number replied STOP to this sender
# Twilio errors that mean this text can never be sent as it is (a retry would fail the same).
FINAL_CODES = {UNSUBSCRIBED, 21211, 21408, 21602, 21606, 21610, 21612, 21614, 21617, 21660}
STOP_WORDS = {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "arret", "arrêt"}
START_WORDS = {"start", "unstop", "yes"}


def opted_out(client: Redis, number: str) -> bool:
    return bool(client.sismember(OPT_OUT, number))


def opt_out(client: Redis, number: str) -> bool:
    """Add a number to the opt-out list; True if it was not on it."""
    return bool(client.sadd(OPT_OUT, number))


def opt_in(client: Redis, number: str) -> bool:
    """Take a number off the opt-out list; True if it was on it."""
    return bool(client.srem(OPT_OUT, number))


def opted_out_numbers(client: Redis) -> list[str]:
    return sorted(n.decode() if isinstance(n, bytes) else n for n in client.smembers(OPT_OUT))


def record(call_sid: str, seq: str | int, status: str, **fields: object) -> dict:
    """A `message` record of the step log: one change of a text's state."""
    return {"type": "message", "call_sid": call_sid, "seq": int(seq), "status": status,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"), **fields}


def sender_for(text: A.SendSms, config: Config) -> str | None:
    return text.sender or config.sms_from or text.line


def enqueue(client: Redis, call_sid: str, flow_id: str, text: A.SendSms, config: Config) -> None:
    """Queue one text of a call for a worker."""
    callback = (f"{config.public_url.rstrip('/')}/sms/status?call={call_sid}&n={text.id}"
                if config.public_url else None)
    Queue(QUEUE, connection=client).enqueue(
        send_text, call_sid, text.id, flow_id, text.node, text.to, sender_for(text, config), text.body,
        text.segments, callback, retry=Retry(max=3, interval=[10, 30, 120]), job_timeout=60,
        description=f"text {call_sid}/{text.id}")


_clients: dict = {}


def _connections(config: Config):
    """The worker's Redis and Twilio clients, made once per process."""
    key = (config.redis_url, config.twilio_account_sid, config.twilio_api_base_url)
    if key not in _clients:
        from .connections import redis_for
        from .twilio_api import client

        _clients[key] = (redis_for(config), client(config))
    return _clients[key]


def send_text(call_sid: str, seq: str, flow_id: str, node: str, to: str, sender: str | None, body: str,
              segments: int, status_callback: str | None) -> str:
    """The rq job: send one text through Twilio. Returns its state after sending."""
    config = Config.from_env()
    redis, twilio = _connections(config)
    about = {"flow": flow_id, "node": node, "to": to, "segments": segments}
    if opted_out(redis, to):
        recorder.append(redis, [record(call_sid, seq, "opted_out", **about)])
        return "opted_out"
    if not sender:
        log.error("text %s/%s to %s: no number to send it from (set IVR_SMS_FROM, or the node's "
                  "`from`)", call_sid, seq, to)
        recorder.append(redis, [record(call_sid, seq, "failed", **about)])
        return "failed"
    if not status_callback:
        log.warning("text %s/%s: PUBLIC_URL is not set, so its delivery will not be reported",
                    call_sid, seq)
    try:
        message = twilio.messages.create(to=to, from_=sender, body=body,
                                         **({"status_callback": status_callback} if status_callback else {}))
    except TwilioRestException as exc:
        if exc.code not in FINAL_CODES and (exc.status >= 500 or exc.status == 429):
            raise  # Twilio is having trouble: rq tries again
        if exc.code == UNSUBSCRIBED:
            opt_out(redis, to)
            log.warning("text %s/%s: %s unsubscribed from texts (Twilio 21610); added to the "
                        "opt-out list", call_sid, seq, to)
            status = "opted_out"
        else:
            log.error("text %s/%s to %s refused by Twilio: HTTP %s, code %s: %s", call_sid, seq, to,
                      exc.status, exc.code, exc.msg)
            status = "failed"
        recorder.append(redis, [record(call_sid, seq, status, error_code=exc.code, **about)])
        return status
    status = message.status or "queued"
    recorder.append(redis, [record(call_sid, seq, status, sid=message.sid, **about)])
    return status
