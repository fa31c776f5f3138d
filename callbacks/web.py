"""What the webhook layer (ivr/web/voice.py) does for callbacks, kept out of the engine.

- `hooks`: the Context functions the engine asks (a queue's estimate for this caller, the
  caller's pending callback).
- `after_step`: carry out the engine's callback actions (book, cancel) and keep the caller's
  place in the line in step with the call state.
- `answer_leg`, `leg_context`, `leg_status`, `connected`: the outbound callback call.

Everything here is a few Redis commands; SQL is never touched on the webhook path.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import Any

from ivr.engine import actions as A
from ivr.engine import events as E
from ivr.engine.states import callback_is_live
from ivr.flows.loader import load_flow_text
from ivr.flows.model import Flow
from ivr.i18n import Language, language
from ivr.i18n import sentences as S

from . import estimate, keys, line, window
from .dispatch import attempt_over, ensure_sweep, request_dispatch, settle
from .runtime import Runtime
from .store import CallbackError

log = logging.getLogger("callbacks.web")

MACHINE = ("machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax")
FINAL_CALL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")

# Used when a queue's callback flow is not loaded: the caller still reaches the agent, in
# the language of the flow they booked it from. Its id names that language.
BUILTIN_ID = "callback_builtin"
BUILTIN_FLOW = """
id: {id}
language: {language}
start: greet
nodes:
  greet:
    say: {greeting}
    next: connect
  connect:
    transfer:
      to: "{{{{ callback.agent_contact }}}}"
      timeout: 30
    next: sorry
  sorry:
    hangup: {sorry}
