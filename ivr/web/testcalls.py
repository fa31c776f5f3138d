"""Test calls from the dashboard: an operator plays the caller in the browser.

Each request runs one caller action through `SimulatedCall`, so the flow, the engine, the
caller directory and the intent matcher are exactly those of real calls; only the phone is
pretend. Between requests the call lives in Redis (any web process can take the next click),
and every step goes to the step log the way real calls' steps do: appended to the Redis
stream in the same transaction as the call's state, then written to SQL by the recorder,
with `is_test` set so reports leave them out.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ivr.calllog import recorder
from ivr.engine import actions as A
from ivr.engine import events as E
from ivr.engine.answers import NoAnswer, answering, caller_lookup, declared_for
from ivr.engine.runner import Estimate, clock
from ivr.engine.simulation import SimulatedCall, describe_request, describe_wait, parse_input
from ivr.engine.states import Wait, is_listening, is_over, records_a_message
from ivr.errors import IvrError

PREFIX = "ivr:testcall:"
TTL_S = 2 * 3600  # a test call left open in a browser tab is forgotten after this
QUEUE_CYCLE_S = 30  # seconds of hold music one "keep holding" click stands for


class TestCallError(IvrError):
    """Something the operator asked for that cannot be done; the message says what."""


@dataclass
class Choice:
    """A button the page offers for the call's current wait."""

    action: str
    label: str


def _now() -> datetime:
    return clock()


