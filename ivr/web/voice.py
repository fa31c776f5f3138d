"""The Twilio voice webhooks: HTTP in, engine events through, TwiML out.

Twilio calls `POST /voice` when a call arrives and `POST /voice/status` when it ends; every
other URL reaches the server through the TwiML it sends back. All of them need a valid
X-Twilio-Signature. Whatever fails inside (Redis down, a broken flow, a bug), the caller
gets valid TwiML: an apology and a way to a person, never an HTTP 500 and silence.

The views are plain functions of the request (`Webhook`), answered in front of Flask by
`ivr.web.webhook.Webhooks`: see that module for why.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import parse_qsl, urlsplit

from callbacks import web as cbweb
from ivr.engine import events as E
from ivr.engine.runner import run
from ivr.engine.states import Outcome, Wait, hung_up
from ivr.phone import normalize
from ivr.runtime.services import Services, caller_context

from . import twiml
from .signatures import public_base, stream_token, websocket_base
from .webhook import Reply, Routes, Webhook, empty, first_values, xml

log = logging.getLogger("ivr.voice")

FINAL_STATUSES = {"completed", "busy", "no-answer", "failed", "canceled"}
ENDED_TTL = 15 * 60  # keep an ended call's state a little while for late webhooks


def fail_safe(hook: Webhook, reason: str, flow=None) -> Reply:
    """Valid TwiML that apologises and hands the caller to a person: the flow's fallback
    number when the flow is known, else the server's."""
    log.error("call %s failed safe: %s", hook.form.get("CallSid", "?"), reason)
    number = (flow.settings.fallback_number if flow is not None else None) or hook.config.fallback_number
    return xml(twiml.apology(number or None))


def _on_error(hook: Webhook, exc: Exception) -> Reply:
    try:
        return fail_safe(hook, f"{type(exc).__name__}: {exc}")
    except Exception:  # not even the form could be read: the server's fallback number
        log.exception("the fail-safe answer failed too")
        return xml(twiml.apology(hook.config.fallback_number or None))


routes = Routes("/voice", on_error=_on_error)


@routes.before_request
def _published_path(hook: Webhook) -> None:
    """TwiML URLs carry the path the server is published under (PUBLIC_URL's, or the proxy's)."""
    twiml.set_prefix(_path_of(public_base(hook)))


@lru_cache(maxsize=64)
def _path_of(url: str) -> str:
    return urlsplit(url).path


def _int(hook: Webhook, name: str) -> int | None:
    try:
        return int(hook.form.get(name, ""))
    except ValueError:
        return None


def _step_token(hook: Webhook) -> int:
    try:
        return int(hook.args.get("s", "0"))
    except ValueError:
        return -1


def _context(svc: Services, sid: str, flow, state: dict | None, arrival: str | None = None):
    """The engine's Context for one call, with the callback hooks (estimates, pending callbacks)."""
    return svc.context(flow, **cbweb.hooks(
        svc.callbacks, sid, flow, state, svc.calls.prefetched(sid), (arrival, svc.calls.asked(sid))))


def _after_step(svc: Services, sid: str, event: E.Event, state: dict | None, result, flow):
    """Book or cancel callbacks the engine asked for; returns the change to the caller's
    place in line, for `_save` to store with the state."""
    return cbweb.after_step(svc.callbacks, sid, event, state, result, flow)


def _save(svc: Services, sid: str, state: dict, records: list[dict], line, **kwargs) -> None:
    """Store the step: state, log records, answer and the caller's place in line, at once."""
    replies = svc.calls.save(sid, state, records, commands=line.commands, reads=line.reads, **kwargs)
    line.saved(svc.callbacks, replies)