"""


def builtin_id(tag: str) -> str:
    return BUILTIN_ID if tag == "en-US" else f"{BUILTIN_ID}_{tag}"


def builtin_for(flow_id: str) -> Flow | None:
    """The built-in callback flow an id names (`callback_builtin_fr-FR`), or None."""
    if flow_id == BUILTIN_ID:
        return builtin_flow()
    if flow_id.startswith(BUILTIN_ID + "_"):
        return builtin_flow(flow_id[len(BUILTIN_ID) + 1:])
    return None


@lru_cache(maxsize=16)
def builtin_flow(tag: str = "en-US") -> Flow:
    lang = language(tag)
    with_name = lang.text(S.CALLBACK_HELLO_NAME).replace("{name}", "{{ caller.first_name }}")
    anonymous = lang.text(S.CALLBACK_HELLO)
    greeting = f"{{% if caller.first_name %}}{with_name}{{% else %}}{anonymous}{{% endif %}}"
    text = BUILTIN_FLOW.format(id=builtin_id(tag), language=json.dumps(tag), greeting=json.dumps(greeting),
                               sorry=json.dumps(lang.say(S.CALLBACK_MISSED)))
    return load_flow_text(text, "<built-in callback flow>", builtin_id(tag))


def arrival_reads(number: str | None) -> list[list[str]]:
    """What a new call's first webhook reads with the call's lock: the caller's pending
    callback (most callers have none, and then that is all it costs)."""
    return [["GET", keys.by_number(number)]] if number else []


def hooks(rt: Runtime, call_sid: str, flow: Any = None, state: dict | None = None,
          prefetched: list[Any] | None = None, arrival: tuple[str | None, list[Any]] = (None, [])) -> dict:
    """Context fields for one call: `estimate`, `pending_callback` and `calling_opens`.

    `prefetched` are the replies to the estimate reads (`LineChange.reads`) of the queue the
    call holds a place in (`state`), run when its lock was taken; `arrival` the caller's
    number and the replies to its `arrival_reads`.
    """
    cfg = rt.config
    held = ((state or {}).get("line") or {}).get("queue") if prefetched else None

    def calling_opens(number: str, calling_hours: Any, expire_after: int) -> float | None:
        from ivr.runtime import services

        now = services.clock()  # the engine's clock: the call's own "now", pinned in tests
        zones = window.zones_for(number, line_zone(flow))
        opens = window.next_open(calling_hours, zones, now, until=now + timedelta(seconds=expire_after))
        return None if opens is None else max(0.0, (opens - now).total_seconds())

    def estimate_for(queue: str, position: int | None = None):
        try:
            if queue == held:
                return estimate.from_replies(prefetched, cfg.callback_handle_time, position)
            return estimate.for_caller(rt.redis, rt.agents, queue, keys.live_member(call_sid),
                                       cfg.callback_handle_time, position)
        except Exception:  # no estimate is better than a failed call
            log.exception("call %s: could not estimate the wait of queue %s", call_sid, queue)
            return None

    def pending_for(number: str) -> dict | None:
        if arrival[0] == number and arrival[1] and arrival[1][0] is None:
            return None  # read with the lock: no pending callback
        try:
            record = rt.callbacks.pending_for(number)
            if record is None:
                return None
            est = estimate.for_caller(rt.redis, rt.agents, record["queue"],
                                      keys.callback_member(record["id"]), cfg.callback_handle_time)
            wait = est.wait_s if est.agents_available else None
            not_before = (record.get("not_before") or 0) - time.time()
            if not_before > 0:
                wait = max(wait or 0.0, not_before)
            return {"id": record["id"], "queue": record["queue"], "wait_s": wait}
        except Exception:
            log.exception("call %s: could not look up pending callbacks", call_sid)
            return None

    return {"estimate": estimate_for, "pending_callback": pending_for, "calling_opens": calling_opens,
            "region": cfg.default_region}


def line_zone(flow: Any) -> str:
    """The line's own time zone: its business hours' (for numbers that say too little)."""
    return next((h.timezone.key for h in getattr(flow, "hours", {}).values()), "UTC")


def after_step(rt: Runtime, call_sid: str, event: E.Event, old: dict | None, result: Any,
               flow: Any) -> LineChange:
    """Carry out the callback actions of one engine step; return the change to the caller's
    place in the line, which the webhook saves together with the call state.

    A booking that fails raises: the caller must not hear "we'll call you back" unless the
    callback is stored, so the webhook then fails safe (an apology and a person).
    """
    state = result.state or {}
    for action in result.actions:
        if isinstance(action, A.RequestCallback):
            book(rt, call_sid, state, action, flow)
        elif isinstance(action, A.CancelCallback):
            try:
                rt.callbacks.cancel(action.callback_id, by="the caller")
            except CallbackError as exc:
                # Being dialled right now (to this busy line): the caller was told it is
                # cancelled, so it is, as soon as that attempt ends, instead of a retry.
                log.warning("call %s: %s; it is cancelled when the attempt ends", call_sid, exc)
                rt.callbacks.note(action.callback_id, "cancel_requested", "1")
    callback = state.get("callback") or {}
    if (isinstance(event, E.TransferEnded) and callback.get("id")
            and event.status not in ("completed", "answered")):
        rt.callbacks.note(callback["id"], "agent_missed", event.status)
    return line_change(call_sid, old, state, rt)


def book(rt: Runtime, call_sid: str, state: dict, action: A.RequestCallback, flow: Any) -> str:
    zone = line_zone(flow)
    caller = state.get("caller") or {}
    cid, created = rt.callbacks.request(
        call_sid=call_sid, number=action.number, queue=action.queue,
        enqueued_at=line.epoch(action.enqueued_at), flow=action.flow, origin_flow=state.get("flow"),
        line_number=state.get("to") or "",
        caller={k: caller.get(k) for k in ("known", "first_name", "last_name", "full_name",
                                           "customer_id") if caller.get(k) not in (None, "")},
        intent=state.get("intent"), vars=state.get("vars") or {}, reason_url=action.reason_url,
        reason_seq=action.reason_seq, max_attempts=action.max_attempts, retry_after=action.retry_after,
        expire_after=action.expire_after, calling_hours=action.calling_hours,
        zones=window.zones_for(action.number, zone))
    log.info("call %s: callback %s %s for %s in %s", call_sid, cid,
             "booked" if created else "was already booked", action.number, action.queue)
    request_dispatch(rt.redis, [action.queue])
    ensure_sweep(rt.redis, rt.config.callback_sweep_interval)
    return cid


@dataclass(frozen=True)
class LineChange:
    """Redis commands that keep a caller's place in a queue's line in step with the call
    state. They run in the script that saves the state (ivr/runtime/callstate.py), so the two always
    agree and cost no round trip of their own."""

    commands: list[list[str | float]] = field(default_factory=list)
    left: str | None = None  # the queue the caller stopped holding a place in
    # While the caller holds a place: the reads of their next wait cycle's estimate, which
    # the script that takes the call's lock answers (no round trip on every hold-music cycle).
    reads: list[list[str]] = field(default_factory=list)

    def saved(self, rt: Runtime, replies: list[Any]) -> None:
        """After the save: a caller who left a line may let a waiting callback be next."""
        # replies: ZREM, ZCARD of the active callbacks; none when a resent save found the
        # step stored already (then ask anyway: a dispatch with nothing to do is cheap)
        if self.left and (not replies or replies[1]):
            request_dispatch(rt.redis, [self.left])


def line_change(call_sid: str, old: dict | None, new: dict, rt: Runtime | None = None) -> LineChange:
    """Join the line when the call enters a queue, leave it when it stops holding a place."""
    before, after = (old or {}).get("line"), new.get("line")
    member = keys.live_member(call_sid)
    reads = estimate.reads(rt.agents, after["queue"], member) if after and rt is not None else []
    if before == after:
        return LineChange(reads=reads)
    commands: list[list[str | float]] = []
    left = None
    if before and (not after or after.get("queue") != before.get("queue")):
        left = before["queue"]
        commands += [["ZREM", keys.line(left), member], ["ZCARD", keys.ACTIVE]]
    if after:
        # NX: a caller already in the line keeps their first place
        commands += [["ZADD", keys.line(after["queue"]), "NX", line.epoch(after["since"]), member],
                     ["SADD", keys.LINES, after["queue"]]]
    return LineChange(commands, left, reads)


# -- the callback call ------------------------------------------------------------------------


def answer_leg(rt: Runtime, callback_id: str, attempt: int, form: Any) -> tuple[str, dict | None]:
    """Twilio asks what to do with the answered callback call. Returns ("run", record) to run
    the callback flow, "machine" to hang up on a machine, or "stale" for an attempt that is
    not current (hang up)."""
    record = rt.callbacks.get(callback_id)
    if record is None or record.get("dial_attempt") != attempt or not callback_is_live(record["status"]):
        return "stale", None
    answered_by = form.get("AnsweredBy") or "unknown"
    human = answered_by not in MACHINE
    rt.callbacks.progress(callback_id, attempt, sid=form.get("CallSid", ""), answered_by=answered_by,
                          human=human)
    return ("run" if human else "machine"), rt.callbacks.get(callback_id)


def leg_context(rt: Runtime, record: dict, lang: Language | None = None, region: str | None = None) -> dict:
    """`callback.*` in the callback flow: what the caller is told and the agent needs, in the
    language of the flow that runs the call (`lang`; its country `region`)."""
    lang = lang or language(None)
    region = region or rt.config.default_region
    agent = rt.roster.agents().get(record.get("agent") or "")
    contact = agent.contact if agent else (rt.config.fallback_number or "")
    requested = lang.ago(time.time() - (record.get("requested_at") or time.time()))
    return {"id": record["id"], "attempt": record.get("dial_attempt"), "queue": record["queue"],
            "agent": record.get("agent") or "", "agent_contact": contact,
            "reason": record.get("reason_text") or "", "reason_url": record.get("reason_url") or "",
            "intent": record.get("intent"), "vars": record.get("vars") or {}, "requested": requested,
            "number": record["number"], "number_spoken": lang.phone(record["number"], region)}


def connected(rt: Runtime, callback: dict) -> None:
    """The agent answered (their whisper is being played): the callback is connected."""
    if callback.get("id") and callback.get("attempt"):
        rt.callbacks.connected(callback["id"], int(callback["attempt"]))


def leg_status(rt: Runtime, callback_id: str, attempt: int, form: Any) -> str | None:
    """A status callback of a callback call: note its SID early, settle the attempt at the end."""
    sid = form.get("CallSid", "")
    call_status = form.get("CallStatus", "")
    record = rt.callbacks.get(callback_id)
    if record is None or record.get("dial_attempt") != attempt:
        return None
    if callback_is_live(record["status"]) and sid:
        rt.callbacks.progress(callback_id, attempt, sid=sid)
    if call_status not in FINAL_CALL_STATUSES:
        return None
    record = rt.callbacks.get(callback_id) or record
    if not callback_is_live(record["status"]):
        return None
    return settle(rt, record, call_status)


def fail_leg(rt: Runtime, callback_id: str, attempt: int, why: str) -> None:
    """The callback call could not be served (our side failed): try again later."""
    record = rt.callbacks.get(callback_id)
    if record is not None and callback_is_live(record["status"]):
        attempt_over(rt, record, attempt, why)
