"""The Twilio voice webhooks: the `voice` blueprint. HTTP in, engine events through, TwiML out.

Twilio calls `POST /voice` when a call arrives and `POST /voice/status` when it ends; every
other URL reaches the server through the TwiML it sends back.

- Every request must carry a valid X-Twilio-Signature (`check_signature`, the blueprint's
  before_request): 403 without one, 413 for a body over MAX_CONTENT_LENGTH, each refusal
  logged by `ivr.security`.
- Whatever fails inside (Redis down, a broken flow, a bug), the caller gets valid TwiML from
  the blueprint's error handler: an apology and a way to a person, never an HTTP 500.
- Each view reads `request.form` once and hands it on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import parse_qsl, urlsplit

import redis
from flask import Blueprint, Response, current_app, g, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from callbacks import web as cbweb
from ivr.config import Config
from ivr.engine import actions as A
from ivr.engine import events as E
from ivr.engine.runner import Result, run
from ivr.engine.states import Outcome, Wait, hung_up
from ivr.errors import IvrError
from ivr.i18n import Language, language
from ivr.i18n import sentences as S
from ivr.phone import normalize
from ivr.runtime import live as live_calls
from ivr.runtime import services as runtime_services
from ivr.runtime.services import Services

from . import metrics, twiml
from .signatures import is_valid, public_base, public_url, stream_token, websocket_base

log = logging.getLogger("ivr.voice")
refused = logging.getLogger("ivr.security")  # requests turned away: one logger to alert on

bp = Blueprint("voice", __name__, url_prefix="/voice")

FINAL_STATUSES = {"completed", "busy", "no-answer", "failed", "canceled"}
ENDED_TTL = 15 * 60  # keep an ended call's state a little while for late webhooks
LOCK_WAIT_S = 8.0  # how long a step waits for a concurrent step of its call
# A failed request may still hold the call's lock (Twilio gave up on it after 15 s): the
# fallback waits for it only briefly, so that its own answer comes within Twilio's 15 s.
FALLBACK_LOCK_WAIT_S = 2.0
# /voice/request waits this long for an API's answer before the caller hears the node's
# `hold` prompt and Twilio asks again: the caller is never left in silence for longer.
REQUEST_POLL_S = 2.0
# An answer that has not come by the request's timeout and this much more never will (the
# process running it died): the flow takes `on_error` with error "lost".
REQUEST_GRACE_S = 3.0
MAX_QUICK_ANSWERS = 10  # requests answered within one webhook (a chain of request nodes)


def webhook(rule: str) -> Callable:
    """A view of Twilio's: POST only (anything else gets 405 with `Allow: POST`)."""
    return bp.route(rule, methods=["POST"], provide_automatic_options=False)


def _services() -> Services:
    return current_app.extensions["ivr"]


def _config() -> Config:
    return current_app.config["IVR"]


def _twiml(body: str, status: int = 200) -> Response:
    return Response(body, status, mimetype="text/xml")


def _no_content(status: int = 204) -> Response:
    response = Response(status=status)
    del response.headers["Content-Type"]
    return response


def _refuse(status: int, message: str) -> Response:
    return Response(message, status, mimetype="text/plain")


# -- before and after every webhook ----------------------------------------------------------


@bp.before_request
def check_signature() -> Response | None:
    """Refuse what Twilio did not sign; note the path the server is published under."""
    config = _config()
    try:
        valid = is_valid(request, config)
    except Exception as exc:  # noqa: BLE001 - a body that cannot be read is not verified
        refused.warning("rejected a request to %s whose signature could not be checked: %s",
                        request.path, type(exc).__name__)
        if isinstance(exc, RequestEntityTooLarge):
            metrics.refused("too_large")
            return _refuse(413, "Request body too large")
        metrics.refused("unreadable")
        return _refuse(403, "Forbidden")
    if not valid:
        refused.warning("rejected unsigned or badly signed request to %s (checked URL %s)",
                        request.path, public_url(request, config))
        metrics.refused("invalid" if request.headers.get("X-Twilio-Signature") else "missing")
        return _refuse(403, "Forbidden")
    # TwiML URLs carry the path the server is published under (PUBLIC_URL's, or the proxy's).
    twiml.set_prefix(_path_of(public_base(request, config)))
    return None


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> HTTPException:
    """A refusal werkzeug raised (a body over MAX_CONTENT_LENGTH read by a view): as is."""
    return exc


