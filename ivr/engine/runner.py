"""The flow engine: (flow, call state, event) -> (actions, new state, step records).

Pure by design: no Flask, Redis, Twilio, clock or I/O. Whatever the engine needs from the
outside world (the time, other flows, a directory lookup, an intent matcher) comes in
through `Context`, so the web server, the terminal simulator, the flow tests and the unit
tests all drive exactly the same code.

The state is a small JSON-able dict; the engine never mutates the one it is given.

A `Run` applies one event. What a node does is its kind's row in ivr.engine.nodes.KINDS:
entering a node calls the row's `enter`, and an event the call waits for goes to the
listener the row names for the call's wait and the event's class, the way Home
Assistant's script runner picks one method per action type. Waits that belong to the
call rather than to a node (a pending callback's question, the fail-safe's transfer) are
in `CALL_EVENTS` below. The plumbing every kind uses (templates, prompts, the step log,
`goto`) is here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ivr.errors import FlowRuntimeError, IvrError
from ivr.flows import templates
from ivr.flows.model import Flow, Node, Pause, PlayAudio, Prompt, SayText
from ivr.flows.nodes import KINDS as FLOW_KINDS
from ivr.i18n import Language, language
from ivr.i18n import sentences as S
from ivr.i18n.catalogue import Message

from . import actions as A
from . import callback_dialogue, survey
from . import events as E
from .context import Context, Estimate, Match
from .kind import STOP, Listener
from .nodes import KINDS
from .states import ABANDONING, Outcome, Wait, is_listening, is_served, upgrade

__all__ = ["Context", "Estimate", "FlowRuntimeError", "Match", "Result", "Run", "clock", "new_state",
           "run"]

MAX_HOPS = 50  # nodes entered for one event before the engine calls it a runaway loop
STATE_VERSION = 2  # 2: one ENDED wait (was "end" and "ended"), the hang-up in "hung_up"


@dataclass
class Result:
    actions: list
    state: dict
    steps: list[dict]
    ended: dict | None = None  # {"outcome", "last_node", "status", "duration_s"} when the call ends
    error: Exception | None = None  # what made the engine fail safe, for the shell to log

    @property
    def said(self) -> str:
        return A.spoken_text(self.actions)

    def log_error(self, logger: logging.Logger, call_sid: str) -> None:
        """Log what made this step fail safe, if anything: a flow's own failure (an IvrError)
        in one line, anything else (a bug) with its traceback. For shells: the engine itself
        logs nothing."""
        if self.error is None:
            return
        failed = next((s for s in self.steps if s["event"] == "error"), {})
        logger.error("call %s: flow '%s' failed at node '%s' and the caller was handed to a person: %s",
                     call_sid, failed.get("flow"), failed.get("node"),
                     (failed.get("detail") or {}).get("error"),
                     exc_info=None if isinstance(self.error, IvrError) else self.error)


def run(flow: Flow, state: dict | None, event: E.Event, ctx: Context) -> Result:
    """Apply one event to a call. `state` is None for CallStarted."""
    r = Run(flow, state, ctx)
    try:
        r.dispatch(event)
    except Exception as exc:  # a live caller must never be left in silence
        if ctx.propagate and not isinstance(exc, IvrError):
            raise
        r.fail_safe(exc)
        r.error = exc
    return r.result()


def new_state(event: E.CallStarted, flow: Flow, now: datetime) -> dict:
    callback = dict(event.callback) if event.callback else None
    return {
        "v": STATE_VERSION,
        "sid": event.call_sid,
        "flow": flow.id,
        "node": flow.start,
        "seq": 0,
        "tries": {},
        "wait": None,
        # a callback call carries on with what the original call learned
        "vars": dict((callback or {}).get("vars") or {}),
        "caller": dict(event.caller) if event.caller else {"known": False},
        "from": event.from_number or "",
        "to": event.to_number or "",
        "intent": (callback or {}).get("intent"),
        "conf": None,
        "outcome": None,
        "started": now.astimezone(UTC).isoformat(timespec="milliseconds"),
        "test": bool(event.is_test),
        "line": None,  # {"queue", "since"} while the caller holds a place in a queue's line
        "callback": callback,
    }


class _HoursView:
    """`hours.support.open` in templates, computed only when a template asks."""

    def __init__(self, hours: dict, now: datetime, language: Language):
        self._hours, self._now, self._language = hours, now, language

    def __getattr__(self, name: str):
        bh = self._hours.get(name)
        if bh is None:
            raise AttributeError(name)
        return {"open": bh.is_open(self._now), "holiday": bh.holiday(self._now),
                "next_open": bh.describe_next_open(self._now, self._language)}

    def __getitem__(self, name: str):
        # A KeyError makes an unknown name undefined in templates (empty, false), like any
        # missing value, instead of failing the call; `ivr flows check` warns about it.
        try:
            return self.__getattr__(name)
        except AttributeError:
            raise KeyError(name) from None


class Run:
    """One event applied to one call: the actions, steps and state it produces."""

    def __init__(self, flow: Flow, state: dict | None, ctx: Context):
        self.flow = flow
        self.state = _loaded(state) if state else None
        self.ctx = ctx
        self.actions: list = []
        self.steps: list[dict] = []
        self.ended: dict | None = None
        self.at = ctx.now.astimezone(UTC).isoformat(timespec="milliseconds")
        self.cbv: dict = {}  # `callback.*` in templates while offering or taking a callback
        self.error: Exception | None = None

    # -- plumbing -------------------------------------------------------------------------

    def result(self) -> Result:
        return Result(self.actions, self.state or {}, self.steps, self.ended, self.error)

    def context(self) -> dict:
        s = self.state
        return {
            "caller": s["caller"],
            "vars": s["vars"],
            "intent": s["intent"],
            "call": {"from": s["from"], "to": s["to"], "sid": s["sid"]},
            "flow": self.flow.id,
            "hours": _HoursView(self.flow.hours, self.ctx.now, self.lang),
            "callback": {**(s.get("callback") or {}), **self.cbv},
            # how the last `request:` went: request.status, request.ok, request.error
            "request": s.get("last_req") or {},
        }

    def render(self, text: str) -> str:
        return templates.render(text, self.context())

    def speak(self, prompt: Prompt) -> list:
        out: list = []
        for item in prompt:
            if isinstance(item, SayText):
                text = self.render(item.text)
                if text:
                    out.append(self.say_text(text))
            elif isinstance(item, PlayAudio):
                out.append(A.Play(item.url))
            elif isinstance(item, Pause):
                out.append(A.Silence(item.seconds))
        return out

    def say_text(self, text: str) -> A.Say:
        """Words said in the flow's language and voice (its language's default voice when
        the flow names none)."""
        return A.Say(text, self.flow.voice or self.lang.voice, self.flow.language)

    @property
    def lang(self) -> Language:
        """The language the call speaks now: its flow's (a goto_flow may change it), with the
        flow's own words for some sentences (`messages:`)."""
        return language(self.flow.language, self.flow.messages)

    @property
    def region(self) -> str:
        """The line's country, for numbers callers type and numbers read back to them: the
        flow language's region (fr-FR: FR), else the server's IVR_DEFAULT_REGION."""
        return self.lang.country or self.ctx.region

    def say(self, message: Message, n: int | None = None, **values: object) -> A.Say:
        """A catalogue sentence (ivr.i18n.sentences) in the call's language, as a <Say>."""
        return self.say_text(self.lang.say(message, n, **values))

    def step(self, node: Node | None, event: str, said: list | None = None, **fields: Any) -> dict:
        self.state["seq"] += 1
        rec = {
            "seq": self.state["seq"],
            "at": self.at,
            "flow": self.flow.id,
            "node": node.id if node else self.state.get("node"),
            "kind": node.kind if node else None,
            "event": event,
            "digits": None,
            "speech": None,
            "confidence": None,
            "intent": None,
            "said": A.spoken_text(said) if said else None,
            "action": None,
            "detail": None,
        }
        rec.update(fields)
        self.steps.append(rec)
        return rec

    def node(self) -> Node:
        return self.flow.nodes[self.state["node"]]

    def yes_no_inputs(self) -> tuple[str, ...]:
        return ("dtmf",) if self.flow.settings.speech == "off" else ("dtmf", "speech")

    def estimate(self, queue: str, position: int | None = None):
        """This caller's place and estimated wait in a queue, or None when unknown."""
        if self.ctx.estimate is None:
            return None
        try:
            return self.ctx.estimate(queue, position)
        except Exception as exc:  # a missing estimate must never cost the caller their call
            self.unless_propagating(exc)
            return None

    def unless_propagating(self, exc: Exception) -> None:
        """Raise a bug met in something the call can do without (an estimate, a calling
        window) when the context asks for bugs to propagate; else the call goes on."""
        if self.ctx.propagate and not isinstance(exc, IvrError):
            raise exc

    # -- events ---------------------------------------------------------------------------

    def dispatch(self, event: E.Event) -> None:
        if isinstance(event, E.CallStarted):
            self.state = new_state(event, self.flow, self.ctx.now)
            if not event.callback and callback_dialogue.ask_pending(self):
                return
            self.goto(self.flow.start)
            return
        if self.state is None:
            raise FlowRuntimeError(f"{type(event).__name__} for a call that never started")
        if isinstance(event, E.HangUp):
            self.on_hangup(event)
            return
        wait = self.state.get("wait")
        node = self.node()
        listener = self.listener(node, wait, type(event))
        if listener is not None:
            listener(self, node, event)
            return
        # An event the call is not waiting for (a late or duplicated webhook): log it and
        # repeat what the caller should be hearing now rather than jumping anywhere.
        self.step(node, "unexpected", detail={"event": E.NAMES.get(type(event), "?"),
                                              "waiting_for": wait})
        self.repeat(node)

    def listener(self, node: Node, wait: Any, event: type) -> Listener | None:
        """What handles `event` now: the node's kind for the waits it owns, else the call."""
        mine = KINDS[node.kind].events.get(wait)
        if mine is not None:
            return mine.get(event)
        return CALL_EVENTS.get(wait, {}).get(event)

    def repeat(self, node: Node) -> None:
        """Re-issue the waiting action of the current node (after an out-of-place event)."""
        wait = self.state.get("wait")
        kind = KINDS[node.kind]
        if kind.repeat is not None and wait in kind.events:
            kind.repeat(self, node, wait)
        elif wait is Wait.PENDING_CALLBACK:
            callback_dialogue.pending_prompt(self, log=False)
        elif wait is Wait.SURVEY:
            survey.repeat(self)
        else:
            self.actions.append(A.Hangup())

    def on_hangup(self, event: E.HangUp) -> None:
        s = self.state
        node = self.node()
        wait = s.get("wait")
        kind = KINDS[node.kind]
        if kind.hang_up is not None and wait in kind.events:
            kind.hang_up(self, node, wait)
        elif wait is Wait.PENDING_CALLBACK:
            callback_dialogue.pending_hung_up(self)
        elif wait is Wait.SURVEY:
            survey.hung_up(self)
        outcome = s.get("outcome")
        if event.status == "failed" and not is_served(outcome):
            # Twilio could not run the call (a TwiML document it refused, say): the caller did
            # not choose to hang up, and counting them as abandoned would hide the fault.
            outcome = Outcome.FAILED
        elif outcome is None and s.get("served") and is_listening(s.get("wait")):
            # The IVR answered their question (a request), and they hung up instead of asking
            # for more: resolved, not abandoned.
            outcome = Outcome.COMPLETED
        elif s.get("wait") in ABANDONING or outcome is None:
            outcome = Outcome.ABANDONED
        s["line"] = None
        self.step(node, "hangup", detail={"status": event.status, "duration": event.duration})
        s["wait"] = Wait.ENDED
        s["hung_up"] = True
        s["outcome"] = outcome
        self.ended = {"outcome": outcome, "last_node": s["node"], "status": event.status,
                      "duration_s": event.duration}

    # -- walking the graph ----------------------------------------------------------------

    def goto(self, node_id: str | None) -> None:
        for _ in range(MAX_HOPS):
            if node_id is None:
                self.finish_abruptly()
                return
            if node_id not in self.flow.nodes:
                raise FlowRuntimeError(f"flow '{self.flow.id}' has no node '{node_id}'")
            self.state["node"] = node_id
            node = self.flow.nodes[node_id]
            self.state["tries"] = {}
            if FLOW_KINDS[node.kind].destination is not None:
                self.state.pop("served", None)  # on to a person or a message: not served by the IVR
            node_id = KINDS[node.kind].enter(self, node)
            if node_id is STOP:
                return
        raise FlowRuntimeError(f"more than {MAX_HOPS} nodes without waiting for the caller "
                               f"(a loop in flow '{self.flow.id}' near '{self.state['node']}')")

    def finish_abruptly(self) -> None:
        # Only reachable through a warning `ivr flows check` reported (no `next` after a queue,
        # transfer or recording): the caller was not served, so the call counts as failed.
        self.actions.append(A.Hangup())
        self.state["wait"] = Wait.ENDED
        self.state["outcome"] = self.state.get("outcome") or Outcome.FAILED

    # -- when things go wrong -------------------------------------------------------------

    def fail_safe(self, exc: Exception) -> None:
        """Apologise and hand the caller to a person, whatever state the call is in."""
        least = {"v": STATE_VERSION, "sid": "", "flow": self.flow.id, "node": self.flow.start, "seq": 0,
                 "vars": {}, "caller": {"known": False}, "from": "", "to": "", "intent": None,
                 "outcome": None}
        if self.state is None:
            self.state = least
        for key, value in least.items():  # a state broken in storage still gets its apology
            self.state.setdefault(key, value)
        # The caller goes to a person now: no booking half made before the failure.
        self.actions = [a for a in self.actions if not isinstance(a, (*A.WAITING, A.RequestCallback))]
        number = self.flow.settings.fallback_number or self.ctx.fallback_number
        said = [self.say_text(self.lang.say(S.SOMETHING_WENT_WRONG) + " "
                              + self.lang.say(S.PUT_THROUGH if number else S.LEAVE_A_MESSAGE))]
        self.actions += said
        if number:
            self.actions.append(A.Dial(number, 30, None, self.lang.say(S.WHISPER_AFTER_ERROR)))
            self.state["wait"] = Wait.FAILSAFE
        else:
            self.actions.append(A.Record(120, "#", True, 5))
            self.state["wait"] = Wait.FAILSAFE
        self.state["outcome"] = Outcome.FAILED
        self.step(None, "error", said, action=f"dial:{number}" if number else "record",
                  detail={"error": f"{type(exc).__name__}: {exc}"})

    def after_fail_safe(self, node: Node, event: E.Event) -> None:
        """The person the caller was handed to after an error answered or not, or the message
        was left: never a bare hang-up."""
        s = self.state
        if isinstance(event, E.RecordingDone):
            self.step(None, "recording", digits=event.digits, action="recorded",
                      detail={"url": event.url, "duration": event.duration, "after_error": True})
            s.update(outcome=Outcome.VOICEMAIL, wait=Wait.ENDED)
            self.actions += [self.say(S.MESSAGE_TAKEN), A.Hangup()]
            return
        self.step(None, "transfer_ended", detail={"status": event.status, "duration": event.duration,
                                                  "after_error": True})
        if event.status in ("completed", "answered"):
            s.update(outcome=Outcome.TRANSFERRED, wait=Wait.ENDED)
            self.actions.append(A.Hangup())
            return
        self.actions += [self.say(S.NOBODY_LEAVE_A_MESSAGE), A.Record(120, "#", True, 5)]