def _advance(hook: Webhook, build: Callable[[dict | None], E.Event], *, answer: bool = True,
             flow_id: str | None = None, arrival: str | None = None) -> Reply:
    """Apply one event to the call named by CallSid and answer with TwiML.

    `answer` requests (the ones whose TwiML drives the call) are idempotent: the step token
    `s` in the URL tells a retry from a new step, and a retry gets the stored answer.
    `flow_id` names the flow of a call we placed (a callback) instead of the called number.
    `arrival` is a new call's caller number, whose lookups go with taking the lock.
    """
    sid = hook.form.get("CallSid", "")
    if not sid:
        return xml(twiml.text("Sorry, this request is missing its call id."), 400)
    svc = hook.services
    cfg = svc.config
    flow = None
    try:
        svc.ensure_recorder_thread()
        token = _step_token(hook)
        with svc.calls.lock(sid, wait_s=hook.lock_wait_s, reads=cbweb.arrival_reads(arrival),
                            step=token if answer else None):
            state, last_step, last_twiml = svc.calls.load(sid)
            if answer and state is not None and token < last_step and last_twiml:
                log.info("call %s: repeated request for step %s, answering as before", sid, token)
                return xml(last_twiml)
            event = build(state)
            if isinstance(event, E.CallStarted):
                flow = _flow_for(svc, flow_id) if flow_id else svc.registry.for_number(event.to_number)
                if flow is None:
                    return fail_safe(hook, f"no flow answers calls to {event.to_number}")
                event = dataclasses.replace(
                    event, caller=event.caller or caller_context(svc.registry, flow, event.from_number))
            elif state is None:
                return fail_safe(hook, f"no live state for {type(event).__name__}")
            else:
                flow = svc.registry.get(state["flow"]) or _builtin(state["flow"])
                if flow is None:
                    return fail_safe(hook, f"flow '{state['flow']}' is no longer loaded")
            result = run(flow, state, event, _context(svc, sid, flow, state, arrival))
            line = _after_step(svc, sid, event, state, result, flow)
            for failed in (s for s in result.steps if s["event"] == "error"):
                log.error("call %s: flow '%s' failed at node '%s' and the caller was handed to a "
                          "person: %s", sid, failed["flow"], failed["node"],
                          (failed.get("detail") or {}).get("error"))
            records = _log_records(sid, event, result)
            if answer:
                step = last_step + 1
                live = None
                current = svc.registry.get(result.state.get("flow")) or flow  # after a goto_flow
                if svc.vosk_available(current):
                    live = twiml.LiveSpeech(websocket_base(hook) + "/voice/media", current.language,
                                            stream_token(cfg.twilio_auth_token, sid, step))
                previous = twiml.stream_name(last_step)
                stop = previous if last_twiml and f'name="{previous}"' in last_twiml else None
                body = twiml.render(result.actions, step, sid, live, stop)
                _save(svc, sid, result.state, records, line, step=step, twiml=body)
                if isinstance(event, E.RecordingDone) and event.url:
                    _process_later(svc, sid, event, records, flow)
            else:
                body = twiml.wait_music(result.actions, cfg.hold_music_url, last_step)
                _save(svc, sid, result.state, records, line)
            return xml(body)
    except Exception as exc:  # Redis down, lock timeout, a bug: the caller still hears us
        log.exception("call %s: webhook failed", sid)
        return fail_safe(hook, f"{type(exc).__name__}: {exc}", flow)


def _flow_for(svc: Services, flow_id: str):
    flow = svc.registry.get(flow_id)
    if flow is None:
        log.error("flow '%s' is not loaded: the callback call uses the built-in greeting", flow_id)
        flow = cbweb.builtin_flow()
    return flow


def _builtin(flow_id: str):
    return cbweb.builtin_flow() if flow_id == cbweb.BUILTIN_ID else None


def _process_later(svc: Services, sid: str, event: E.RecordingDone, records: list[dict], flow) -> None:
    """Hand the recording to a worker; the caller never waits for it."""
    from ivr.runtime.recordings import enqueue

    seq = next((r["seq"] for r in records if r["type"] == "recording"), 0)
    try:
        enqueue(svc.redis, sid, seq, event.url, flow.id, event.duration)
    except Exception:  # the URL is in the step log; `ivr recordings retry` queues it again
        log.exception("call %s: could not queue recording %s for transcription", sid, event.url)