# Failures the server plans for: its own, and Redis or the network out of reach.
EXPECTED = (IvrError, redis.RedisError, OSError)


@bp.errorhandler(Exception)
def fail_safe_on_error(exc: Exception) -> Response:
    """A bug or an outage (Redis down, a lock timeout): the caller still hears us. With
    IVR_PROPAGATE_EXCEPTIONS (the tests) a bug is raised instead, for Flask to propagate."""
    if _config().propagate_exceptions and not isinstance(exc, EXPECTED):
        raise exc
    try:
        log.error("call %s: webhook %s failed", request.form.get("CallSid", "?"), request.path,
                  exc_info=exc)
        return fail_safe(f"{type(exc).__name__}: {exc}", g.get("flow"))
    except Exception:  # not even the form could be read: the server's fallback number
        log.exception("the fail-safe answer failed too")
        metrics.failed_safe("error")
        if _on_hold():
            return _twiml(twiml.leave_queue())
        return _twiml(twiml.apology(_config().fallback_number or None))


def fail_safe(reason: str, flow=None, kind: str = "error") -> Response:
    """Valid TwiML that apologises and hands the caller to a person: the flow's fallback
    number when the flow is known, else the server's; in the flow's language (when not known,
    that of the flow that answers the number called). `kind` is why, for the metrics
    (ivr.web.metrics.failed_safe). A caller on hold first leaves the queue (`_leave_hold`)."""
    log.error("call %s failed safe: %s", request.form.get("CallSid", "?"), reason)
    metrics.failed_safe(kind)
    if _on_hold():
        return _leave_hold()
    return _apology(flow)


def _apology(flow) -> Response:
    number = (flow.settings.fallback_number if flow is not None else None) or _config().fallback_number
    return _twiml(twiml.apology(number or None, *_speaking(flow or _flow_called())))


# Twilio's waitUrl and the action of a <Gather> inside it: the caller is in <Enqueue>, where
# TwiML may only Play, Say, Pause, Hangup, Redirect, Leave and Gather (no <Dial>, no <Record>).
HOLD_ENDPOINTS = frozenset({"voice.queue_wait", "voice.queue_offer"})
FAILED_ON_HOLD = "ivr:failsafe:hold:"  # + CallSid: the next Enqueue action apologises
FAILED_ON_HOLD_TTL = 15 * 60


def _on_hold() -> bool:
    if request.endpoint == "voice.fallback":  # Twilio could not fetch the hold music
        return urlsplit(request.form.get("ErrorUrl", "")).path.endswith(("/voice/queue/wait",
                                                                          "/voice/queue/offer"))
    return request.endpoint in HOLD_ENDPOINTS


def _leave_hold() -> Response:
    """The fail-safe on hold: <Leave/>, and Twilio requests the Enqueue's action, where
    `queue_left` apologises and dials a person (TwiML allowed there). Noted in Redis when it
    can be; when Redis is what failed, the Enqueue action fails safe by itself."""
    sid = request.form.get("CallSid", "")
    if sid:
        try:
            _services().redis.set(FAILED_ON_HOLD + sid, "1", ex=FAILED_ON_HOLD_TTL)
        except Exception:  # noqa: BLE001 - Redis down: queue_left cannot load the call either
            log.warning("call %s: could not note the failure on hold", sid, exc_info=True)
    return _twiml(twiml.leave_queue())


def _flow_called():
    """The flow that answers the number this request's call was made to, or None."""
    try:
        return _services().registry.for_number(request.form.get("To"))
    except Exception:  # the apology must not fail for want of a language: English then
        log.exception("could not find the flow called, for the apology's language")
        return None


def _speaking(flow) -> tuple[Language, str | None]:
    """The language and voice of a flow (English and Twilio's voice without one)."""
    if flow is None:
        return language(None), None
    return language(flow.language, flow.messages), flow.voice


@lru_cache(maxsize=64)
def _path_of(url: str) -> str:
    return urlsplit(url).path


# -- one step of a call ----------------------------------------------------------------------


def _url_args() -> Mapping[str, str]:
    """The URL's parameters; when the fallback URL runs a failed webhook again, the failed
    URL's (its step token, the words our own recognizer heard)."""
    return g.failed_url_args if "failed_url_args" in g else request.args