class TestCalls:
    """Start and drive test calls; `services` is the process's `ivr.runtime.services.Services`."""

    def __init__(self, services: Any):
        self.svc = services

    # -- keys and persistence -----------------------------------------------------------

    @staticmethod
    def key(sid: str) -> str:
        return PREFIX + sid

    def load(self, sid: str) -> dict | None:
        if not sid.startswith("TC") or not sid[2:].isalnum():
            return None
        raw = self.svc.redis.get(self.key(sid))
        return json.loads(raw) if raw else None

    def _save(self, call: dict, records: list[dict]) -> None:
        """The call and its new log records, in one MULTI, as real calls do."""
        self.svc.ensure_recorder_thread()  # this process may not have taken a webhook yet
        pipe = self.svc.redis.pipeline(transaction=True)
        pipe.set(self.key(call["sid"]), json.dumps(call, separators=(",", ":")), ex=TTL_S)
        recorder.append(pipe, records)
        pipe.execute()

    # -- the pretend clock ----------------------------------------------------------------

    @staticmethod
    def _clock(call: dict) -> datetime:
        """Now, or the operator's pretend time moved on by the real time since the call began."""
        if not call.get("pretend_at"):
            return _now()
        elapsed = time.time() - call["created"]
        return datetime.fromisoformat(call["pretend_at"]) + timedelta(seconds=elapsed)

    # -- running the engine ---------------------------------------------------------------

    def _simulated(self, call: dict, flow: Any, now: datetime) -> SimulatedCall:
        registry = self.svc.registry
        wait = call.get("estimated_wait_s")

        def estimate(queue: str, position: int | None = None) -> Estimate | None:
            if wait is None:
                return None
            return Estimate(position=position or max(1, round(wait / 120)), wait_s=float(wait),
                            agents_available=1)

        sim = SimulatedCall(flow, call["raw_from"], flows=registry.flows, now=now,
                            directory=registry.directory(flow), match=self.svc.matchers.match,
                            caller=(call["state"] or {}).get("caller") if call.get("state") else None,
                            call_sid=call["sid"], region=self.svc.config.default_region,
                            estimate=estimate, propagate=self.svc.config.propagate_exceptions,
                            requester=self._requester(call), caller_lookup=self._caller_lookup(call, flow))
        sim.state = call.get("state")
        return sim

    def _caller_lookup(self, call: dict, flow: Any):
        """Who calls, for a flow whose directory is an HTTP API: the real one, or the answer
        the flow's tests declare for it."""
        if flow.directory_api is None:
            return None
        if call.get("live_requests"):
            return lambda phone: self.svc.crm.lookup(flow, phone)
        return caller_lookup(declared_for(flow)[0], flow)

    def _requester(self, call: dict):
        """Request nodes get the real API (the box "call the real APIs" ticked), or the answers
        the flow's test files declare; a request with no declared answer fails as if its API
        were down, and the transcript says so."""
        if call.get("live_requests"):
            quick_ms = self.svc.config.request_quick_ms

            def live(req: A.Request) -> E.RequestDone:
                done = self.svc.perform_request(req)
                return dataclasses.replace(done, heard_prompt=(done.ms or 0) > quick_ms)

            return live

        def declared(req: A.Request) -> E.RequestDone:
            flow = self.svc.registry.get(call["state"]["flow"] if call.get("state") else call["flow"])
            try:
                return answering(declared_for(flow)[0] if flow else {})(req)
            except NoAnswer:
                return E.RequestDone(req.id, error="not_declared")

        return declared

    def start(self, flow_id: str, from_number: str, *, pretend_at: datetime | None = None,
              estimated_wait_s: int | None = None, user: str | None = None,
              live_requests: bool = False) -> dict:
        """Place a test call to `flow_id` from `from_number` (any format, or Anonymous)."""
        flow = self.svc.registry.get(flow_id)
        if flow is None:
            raise TestCallError(f"no flow '{flow_id}' is loaded")
        sid = "TC" + secrets.token_hex(16)
        call: dict[str, Any] = {
            "sid": sid, "flow": flow.id, "raw_from": (from_number or "").strip() or "Anonymous",
            "pretend_at": pretend_at.astimezone(UTC).isoformat() if pretend_at else None,
            "created": time.time(), "user": user, "estimated_wait_s": estimated_wait_s,
            "state": None, "steps": [], "transcript": [], "ended": None, "queue_cycles": 0,
            "live_requests": bool(live_requests),
        }
        now = self._clock(call)
        sim = self._simulated(call, flow, now)
        sim.start()
        state = sim.state
        caller = state.get("caller") or {}
        records: list[dict] = [{
            "type": "call_started", "call_sid": sid, "flow": flow.id, "from_number": sim.from_number,
            "to_number": sim.to_number, "caller_known": bool(caller.get("known")),
            "customer_id": caller.get("customer_id") or None, "started_at": state.get("started"),
            "is_test": True, "parent_call_sid": None,
        }]
        who = (f"known caller {caller.get('full_name') or caller.get('first_name')}"
               if caller.get("known") else "unknown caller")
        number = sim.from_number or "a withheld number"
        call["transcript"].append({"who": "note",
                                   "text": f"Test call from {number} ({who}) to flow '{flow.id}'"})
        self._finish(call, sim, records, now)
        return call

    @contextmanager
    def _lock(self, sid: str) -> Iterator[None]:
        """One click at a time per call (a double click must not run a step twice)."""
        key, token = self.key(sid) + ":lock", secrets.token_hex(8)
        deadline = time.monotonic() + 5
        while not self.svc.redis.set(key, token, nx=True, px=10_000):
            if time.monotonic() > deadline:
                raise TestCallError("this test call is busy: try again")
            time.sleep(0.02)
        try:
            yield
        finally:
            held = self.svc.redis.get(key)
            if held is not None and (held.decode() if isinstance(held, bytes) else held) == token:
                self.svc.redis.delete(key)

    def send(self, sid: str, action: str, text: str = "") -> dict:
        """Apply one caller action: `say` (text), `press` (digits), `silence`, `hangup`,
        `hold`, `agent_answers`, `no_answer`, `leave` (queue), `message` (recording)."""
        with self._lock(sid):
            return self._send(sid, action, text)

    def _send(self, sid: str, action: str, text: str) -> dict:
        call = self.load(sid)
        if call is None:
            raise TestCallError("this test call is over or has expired: start a new one")
        if call.get("ended"):
            raise TestCallError("this test call has ended: start a new one")
        flow = self.svc.registry.get(call["state"]["flow"]) or self.svc.registry.get(call["flow"])
        if flow is None:
            raise TestCallError(f"flow '{call['flow']}' is no longer loaded")
        now = self._clock(call)
        sim = self._simulated(call, flow, now)
        event, said_by_caller = self._event(call, sim, action, text, now)
        if said_by_caller:
            call["transcript"].append({"who": "caller", "text": said_by_caller})
        sim.send(event)
        self._finish(call, sim, [], now)
        return call

    def _event(self, call: dict, sim: SimulatedCall, action: str, text: str,
               now: datetime) -> tuple[E.Event, str]:
        wait = Wait.of(sim.waiting_for)
        text = (text or "").strip()
        recording = records_a_message(sim.state)
        if action == "hangup":
            return E.HangUp("completed", self._duration(call, now)), "(hangs up)"
        if wait is Wait.QUEUE:
            since = ((sim.state or {}).get("line") or {}).get("since")
            queue_time = call["queue_cycles"] * QUEUE_CYCLE_S
            if since and not call.get("pretend_at"):
                queue_time = max(queue_time, int((now - datetime.fromisoformat(since)).total_seconds()))
            if action == "hold":
                call["queue_cycles"] += 1
                return E.QueueWait(1, queue_time + QUEUE_CYCLE_S, 60, 1), "(keeps holding)"
            if action == "agent_answers":
                return E.QueueLeft("bridged", queue_time), "(an agent takes the call)"
            if action == "leave":
                return E.QueueLeft("leave", queue_time), "(leaves the queue unanswered)"
            if action == "press" and text:
                return E.Digits(text), f"presses {text}"
            if action == "say" and text:
                return E.Speech(text, 0.9), text
        elif wait is Wait.DIAL:
            if action == "agent_answers":
                return E.TransferEnded("completed", 60), "(the agent answers)"
            if action == "no_answer":
                return E.TransferEnded("no-answer", None), "(nobody answers)"
        elif recording:
            if action in ("message", "say"):
                words = len(text.split())
                done = E.RecordingDone(f"test-recording:{call['sid']}", max(1, words * 2) if words else None)
                return done, f"(leaves a message) {text}".strip()
        elif is_listening(wait):
            if action == "silence":
                return E.NoInput(), "(says nothing)"
            if action == "press":
                digits = "".join(ch for ch in text if ch in "0123456789*#")
                if not digits:
                    raise TestCallError("press needs keypad keys: 0-9, * or #")
                return E.Digits(digits), f"presses {digits}"
            if action == "say":
                if not text:
                    return E.NoInput(), "(says nothing)"
                event = parse_input(text)
                return (event, text) if isinstance(event, E.Speech) else (E.Speech(text, 0.9), text)
        raise TestCallError(f"'{action}' is not possible now (the call is waiting for: {wait})")

    @staticmethod
    def _duration(call: dict, now: datetime) -> int:
        started = datetime.fromisoformat(call["state"]["started"]) if call.get("state") else now
        return max(0, int((now - started).total_seconds()))

    def _finish(self, call: dict, sim: SimulatedCall, records: list[dict], now: datetime) -> None:
        """Note what the caller heard, end the call the way Twilio's status callback would once
        the flow has finished, and save the call with its new log records."""
        if is_over(sim.waiting_for) and sim.ended is None:
            sim.send(E.HangUp("completed", self._duration(call, now)))
        asked = iter(sim.requests)
        for result in sim.results:
            for req, done in asked:  # each request comes before what the caller heard after it
                note = describe_request(req, done).strip("[]")
                if not call.get("live_requests") and done.error != "not_declared":
                    note += " (the answer declared in the flow's tests)"
                call["transcript"].append({"who": "note", "text": note})
            self._heard(call, result)
        if sim.ended is None:
            note = describe_wait(sim)
            if note and not note.startswith("[listening"):  # the page says what it listens for
                call["transcript"].append({"who": "note", "text": note.strip("[]")})
        records += [{"type": "step", "call_sid": call["sid"], **s} for s in sim.steps]
        call["steps"] += sim.steps
        call["state"] = sim.state
        if sim.ended is not None:
            ended = sim.ended
            call["ended"] = {"outcome": ended.get("outcome"), "last_node": ended.get("last_node")}
            records.append({"type": "call_ended", "call_sid": call["sid"], "status": "completed",
                            "duration_s": self._duration(call, now),
                            "ended_at": now.astimezone(UTC).isoformat(timespec="milliseconds"),
                            "outcome": ended.get("outcome"), "last_node": ended.get("last_node")})
            call["transcript"].append({"who": "note", "text": f"Call ended: {ended.get('outcome')} at "
                                                              f"'{ended.get('last_node')}'"})
        self._save(call, records)

    @staticmethod
    def _heard(call: dict, result: Any) -> None:
        if result.said:
            call["transcript"].append({"who": "ivr", "text": result.said})
        for action in result.actions:
            if isinstance(action, A.SendSms):
                call["transcript"].append({"who": "note", "text": f"a text would be sent to {action.to}: "
                                                                  f"\"{action.body}\" (not sent: this is "
                                                                  "a test call)"})
            if isinstance(action, A.RequestCallback):
                call["transcript"].append({"who": "note", "text": f"a callback to {action.number} would be "
                                                                  f"booked for queue '{action.queue}' "
                                                                  "(not booked: this is a test call)"})