def _log_records(sid: str, event: E.Event, result) -> list[dict]:
    records: list[dict] = []
    s = result.state
    if isinstance(event, E.CallStarted):
        caller = s.get("caller") or {}
        records.append({
            "type": "call_started", "call_sid": sid, "flow": s.get("flow"),
            "from_number": event.from_number, "to_number": event.to_number,
            "caller_known": bool(caller.get("known")), "customer_id": caller.get("customer_id") or None,
            "started_at": s.get("started"), "is_test": bool(event.is_test),
            "parent_call_sid": event.parent_call_sid,
        })
    records += [{"type": "step", "call_sid": sid, **step} for step in result.steps]
    if isinstance(event, E.RecordingDone) and event.url:
        seq = result.steps[0]["seq"] if result.steps else s.get("seq")
        records.append({"type": "recording", "call_sid": sid, "seq": seq, "url": event.url,
                        "duration_s": event.duration})
    return records


# -- the webhooks ------------------------------------------------------------------------


@routes.post("")
def incoming(hook: Webhook) -> Reply:
    """Twilio's Voice URL: a call has arrived."""
    f = hook.form
    region = hook.config.default_region
    caller = normalize(f.get("From"), region)
    return _advance(hook, lambda state: E.CallStarted(
        f.get("CallSid", ""), caller, normalize(f.get("To"), region) or f.get("To"),
        parent_call_sid=f.get("ParentCallSid") or None), arrival=caller)


@routes.post("/gather")
def gather(hook: Webhook) -> Reply:
    f, args = hook.form, hook.args

    def event(state):
        if f.get("Digits"):
            return E.Digits(f["Digits"])
        # Twilio's recognizer posts SpeechResult; our own (vosk, ivr.web.media) redirects the call
        # here with the words in the signed URL.
        text = f.get("SpeechResult", "").strip() or args.get("speech", "").strip()
        if text:
            raw = f.get("Confidence") or args.get("confidence", "")
            try:
                confidence = float(raw)
            except ValueError:
                confidence = None
            return E.Speech(text, confidence)
        return E.NoInput()

    return _advance(hook, event)


@routes.post("/queue/wait")
def queue_wait(hook: Webhook) -> Reply:
    return _advance(hook, lambda state: E.QueueWait(
        _int(hook, "QueuePosition"), _int(hook, "QueueTime"), _int(hook, "AvgQueueTime"),
        _int(hook, "CurrentQueueSize")), answer=False)


@routes.post("/queue/offer")
def queue_offer(hook: Webhook) -> Reply:
    """A key press or words during the hold music (the callback offer's <Gather>)."""
    f = hook.form

    def event(state):
        if f.get("Digits"):
            return E.Digits(f["Digits"])
        return E.Speech(f.get("SpeechResult", "").strip(), None)

    return _advance(hook, event, answer=False)


@routes.post("/queue/left")
def queue_left(hook: Webhook) -> Reply:
    return _advance(hook, lambda state: E.QueueLeft(hook.form.get("QueueResult", "error"),
                                                    _int(hook, "QueueTime")))


@routes.post("/dial")
def dial(hook: Webhook) -> Reply:
    return _advance(hook, lambda state: E.TransferEnded(hook.form.get("DialCallStatus", "failed"),
                                                        _int(hook, "DialCallDuration")))


@routes.post("/record")
def record(hook: Webhook) -> Reply:
    f = hook.form
    return _advance(hook, lambda state: E.RecordingDone(
        f.get("RecordingUrl") or None, _int(hook, "RecordingDuration"), f.get("Digits") or None))


@routes.post("/whisper")
def whisper(hook: Webhook) -> Reply:
    """Played to the agent who answers a transfer, before the caller is connected."""
    parent = hook.args.get("call", "")
    text = "Incoming support call."
    try:
        svc = hook.services
        state, _, _ = svc.calls.load(parent)
        if state and state.get("whisper"):
            text = state["whisper"]
        if state and state.get("callback") and svc.callbacks is not None:
            cbweb.connected(svc.callbacks, state["callback"])  # the agent answered a callback call
    except Exception:  # the agent still gets the call, just without the summary
        log.exception("whisper for %s: could not read call state", parent)
    return xml(twiml.text(text, hangup=False))


@routes.post("/status")
def status(hook: Webhook) -> Reply:
    """Twilio's status callback: closes the call record with its duration and outcome."""
    f = hook.form
    return _call_ended(hook.services, f.get("CallSid", ""), f.get("CallStatus", ""),
                       _int(hook, "CallDuration"))