def _int(form: Mapping[str, str], name: str) -> int | None:
    try:
        return int(form.get(name, ""))
    except ValueError:
        return None


def _step_token() -> int:
    try:
        return int(_url_args().get("s", "0"))
    except ValueError:
        return -1


def _context(svc: Services, sid: str, flow, state: dict | None, arrival: str | None = None):
    """The engine's Context for one call, with the callback hooks (estimates, pending callbacks)."""
    return svc.context(flow, **cbweb.hooks(
        svc.callbacks, sid, flow, state, svc.calls.prefetched(sid), (arrival, svc.calls.asked(sid))))


def _save(svc: Services, sid: str, state: dict, records: list[dict], line, **kwargs) -> None:
    """Store the step: state, log records, answer, the caller's place in line and the call's
    entry among the live calls (ivr.runtime.live, for the wallboard), at once."""
    replies = svc.calls.save(sid, state, records, commands=line.commands + live_calls.commands(sid, state),
                             reads=line.reads, **kwargs)
    line.saved(svc.callbacks, replies)


def _advance(form: Mapping[str, str], build: Callable[[dict | None], E.Event], *,
             answer: bool = True, flow_id: str | None = None, arrival: str | None = None) -> Response:
    """Apply one event to the call named by CallSid and answer with TwiML.

    `answer` requests (the ones whose TwiML drives the call) are idempotent: the step token
    `s` in the URL tells a retry from a new step, and a retry gets the stored answer.
    `flow_id` names the flow of a call we placed (a callback) instead of the called number.
    `arrival` is a new call's caller number, whose lookups go with taking the lock.
    What raises here is answered by `fail_safe_on_error`, with the call's flow once known.
    """
    sid = form.get("CallSid", "")
    if not sid:
        lang, voice = _speaking(_flow_called())
        return _twiml(twiml.text(lang.say(S.MISSING_CALL_ID), lang=lang, voice=voice), 400)
    svc = _services()
    cfg = svc.config
    svc.ensure_recorder_thread()
    token = _step_token()
    with svc.calls.lock(sid, wait_s=g.get("lock_wait_s", LOCK_WAIT_S),
                        reads=cbweb.arrival_reads(arrival), step=token if answer else None):
        state, last_step, last_twiml = svc.calls.load(sid)
        if answer and state is not None and token < last_step and last_twiml:
            log.info("call %s: repeated request for step %s, answering as before", sid, token)
            return _twiml(last_twiml)
        event = build(state)
        if isinstance(event, E.CallStarted):
            flow = _flow_for(svc, flow_id) if flow_id else svc.registry.for_number(event.to_number)
            if flow is None:
                return fail_safe(f"no flow answers calls to {event.to_number}", kind="no_flow")
            event = dataclasses.replace(
                event, caller=event.caller or svc.caller_context(flow, event.from_number))
        elif state is None:
            return fail_safe(f"no live state for {type(event).__name__}", kind="no_state")
        else:
            flow = svc.registry.get(state["flow"]) or _builtin(state["flow"])
            if flow is None:
                return fail_safe(f"flow '{state['flow']}' is no longer loaded", kind="flow_gone")
        g.flow = flow  # whose fallback number an error from here on dials
        ctx = _context(svc, sid, flow, state, arrival)
        result = _quick_answers(svc, sid, flow, run(flow, state, event, ctx), ctx)
        line = cbweb.after_step(svc.callbacks, sid, event, state, result, flow)
        result.log_error(log, sid)
        if result.error is not None:
            metrics.failed_safe("flow")
        records = _log_records(sid, event, result)
        if answer:
            step = last_step + 1
            live = None
            current = svc.registry.get(result.state.get("flow")) or flow  # after a goto_flow
            if svc.vosk_available(current):
                live = twiml.LiveSpeech(websocket_base(request, cfg) + "/voice/media",
                                        current.language, stream_token(cfg.twilio_auth_token, sid, step))
            previous = twiml.stream_name(last_step)
            stop = previous if last_twiml and f'name="{previous}"' in last_twiml else None
            body = twiml.render(result.actions, step, sid, live, stop)
            _save(svc, sid, result.state, records, line, step=step, twiml=body)
            if isinstance(event, E.RecordingDone) and event.url:
                _process_later(svc, sid, event, records, flow)
        elif result.error is not None and any(isinstance(a, (A.Dial, A.Record)) for a in result.actions):
            # The flow failed on hold, where Twilio runs no <Dial> or <Record>: the caller
            # leaves the queue, and the Enqueue's action (its step token is older) is answered
            # with this step's apology and person, stored as the call's last answer.
            step = last_step + 1
            _save(svc, sid, result.state, records, line, step=step,
                  twiml=twiml.render(result.actions, step, sid))
            body = twiml.leave_queue()
        else:
            body = twiml.wait_music(result.actions, cfg.hold_music_url, last_step)
            _save(svc, sid, result.state, records, line)
        _send_texts(svc, sid, result, flow)
        return _twiml(body)