def choices(call: dict) -> list[Choice]:
    """The buttons that make sense for the call's current wait."""
    if call.get("ended"):
        return []
    state = call.get("state") or {}
    wait = Wait.of(state.get("wait"))
    if wait is Wait.QUEUE:
        return [Choice("say", "Say it"), Choice("hold", "Keep holding (30 s)"),
                Choice("agent_answers", "An agent answers"),
                Choice("leave", "Leave the queue unanswered"), Choice("hangup", "Hang up")]
    if wait is Wait.DIAL:
        return [Choice("agent_answers", "The agent answers"), Choice("no_answer", "Nobody answers"),
                Choice("hangup", "Hang up")]
    if records_a_message(state):
        return [Choice("message", "Leave this message"), Choice("hangup", "Hang up")]
    return [Choice("say", "Say it"), Choice("silence", "Say nothing"), Choice("hangup", "Hang up")]


def listening(call: dict) -> str:
    """What the call waits for, in words."""
    state = call.get("state") or {}
    wait = state.get("wait")
    if call.get("ended"):
        return "The call has ended."
    return {
        Wait.ASK: "The menu is listening: type what the caller says, or press keys.",
        Wait.CONFIRM: "The IVR asked the caller to confirm.",
        Wait.PENDING_CALLBACK: "The IVR asks about the caller's pending callback.",
        Wait.CALLBACK: "The IVR is arranging a callback.",
        Wait.QUEUE: "The caller is holding in a queue.",
        Wait.DIAL: "The call is being transferred.",
        Wait.RECORD: "The caller can leave a message.",
    }.get(Wait.of(wait), f"Waiting for: {wait}")


def path(call: dict) -> list[str]:
    """The nodes the call went through, in order."""
    out: list[str] = []
    for s in call.get("steps", []):
        if s["event"] == "enter" and (not out or out[-1] != s["node"]):
            out.append(s["node"])
    return out