def _call_ended(svc: Services, sid: str, call_status: str, duration: int | None) -> Reply:
    if call_status not in FINAL_STATUSES:
        return empty()
    try:
        svc.ensure_recorder_thread()
        with svc.calls.lock(sid):
            ended_at = datetime.now(UTC).isoformat(timespec="milliseconds")
            state, _, _ = svc.calls.load(sid)
            if state is None or hung_up(state):
                if state is None:
                    svc.calls.log([{"type": "call_ended", "call_sid": sid, "status": call_status,
                                    "duration_s": duration, "ended_at": ended_at,
                                    "outcome": None, "last_node": None}])
                return empty()
            flow = svc.registry.get(state["flow"]) or _builtin(state["flow"])
            if flow is None:
                result_state, steps, ended = dict(state, wait=Wait.ENDED, hung_up=True, line=None), [], {
                    "outcome": state.get("outcome") or Outcome.ABANDONED, "last_node": state.get("node")}
                line = cbweb.line_change(sid, state, result_state)
            else:
                result = run(flow, state, E.HangUp(call_status, duration),
                             _context(svc, sid, flow, state))
                line = _after_step(svc, sid, E.HangUp(call_status, duration), state, result, flow)
                result_state, steps, ended = result.state, result.steps, result.ended or {}
            records = [{"type": "step", "call_sid": sid, **s} for s in steps]
            records.append({"type": "call_ended", "call_sid": sid, "status": call_status,
                            "duration_s": duration, "ended_at": ended_at,
                            "outcome": ended.get("outcome"), "last_node": ended.get("last_node")})
            _save(svc, sid, result_state, records, line, ttl=ENDED_TTL)
    except Exception:
        # Twilio retries nothing here and the caller is gone; log loudly for the supervisor.
        log.exception("status callback for %s could not be recorded", sid)
        return empty(503)
    return empty()


@routes.post("/fallback")
def fallback(hook: Webhook) -> Reply:
    """Twilio's fallback URL: a webhook of the call failed (no answer, an HTTP error, a timeout).

    When Twilio could not fetch the answer of one of the call's webhooks, a proxy's dropped
    connection or a restarting process must not cost the caller their place in the menu:
    a step the failed request did store (its answer was lost on the way back) is answered as
    it was, and one it did not store runs here, if this request carries what the caller did
    (the digits, the recording...). Anything else, or a second failure, gets the apology and
    a person."""
    f = hook.form
    sid, code, failed_url = f.get("CallSid", ""), f.get("ErrorCode", ""), f.get("ErrorUrl", "")
    reason = f"Twilio used the fallback URL (ErrorCode={code}, ErrorUrl={failed_url})"
    found = _recoverable(hook, code, failed_url)
    if found is None or not sid:
        return fail_safe(hook, reason)
    view, needs = found
    args = first_values(parse_qsl(urlsplit(failed_url).query, keep_blank_values=True))
    try:
        state, last_step, last_twiml = hook.services.calls.load(sid)
        token = int(args.get("s", "0"))
    except ValueError:
        return fail_safe(hook, f"{reason}; its step token is not a number")
    except Exception as exc:  # Redis down: the step cannot run here either
        return fail_safe(hook, f"{reason}; again: {type(exc).__name__}: {exc}")
    if state is not None and token < last_step and last_twiml:
        log.warning("call %s: %s; answering that step as before", sid, reason)
        return xml(last_twiml)
    if needs and not any(f.get(name) for name in needs):
        # Twilio need not send the failed request's own fields again: without them the step
        # would run as if the caller had done nothing (or a transfer had failed).
        return fail_safe(hook, f"{reason}; this request lacks {' or '.join(needs)}")
    log.warning("call %s: %s; running that webhook again", sid, reason)
    try:
        # the view reads its step token from the URL that failed, not from this one
        reply = view(hook.derived(args=args, lock_wait_s=FALLBACK_LOCK_WAIT_S))
    except Exception as exc:
        log.exception("call %s: running %s again failed", sid, failed_url)
        return fail_safe(hook, f"{reason}; again: {type(exc).__name__}: {exc}")
    if reply.status != 200:  # the same refusal would end the call
        return fail_safe(hook, f"{reason}; again: HTTP {reply.status}")
    return reply