def _send_texts(svc: Services, sid: str, result: Result, flow) -> None:
    """Hand the step's text messages to a worker, once the step is stored (a step that did
    not happen sends nothing); the call does not wait for them."""
    from ivr.runtime import sms

    for text in (a for a in result.actions if isinstance(a, A.SendSms)):
        try:
            sms.enqueue(svc.redis, sid, result.state.get("flow") or flow.id, text, svc.config)
        except Exception:  # noqa: BLE001 - the caller goes on; the step log shows it was asked for
            log.exception("call %s: could not queue the text of step %s for a worker", sid, text.id)


def _quick_answers(svc: Services, sid: str, flow, result: Result, ctx) -> Result:
    """Start the API request the step ends with; an answer that comes within
    IVR_REQUEST_QUICK_MS (or at once: a circuit open, a host not allowed) goes on in this
    webhook, so the caller hears nothing of a quick API. A slower one keeps running, and the
    TwiML plays the node's prompt, then asks /voice/request for the answer."""
    quick_s = svc.config.request_quick_ms / 1000
    for _ in range(MAX_QUICK_ANSWERS):
        req = result.actions[-1] if result.actions else None
        if not isinstance(req, A.Request):
            return result
        done = svc.requests.start(sid, req, quick_s)
        if done is None:
            return result
        current = svc.registry.get(result.state.get("flow")) or flow
        more = run(current, result.state, done, ctx)
        result = Result(result.actions[:-1] + more.actions, more.state, result.steps + more.steps,
                        more.ended or result.ended, more.error or result.error)
    return result


def _flow_for(svc: Services, flow_id: str):
    flow = svc.registry.get(flow_id) or cbweb.builtin_for(flow_id)
    if flow is None:
        log.error("flow '%s' is not loaded: the callback call uses the built-in greeting", flow_id)
        flow = cbweb.builtin_flow()
    return flow


def _builtin(flow_id: str):
    return cbweb.builtin_for(flow_id)


def _callback_flow(svc: Services, record: dict):
    """The flow a callback call runs: the queue's callback flow, or when it is not loaded the
    built-in greeting in the language of the flow the callback was booked from."""
    flow_id = record.get("flow") or "callback"
    flow = svc.registry.get(flow_id)
    if flow is None:
        log.error("flow '%s' is not loaded: the callback call uses the built-in greeting", flow_id)
        origin = svc.registry.get(record.get("origin_flow") or "")
        flow = cbweb.builtin_flow(origin.language if origin is not None else "en-US")
    return flow


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


@webhook("")
def incoming() -> Response:
    """Twilio's Voice URL: a call has arrived."""
    form = request.form
    region = _config().default_region
    caller = normalize(form.get("From"), region)
    return _advance(form, lambda state: E.CallStarted(
        form.get("CallSid", ""), caller, normalize(form.get("To"), region) or form.get("To"),
        parent_call_sid=form.get("ParentCallSid") or None), arrival=caller)


@webhook("/gather")
def gather() -> Response:
    form, args = request.form, _url_args()

    def event(state):
        if form.get("Digits"):
            return E.Digits(form["Digits"])
        # Twilio's recognizer posts SpeechResult; our own (vosk, ivr.web.media) redirects the call
        # here with the words in the signed URL.
        text = form.get("SpeechResult", "").strip() or args.get("speech", "").strip()
        if text:
            raw = form.get("Confidence") or args.get("confidence", "")
            try:
                confidence = float(raw)
            except ValueError:
                confidence = None
            return E.Speech(text, confidence)
        return E.NoInput()

    return _advance(form, event)