# Waits of the call itself, whatever node it is at: {wait: {event class: listener}}.
CALL_EVENTS: dict[Wait, dict[type, Listener]] = {
    Wait.PENDING_CALLBACK: dict.fromkeys((E.Digits, E.Speech, E.NoInput), callback_dialogue.on_pending),
    Wait.FAILSAFE: dict.fromkeys((E.TransferEnded, E.RecordingDone), Run.after_fail_safe),
    Wait.SURVEY: dict.fromkeys((E.Digits, E.Speech, E.NoInput, E.RecordingDone), survey.on_event),
}


def _loaded(state: dict) -> dict:
    """A copy of a stored state for this run, in today's form, its wait as a `Wait`."""
    s = upgrade(_clone(state))
    wait = Wait.of(s.get("wait"))
    if wait is not None:
        s["wait"] = wait
    return s


def _clone(value: Any) -> Any:
    """A copy of JSON-shaped state (dicts, lists, scalars); much cheaper than deepcopy.
    Only containers are copied (scalars are shared), each by one call: this runs on every
    webhook."""
    if isinstance(value, dict):
        return {k: _clone(v) if isinstance(v, _CONTAINERS) else v for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) if isinstance(v, _CONTAINERS) else v for v in value]
    return value


_CONTAINERS = (dict, list)


def clock() -> datetime:
    """The real time, for shells (the engine itself never reads the clock)."""
    return datetime.now(UTC)