# Webhooks the fallback URL may run again, with the fields the fallback request must carry for
# it (any one of them): the failed request's own answer to the step. A hold-music cycle, the
# callback offer and the agent's whisper are left out: they keep no answer per step, so a
# failed request that did run would run twice.
RECOVERABLE: dict[str, tuple[str, ...]] = {
    "incoming": (),
    "gather": ("Digits", "SpeechResult"),
    "queue_left": ("QueueResult",),
    "dial": ("DialCallStatus",),
    "record": ("RecordingUrl",),
}
# A failed request may still hold the call's lock (Twilio gave up on it after 15 s): the
# fallback waits for it only briefly, so that its own answer comes within Twilio's 15 s.
FALLBACK_LOCK_WAIT_S = 2.0


def _recoverable(hook: Webhook, code: str,
                 failed_url: str) -> tuple[Callable[[Webhook], Reply], tuple[str, ...]] | None:
    """The view to run again for a fallback request and the fields it needs, or None. Only
    failures to fetch an answer (Twilio's 112xx errors: no connection, an HTTP error status,
    a timeout) qualify: an answer Twilio could not parse or run (12100 and on) would come out
    the same again."""
    if not code.startswith("112"):
        return None
    # Its host may differ from ours (a fallback URL on another name of the same deployment);
    # its path must be one of our webhooks, under the path we are published at.
    prefix = _path_of(public_base(hook)).rstrip("/")
    path = urlsplit(failed_url).path
    if prefix and not path.startswith(prefix + "/"):
        return None
    view = routes.view(path[len(prefix):])
    if view is None or view.__name__ not in RECOVERABLE:
        return None
    # this request's signature was checked already; the failed URL's cannot be checked here
    return view, RECOVERABLE[view.__name__]


@routes.post("/fallback/done")
def fallback_done(hook: Webhook) -> Reply:
    if hook.form.get("RecordingUrl"):
        log.error("call %s left a message while the system was failing: %s",
                  hook.form.get("CallSid"), hook.form.get("RecordingUrl"))
    return xml(twiml.text("Thank you. We will call you back. Goodbye."))


# -- callback calls (placed by callbacks/dispatch.py) -------------------------------------------


def _callback_args(hook: Webhook) -> tuple[str, int]:
    try:
        return hook.args.get("cb", ""), int(hook.args.get("a", "0"))
    except ValueError:
        return hook.args.get("cb", ""), 0


@routes.post("/callback")
def callback_answered(hook: Webhook) -> Reply:
    """A callback call was answered (after answering-machine detection): run the callback flow,
    or hang up on a machine (the attempt then counts as one, and is retried)."""
    f = hook.form
    svc = hook.services
    callback_id, attempt = _callback_args(hook)
    try:
        verdict, record = cbweb.answer_leg(svc.callbacks, callback_id, attempt, f)
    except Exception:  # Redis trouble: apologise; the status callback settles the attempt
        log.exception("callback %s: answered, but the callback could not be read", callback_id)
        return xml(twiml.text("Sorry, we're having technical difficulties. We'll call you back soon."))
    if verdict != "run":
        log.info("callback %s attempt %s: %s, hanging up", callback_id, attempt,
                 "an answering machine" if verdict == "machine" else "not the current attempt")
        return xml(twiml.hangup())
    caller = dict(record.get("caller") or {"known": False}, phone=record["number"])
    context = cbweb.leg_context(svc.callbacks, record)
    return _advance(hook, lambda state: E.CallStarted(
        f.get("CallSid", ""), record["number"], record.get("line_number") or None, caller,
        parent_call_sid=record.get("call_sid"), callback=context), flow_id=record.get("flow") or "callback")


@routes.post("/callback/status")
def callback_status(hook: Webhook) -> Reply:
    """Status callbacks of a callback call: the attempt's outcome, then the usual end of call."""
    f = hook.form
    callback_id, attempt = _callback_args(hook)
    try:
        cbweb.leg_status(hook.services.callbacks, callback_id, attempt, f)
    except Exception:
        log.exception("callback %s: status %s could not be applied; the sweep will ask Twilio",
                      callback_id, f.get("CallStatus"))
    return _call_ended(hook.services, f.get("CallSid", ""), f.get("CallStatus", ""),
                       _int(hook, "CallDuration"))