@webhook("/queue/wait")
def queue_wait() -> Response:
    form = request.form
    return _advance(form, lambda state: E.QueueWait(
        _int(form, "QueuePosition"), _int(form, "QueueTime"), _int(form, "AvgQueueTime"),
        _int(form, "CurrentQueueSize")), answer=False)


@webhook("/queue/offer")
def queue_offer() -> Response:
    """A key press or words during the hold music (the callback offer's <Gather>)."""
    form = request.form

    def event(state):
        if form.get("Digits"):
            return E.Digits(form["Digits"])
        return E.Speech(form.get("SpeechResult", "").strip(), None)

    return _advance(form, event, answer=False)


@webhook("/queue/left")
def queue_left() -> Response:
    form = request.form
    if _services().redis.delete(FAILED_ON_HOLD + form.get("CallSid", "")):
        # the hold music failed and left the queue: the apology and a person, from here
        log.error("call %s: out of the queue after a failure on hold, to the fallback number",
                  form.get("CallSid"))
        state, _, _ = _services().calls.load(form.get("CallSid", ""))
        flow_id = (state or {}).get("flow") or ""
        return _apology(_services().registry.get(flow_id) or _builtin(flow_id))
    return _advance(form, lambda state: E.QueueLeft(form.get("QueueResult", "error"),
                                                    _int(form, "QueueTime")))


@webhook("/dial")
def dial() -> Response:
    form = request.form
    return _advance(form, lambda state: E.TransferEnded(form.get("DialCallStatus", "failed"),
                                                        _int(form, "DialCallDuration")))


@webhook("/record")
def record() -> Response:
    form = request.form
    return _advance(form, lambda state: E.RecordingDone(
        form.get("RecordingUrl") or None, _int(form, "RecordingDuration"), form.get("Digits") or None))


@webhook("/request")
def request_answered() -> Response:
    """Twilio comes back after the caller heard a `request:` node's prompt: the API's answer,
    if it came, goes to the flow; if not yet, the caller hears the node's `hold` prompt and
    Twilio asks again; past the request's deadline, the flow gets error "lost"."""
    form = request.form
    sid = form.get("CallSid", "")
    svc = _services()
    state, last_step, _ = svc.calls.load(sid) if sid else (None, 0, None)
    pending = (state or {}).get("req") if Wait.of((state or {}).get("wait")) is Wait.REQUEST else None
    event: E.Event | None = None
    if pending and _step_token() == last_step:
        deadline = (datetime.fromisoformat(pending["at"]).timestamp() + float(pending["timeout"])
                    + REQUEST_GRACE_S)
        left = deadline - runtime_services.clock().timestamp()  # the engine's clock
        done = svc.requests.result(sid, pending["id"], min(REQUEST_POLL_S, max(left, 0.0)))
        if done is not None:
            event = dataclasses.replace(done, heard_prompt=True)
        elif runtime_services.clock().timestamp() >= deadline:
            log.error("call %s: the answer to request %s never came back", sid, pending["id"])
            event = E.RequestDone(pending["id"], error="lost", heard_prompt=True)
        else:
            event = E.RequestWaiting(pending["id"])
    # A retried or stale request: the stored answer, or the current node said again.
    return _advance(form, lambda state: event or E.RequestWaiting(""))


@webhook("/whisper")
def whisper() -> Response:
    """Played to the agent who answers a transfer, before the caller is connected."""
    parent = request.args.get("call", "")
    text, flow = None, None
    try:
        svc = _services()
        state, _, _ = svc.calls.load(parent)
        if state:
            flow = svc.registry.get(state.get("flow") or "") or _builtin(state.get("flow") or "")
            text = state.get("whisper")
        if state and state.get("callback") and svc.callbacks is not None:
            cbweb.connected(svc.callbacks, state["callback"])  # the agent answered a callback call
    except Exception:  # the agent still gets the call, just without the summary
        log.exception("whisper for %s: could not read call state", parent)
    lang, voice = _speaking(flow or _flow_called())
    return _twiml(twiml.text(text or lang.say(S.WHISPER_DEFAULT), hangup=False, lang=lang, voice=voice))


@webhook("/status")
def status() -> Response:
    """Twilio's status callback: closes the call record with its duration and outcome."""
    form = request.form
    return _call_ended(form.get("CallSid", ""), form.get("CallStatus", ""), _int(form, "CallDuration"))


def _call_ended(sid: str, call_status: str, duration: int | None) -> Response:
    if call_status not in FINAL_STATUSES:
        return _no_content()
    svc = _services()
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
                return _no_content()
            flow = svc.registry.get(state["flow"]) or _builtin(state["flow"])
            if flow is None:
                outcome = state.get("outcome") or (Outcome.FAILED if call_status == "failed"
                                                   else Outcome.ABANDONED)
                result_state, steps, ended = dict(state, wait=Wait.ENDED, hung_up=True, line=None), [], {
                    "outcome": outcome, "last_node": state.get("node")}
                line = cbweb.line_change(sid, state, result_state)
            else:
                hangup = E.HangUp(call_status, duration)
                result = run(flow, state, hangup, _context(svc, sid, flow, state))
                result.log_error(log, sid)
                line = cbweb.after_step(svc.callbacks, sid, hangup, state, result, flow)
                result_state, steps, ended = result.state, result.steps, result.ended or {}
            records = [{"type": "step", "call_sid": sid, **s} for s in steps]
            records.append({"type": "call_ended", "call_sid": sid, "status": call_status,
                            "duration_s": duration, "ended_at": ended_at,
                            "outcome": ended.get("outcome"), "last_node": ended.get("last_node")})
            _save(svc, sid, result_state, records, line, ttl=ENDED_TTL)
    except Exception:
        # Twilio retries nothing here and the caller is gone; log loudly for the supervisor.
        log.exception("status callback for %s could not be recorded", sid)
        return _no_content(503)
    return _no_content()


# -- the fallback URL ------------------------------------------------------------------------

# Webhooks the fallback URL may run again, with the fields the fallback request must carry for
# it (any one of them): the failed request's own answer to the step. A hold-music cycle, the
# callback offer and the agent's whisper are left out: they keep no answer per step, so a
# failed request that did run would run twice.
RECOVERABLE: dict[str, tuple[str, ...]] = {
    "voice.incoming": (),
    "voice.gather": ("Digits", "SpeechResult"),
    "voice.queue_left": ("QueueResult",),
    "voice.dial": ("DialCallStatus",),
    "voice.record": ("RecordingUrl",),
    "voice.request_answered": (),
}


@webhook("/fallback")
def fallback() -> Response:
    """Twilio's fallback URL: a webhook of the call failed (no answer, an HTTP error, a timeout).

    When Twilio could not fetch the answer of one of the call's webhooks, a proxy's dropped
    connection or a restarting process must not cost the caller their place in the menu:
    a step the failed request did store (its answer was lost on the way back) is answered as
    it was, and one it did not store runs here, if this request carries what the caller did
    (the digits, the recording...). Anything else, or a second failure, gets the apology and
    a person."""
    form = request.form
    sid, code, failed_url = form.get("CallSid", ""), form.get("ErrorCode", ""), form.get("ErrorUrl", "")
    reason = f"Twilio used the fallback URL (ErrorCode={code}, ErrorUrl={failed_url})"
    found = _recoverable(code, failed_url)
    if found is None or not sid:
        return fail_safe(reason, kind="fallback")
    view, needs = found
    args = MultiDict(parse_qsl(urlsplit(failed_url).query, keep_blank_values=True))
    try:
        state, last_step, last_twiml = _services().calls.load(sid)
        token = int(args.get("s", "0"))
    except ValueError:
        return fail_safe(f"{reason}; its step token is not a number", kind="fallback")
    except redis.RedisError as exc:  # Redis down: the step cannot run here either
        return fail_safe(f"{reason}; again: {type(exc).__name__}: {exc}", kind="fallback")
    if state is not None and token < last_step and last_twiml:
        log.warning("call %s: %s; answering that step as before", sid, reason)
        return _twiml(last_twiml)
    if needs and not any(form.get(name) for name in needs):
        # Twilio need not send the failed request's own fields again: without them the step
        # would run as if the caller had done nothing (or a transfer had failed).
        return fail_safe(f"{reason}; this request lacks {' or '.join(needs)}", kind="fallback")
    log.warning("call %s: %s; running that webhook again", sid, reason)
    # the view reads its step token from the URL that failed, not from this one
    g.failed_url_args, g.lock_wait_s = args, FALLBACK_LOCK_WAIT_S
    try:
        response = view()
    except Exception as exc:
        log.exception("call %s: running %s again failed", sid, failed_url)
        return fail_safe(f"{reason}; again: {type(exc).__name__}: {exc}", g.get("flow"), kind="fallback")
    if response.status_code != 200:  # the same refusal would end the call
        return fail_safe(f"{reason}; again: HTTP {response.status_code}", kind="fallback")
    return response


def _recoverable(code: str, failed_url: str) -> tuple[Callable[[], Response], tuple[str, ...]] | None:
    """The view to run again for a fallback request and the fields it needs, or None. Only
    failures to fetch an answer (Twilio's 112xx errors: no connection, an HTTP error status,
    a timeout) qualify: an answer Twilio could not parse or run (12100 and on) would come out
    the same again."""
    if not code.startswith("112"):
        return None
    # Its host may differ from ours (a fallback URL on another name of the same deployment);
    # its path must be one of our webhooks, under the path we are published at.
    prefix = _path_of(public_base(request, _config())).rstrip("/")
    path = urlsplit(failed_url).path
    if prefix and not path.startswith(prefix + "/"):
        return None
    try:
        endpoint, _ = current_app.url_map.bind("ivr").match(path[len(prefix):], method="POST")
    except HTTPException:  # not found, or not a webhook's path
        return None
    if endpoint not in RECOVERABLE:
        return None
    # this request's signature was checked already; the failed URL's cannot be checked here
    return current_app.view_functions[endpoint], RECOVERABLE[endpoint]


@webhook("/fallback/done")
def fallback_done() -> Response:
    form = request.form
    if form.get("RecordingUrl"):
        log.error("call %s left a message while the system was failing: %s",
                  form.get("CallSid"), form.get("RecordingUrl"))
    lang, voice = _speaking(_flow_called())
    return _twiml(twiml.text(lang.say(S.WILL_CALL_BACK), lang=lang, voice=voice))


# -- callback calls (placed by callbacks/dispatch.py) -------------------------------------------


def _callback_args() -> tuple[str, int]:
    args = request.args
    try:
        return args.get("cb", ""), int(args.get("a", "0"))
    except ValueError:
        return args.get("cb", ""), 0


@webhook("/callback")
def callback_answered() -> Response:
    """A callback call was answered (after answering-machine detection): run the callback flow,
    or hang up on a machine (the attempt then counts as one, and is retried)."""
    form = request.form
    svc = _services()
    callback_id, attempt = _callback_args()
    try:
        verdict, record = cbweb.answer_leg(svc.callbacks, callback_id, attempt, form)
    except Exception:  # Redis trouble: apologise; the status callback settles the attempt
        log.exception("callback %s: answered, but the callback could not be read", callback_id)
        lang, voice = _speaking(_flow_called())
        return _twiml(twiml.text(lang.say(S.CALL_BACK_SOON), lang=lang, voice=voice))
    if verdict != "run":
        log.info("callback %s attempt %s: %s, hanging up", callback_id, attempt,
                 "an answering machine" if verdict == "machine" else "not the current attempt")
        return _twiml(twiml.hangup())
    caller = dict(record.get("caller") or {"known": False}, phone=record["number"])
    flow = _callback_flow(svc, record)
    lang = language(flow.language, flow.messages)
    context = cbweb.leg_context(svc.callbacks, record, lang, lang.country or svc.config.default_region)
    return _advance(form, lambda state: E.CallStarted(
        form.get("CallSid", ""), record["number"], record.get("line_number") or None, caller,
        parent_call_sid=record.get("call_sid"), callback=context), flow_id=flow.id)


@webhook("/callback/status")
def callback_status() -> Response:
    """Status callbacks of a callback call: the attempt's outcome, then the usual end of call."""
    form = request.form
    callback_id, attempt = _callback_args()
    try:
        cbweb.leg_status(_services().callbacks, callback_id, attempt, form)
    except Exception:
        log.exception("callback %s: status %s could not be applied; the sweep will ask Twilio",
                      callback_id, form.get("CallStatus"))
    return _call_ended(form.get("CallSid", ""), form.get("CallStatus", ""), _int(form, "CallDuration"))
