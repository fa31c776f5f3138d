"""The flow engine: (flow, call state, event) -> (actions, new state, step records).

Pure by design: no Flask, Redis, Twilio, clock or I/O. Whatever the engine needs from the
outside world (the time, other flows, a directory lookup, an intent matcher) comes in
through `Context`, so the web server, the terminal simulator, the flow tests and the unit
tests all drive exactly the same code.

The state is a small JSON-able dict; the engine never mutates the one it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jinja2 import UndefinedError

from ivr.flows import templates
from ivr.flows.model import (
    AskNode,
    BranchNode,
    CallbackOffer,
    Flow,
    GotoFlowNode,
    HangupNode,
    LookupNode,
    Node,
    Pause,
    PlayAudio,
    Prompt,
    QueueNode,
    RecordNode,
    SayNode,
    SayText,
    SetNode,
    TransferNode,
)
from ivr.flows.prompts import announcements
from ivr.phone import normalize, normalize_typed, spoken

from . import actions as A
from . import events as E
from .states import ABANDONING, Outcome, Wait, upgrade

MAX_HOPS = 50  # nodes entered for one event before the engine calls it a runaway loop
STATE_VERSION = 2  # 2: one ENDED wait (was "end" and "ended"), the hang-up in "hung_up"

APOLOGY = "We're sorry, something went wrong on our side."
NOT_HEARD = "Sorry, I didn't hear anything."
NOT_UNDERSTOOD = "Sorry, I didn't understand that."
YES_WORDS = {"yes", "yeah", "yep", "right", "correct", "sure", "ok", "okay", "that's right", "yes please"}
NO_WORDS = {"no", "nope", "wrong", "not", "incorrect"}

# Callbacks: the default wording of every prompt an operator can replace in the flow.
KEY_WORDS = {"*": "star", "#": "pound"}
WAIT_IS = "Your estimated wait is {wait}."
OFFER = ("To keep your place in line and have us call you back when it's your turn, press {key}, "
         "or say call me back.")
CONFIRM_NUMBER = ("We'll call you back at {number}. To confirm, press 1. To use a different number, "
                  "press 2.")
ENTER_NUMBER = "Please enter the number we should call, with the area code, then press the pound key."
READ_BACK = "You entered {number}. To confirm, press 1. To enter it again, press 2."
ASK_REASON = ("After the tone, tell us in a few words what you're calling about, so the agent is ready "
              "for you. Press the pound key when you're done.")
BOOKED = "Thank you. We'll call you back at {number} {when}, and you keep your place in line. Goodbye."
NOT_A_NUMBER = "Sorry, that isn't a number we can call."
BACK_IN_LINE = "No problem. You're still in line."
NO_CALLING_TIME = ("Sorry, we can't call you back at {number} before this request would expire, at this "
                   "time of day where you are. You're still in line.")
PENDING = ("You already asked us to call you back about {queue}, and we'll call you {when}. "
           "To keep that callback, press 1. To cancel it, press 2.")
KEPT = "Thanks. We'll call you back {when}. Goodbye."
CANCELLED = "Your callback is cancelled."
CALLBACK_TRIES = 2  # wrong or missing answers in the callback questions before going back in line


@dataclass(frozen=True)
class Match:
    """What an intent matcher returns (speech.intents.IntentMatch has the same fields)."""

    intent: str | None
    confidence: float = 1.0
    needs_confirmation: bool = False


@dataclass(frozen=True)
class Estimate:
    """A queue's estimated wait for this caller (callbacks.estimate computes it from live data)."""

    position: int = 1  # 1: next in line; callers and callbacks ahead both count
    wait_s: float | None = None  # None: nobody staffs the queue, so there is no estimate
    agents_available: int = 0

    def longer_than(self, seconds: float) -> bool:
        """With no agent available the wait counts as longer than any threshold."""
        return self.agents_available == 0 or self.wait_s is None or self.wait_s > seconds


@dataclass
class Context:
    now: datetime
    flows: Mapping[str, Flow] = field(default_factory=dict)
    lookup: Callable[[str, str], dict | None] | None = None  # (field, value) -> caller context
    match: Callable[[Flow, str], Any] | None = None  # (flow, text) -> Match-like
    fallback_number: str | None = None
    # (queue name, the caller's position in Twilio's queue if known) -> this caller's
    # Estimate-like place and wait, callbacks ahead included (None: not known)
    estimate: Callable[[str, int | None], Any] | None = None
    # caller's E.164 number -> their pending callback {"id", "queue", "wait_s"} or None
    pending_callback: Callable[[str], dict | None] | None = None
    region: str = "US"  # for numbers callers type without a country code
    # (number, calling_hours, expire_after s) -> seconds until that caller may first be called
    # back in their own time zone (0: now), or None when there is no such time before expiry
    calling_opens: Callable[[str, Any, int], float | None] | None = None


@dataclass
class Result:
    actions: list
    state: dict
    steps: list[dict]
    ended: dict | None = None  # {"outcome", "last_node", "status", "duration_s"} when the call ends

    @property
    def said(self) -> str:
        return A.spoken_text(self.actions)


class FlowRuntimeError(Exception):
    """A flow did something impossible at run time (a runaway loop, a missing flow)."""


def run(flow: Flow, state: dict | None, event: E.Event, ctx: Context) -> Result:
    """Apply one event to a call. `state` is None for CallStarted."""
    r = _Run(flow, state, ctx)
    try:
        r.dispatch(event)
    except Exception as exc:  # a live caller must never be left in silence
        r.fail_safe(exc)
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

    def __init__(self, hours: dict, now: datetime):
        self._hours, self._now = hours, now

    def __getattr__(self, name: str):
        bh = self._hours.get(name)
        if bh is None:
            raise AttributeError(name)
        return {"open": bh.is_open(self._now), "holiday": bh.holiday(self._now),
                "next_open": bh.describe_next_open(self._now)}

    def __getitem__(self, name: str):
        # A KeyError makes an unknown name undefined in templates (empty, false), like any
        # missing value, instead of failing the call; `ivr flows check` warns about it.
        try:
            return self.__getattr__(name)
        except AttributeError:
            raise KeyError(name) from None


class _Run:
    def __init__(self, flow: Flow, state: dict | None, ctx: Context):
        self.flow = flow
        self.state = _loaded(state) if state else None
        self.ctx = ctx
        self.actions: list = []
        self.steps: list[dict] = []
        self.ended: dict | None = None
        self.at = ctx.now.astimezone(UTC).isoformat(timespec="milliseconds")
        self.cbv: dict = {}  # `callback.*` in templates while offering or taking a callback

    # -- plumbing -------------------------------------------------------------------------

    def result(self) -> Result:
        return Result(self.actions, self.state or {}, self.steps, self.ended)

    def context(self) -> dict:
        s = self.state
        return {
            "caller": s["caller"],
            "vars": s["vars"],
            "intent": s["intent"],
            "call": {"from": s["from"], "to": s["to"], "sid": s["sid"]},
            "flow": self.flow.id,
            "hours": _HoursView(self.flow.hours, self.ctx.now),
            "callback": {**(s.get("callback") or {}), **self.cbv},
        }

    def render(self, text: str) -> str:
        return templates.render(text, self.context())

    def speak(self, prompt: Prompt) -> list:
        out: list = []
        for item in prompt:
            if isinstance(item, SayText):
                text = self.render(item.text)
                if text:
                    out.append(A.Say(text, self.flow.voice, self.flow.language))
            elif isinstance(item, PlayAudio):
                out.append(A.Play(item.url))
            elif isinstance(item, Pause):
                out.append(A.Silence(item.seconds))
        return out

    def say_text(self, text: str) -> A.Say:
        return A.Say(text, self.flow.voice, self.flow.language)

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

    # -- events ---------------------------------------------------------------------------

    def dispatch(self, event: E.Event) -> None:
        if isinstance(event, E.CallStarted):
            self.state = new_state(event, self.flow, self.ctx.now)
            if not event.callback and self.ask_pending():
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
        if wait is Wait.ASK and isinstance(event, (E.Digits, E.Speech, E.NoInput)):
            self.on_answer(node, event)
        elif wait is Wait.CONFIRM and isinstance(event, (E.Digits, E.Speech, E.NoInput)):
            self.on_confirm(node, event)
        elif wait is Wait.QUEUE and isinstance(event, E.QueueWait):
            self.on_queue_wait(node, event)
        elif wait is Wait.QUEUE and isinstance(event, E.QueueLeft):
            self.on_queue_left(node, event)
        elif wait is Wait.QUEUE and isinstance(event, (E.Digits, E.Speech)):
            self.on_queue_offer(node, event)
        elif wait is Wait.CALLBACK and isinstance(node, QueueNode):
            self.on_callback(node, event)
        elif wait is Wait.PENDING_CALLBACK and isinstance(event, (E.Digits, E.Speech, E.NoInput)):
            self.on_pending(event)
        elif wait is Wait.DIAL and isinstance(event, E.TransferEnded):
            self.on_transfer_ended(node, event)
        elif wait is Wait.RECORD and isinstance(event, E.RecordingDone):
            self.on_recording(node, event)
        elif wait is Wait.FAILSAFE and isinstance(event, (E.TransferEnded, E.RecordingDone)):
            self.after_fail_safe(event)
        else:
            # An event the call is not waiting for (a late or duplicated webhook): log it and
            # repeat what the caller should be hearing now rather than jumping anywhere.
            self.step(node, "unexpected", detail={"event": E.NAMES.get(type(event), "?"),
                                                  "waiting_for": wait})
            self.repeat(node)

    def on_hangup(self, event: E.HangUp) -> None:
        s = self.state
        node = self.node()
        cb = s.get("cb") or {}
        if s.get("wait") is Wait.CALLBACK and cb.get("phase") == "reason" and isinstance(node, QueueNode):
            self.book(node, aloud=False)  # the number was confirmed: hanging up on the reason books it
        elif s.get("wait") is Wait.PENDING_CALLBACK:
            s["outcome"] = Outcome.CALLBACK  # hanging up on "keep or cancel?" keeps the callback
        outcome = s.get("outcome")
        if s.get("wait") in ABANDONING or outcome is None:
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
            node_id = self.enter(self.flow.nodes[node_id])
            if node_id is _STOP:
                return
        raise FlowRuntimeError(f"more than {MAX_HOPS} nodes without waiting for the caller "
                               f"(a loop in flow '{self.flow.id}' near '{self.state['node']}')")

    def finish_abruptly(self) -> None:
        # Only reachable through a warning `ivr flows check` reported (no `next` after a queue,
        # transfer or recording): the caller was not served, so the call counts as failed.
        self.actions.append(A.Hangup())
        self.state["wait"] = Wait.ENDED
        self.state["outcome"] = self.state.get("outcome") or Outcome.FAILED

    def enter(self, node: Node):
        s = self.state
        s["tries"] = {}
        if isinstance(node, SayNode):
            said = self.speak(node.prompt)
            self.actions += said
            self.step(node, "enter", said)
            return node.next
        if isinstance(node, SetNode):
            ctx = self.context()
            changed = {}
            for name, value in node.values:
                changed[name] = (templates.native(templates.render(value, ctx))
                                 if isinstance(value, str) else value)
                s["vars"][name] = changed[name]
                ctx = self.context()
            self.step(node, "enter", detail={"set": changed})
            return node.next
        if isinstance(node, BranchNode):
            for i, case in enumerate(node.cases):
                if self.test(case.condition):
                    self.step(node, "enter", detail={"case": i + 1, "goto": case.goto})
                    return case.goto
            self.step(node, "enter", detail={"case": "else", "goto": node.otherwise})
            return node.otherwise
        if isinstance(node, LookupNode):
            value = self.render(node.value)
            found = self.ctx.lookup(node.by, value) if (self.ctx.lookup and value) else None
            if found:
                s["caller"] = found
            self.step(node, "enter", detail={"by": node.by, "found": bool(found)})
            return node.found if found else node.not_found
        if isinstance(node, AskNode):
            self.ask(node, [])
            return _STOP
        if isinstance(node, QueueNode):
            said = self.speak(node.say)
            self.actions += said + [A.Enqueue(node.name)]
            s["wait"] = Wait.QUEUE
            s["outcome"] = None
            s.pop("cb", None)
            line = s.get("line")
            if not line or line.get("queue") != node.name:
                # The caller's place in line: kept when they come back to the same queue.
                s["line"] = {"queue": node.name, "since": self.at}
            self.step(node, "enter", said, action=f"enqueue:{node.name}")
            return _STOP
        if isinstance(node, TransferNode):
            said = self.speak(node.say)
            whisper = self.whisper(node)
            to = self._dial_target(node)
            self.actions += said + [A.Dial(to, node.timeout, node.caller_id, whisper)]
            s["wait"] = Wait.DIAL
            s["whisper"] = whisper
            self.step(node, "enter", said, action=f"dial:{to}", detail={"whisper": whisper})
            return _STOP
        if isinstance(node, RecordNode):
            said = self.speak(node.prompt)
            self.actions += said + [A.Record(node.max_length, node.finish_on_key, node.beep,
                                             node.timeout)]
            s["wait"] = Wait.RECORD
            self.step(node, "enter", said, action="record")
            return _STOP
        if isinstance(node, HangupNode):
            said = self.speak(node.prompt)
            self.actions += said + [A.Hangup()]
            s["wait"] = Wait.ENDED
            s["outcome"] = s.get("outcome") or Outcome.COMPLETED
            self.step(node, "enter", said, action="hangup")
            return _STOP
        if isinstance(node, GotoFlowNode):
            target = self.ctx.flows.get(node.flow)
            if target is None:
                raise FlowRuntimeError(f"flow '{node.flow}' is not loaded")
            self.step(node, "enter", detail={"flow": node.flow, "node": node.node or target.start})
            self.flow = target
            s["flow"] = target.id
            return node.node or target.start
        raise FlowRuntimeError(f"unknown node kind {node.kind}")

    def repeat(self, node: Node) -> None:
        """Re-issue the waiting action of the current node (after an out-of-place event)."""
        wait = self.state.get("wait")
        if isinstance(node, AskNode) and wait in (Wait.ASK, Wait.CONFIRM):
            self.ask(node, [], log=False)
        elif isinstance(node, QueueNode) and wait is Wait.QUEUE:
            self.actions.append(A.Enqueue(node.name))
        elif isinstance(node, QueueNode) and wait is Wait.CALLBACK:
            self.callback_prompt(node, [], log=False)
        elif wait is Wait.PENDING_CALLBACK:
            self.pending_prompt(log=False)
        elif isinstance(node, TransferNode) and wait is Wait.DIAL:
            self.actions.append(A.Dial(self.render(node.to), node.timeout, node.caller_id,
                                       self.state.get("whisper")))
        else:
            self.actions.append(A.Hangup())

    # -- menus ----------------------------------------------------------------------------

    def ask(self, node: AskNode, before: list, log: bool = True, event: str = "enter") -> None:
        prompts = before + self.speak(node.prompt)
        prompts += [self.say_text(t) for t in announcements(node)]
        self.actions.append(A.Gather(
            prompts=tuple(prompts), input=self.inputs(node), num_digits=node.num_digits or _digits(node),
            timeout=node.timeout, speech_timeout=node.speech_timeout,
            finish_on_key=_finish_key(node), hints=self.hints(node), language=self.flow.language,
        ))
        self.state["wait"] = Wait.ASK
        if log:
            self.step(node, event, prompts, action="gather")

    def inputs(self, node: AskNode) -> tuple[str, ...]:
        if self.flow.settings.speech == "off":
            return ("dtmf",)
        return node.input

    def hints(self, node: AskNode) -> tuple[str, ...]:
        """Words and phrases callers are likely to say here, to help Twilio's recognizer."""
        words: list[str] = []
        for c in node.choices:
            if c.label:
                words.append(c.label)
            intent = self.flow.intents.get(c.intent) if c.intent else None
            if intent:
                words += list(intent.keywords) + list(intent.phrases)
        return tuple(dict.fromkeys(w[:100] for w in words if w))[:500]

    def on_answer(self, node: AskNode, event: E.Event) -> None:
        s = self.state
        if isinstance(event, E.NoInput):
            self.retry(node, "no_input")
            return
        if not node.choices:  # a question with a free answer: keep it and move on
            value = event.digits if isinstance(event, E.Digits) else event.text
            if node.save_as:
                s["vars"][node.save_as] = value
            self.log_input(node, event, detail={"saved_as": node.save_as})
            self.goto(node.next)
            return
        if isinstance(event, E.Digits):
            choice = next((c for c in node.choices if c.key == event.digits), None)
            if choice is None:
                self.log_input(node, event, no_match=True)
                self.retry(node, "no_match", logged=True)
                return
            if choice.intent:
                s["intent"] = choice.intent
            self.choose(node, event, choice)
            return
        match = self.match(event.text)
        by_intent = {c.intent: c for c in node.choices if c.intent}
        choice = by_intent.get(match.intent) if match.intent else None
        if choice is None:
            self.log_input(node, event, match=match, no_match=True)
            self.retry(node, "no_match", logged=True)
            return
        s["intent"], s["conf"] = match.intent, round(float(match.confidence), 3)
        threshold = node.confirm_below
        unsure = match.needs_confirmation or (threshold is not None and match.confidence < threshold)
        if unsure:
            self.log_input(node, event, match=match, detail={"confirm": choice.goto})
            s["confirm"] = {"intent": match.intent, "choice": node.choices.index(choice),
                            "text": event.text}
            label = match.intent.replace("_", " ")
            question = self.say_text(f"I think you want {label}. Is that right? Say yes or press 1. "
                                     "Say no or press 2.")
            self.actions.append(A.Gather(prompts=(question,), input=self.inputs(node), num_digits=1,
                                         timeout=node.timeout, hints=("yes", "no"),
                                         language=self.flow.language))
            s["wait"] = Wait.CONFIRM
            return
        self.choose(node, event, choice, match)

    def choose(self, node: AskNode, event: E.Event, choice, match=None, log: bool = True) -> None:
        if node.save_as:
            self.state["vars"][node.save_as] = (
                event.digits if isinstance(event, E.Digits) else event.text)
        if log:
            self.log_input(node, event, match=match, detail={"goto": choice.goto, "key": choice.key})
        self.actions += self.speak(choice.say)
        self.goto(choice.goto)

    def on_confirm(self, node: AskNode, event: E.Event) -> None:
        pending = self.state.pop("confirm", None) or {}
        yes = False
        if isinstance(event, E.Digits):
            yes = event.digits == "1"
        elif isinstance(event, E.Speech):
            text = " ".join(event.text.lower().replace(",", " ").replace(".", " ").split())
            yes = text in YES_WORDS or (bool(set(text.split()) & YES_WORDS)
                                        and not set(text.split()) & NO_WORDS)
        self.step(node, "confirm", digits=getattr(event, "digits", None),
                  speech=getattr(event, "text", None), intent=pending.get("intent"),
                  detail={"confirmed": yes})
        index = pending.get("choice")
        if yes and index is not None and index < len(node.choices):
            # what the caller first said is the answer, not the "yes"
            self.choose(node, E.Speech(pending.get("text", ""), None), node.choices[index], log=False)
            return
        self.state["intent"] = None
        self.retry(node, "no_input" if isinstance(event, E.NoInput) else "no_match", logged=True)

    def match(self, text: str) -> Match:
        if self.ctx.match is None:
            return Match(None, 0.0)
        m = self.ctx.match(self.flow, text)
        return Match(getattr(m, "intent", None), float(getattr(m, "confidence", 0.0) or 0.0),
                     bool(getattr(m, "needs_confirmation", False)))

    def log_input(self, node: AskNode, event: E.Event, match: Match | None = None,
                  no_match: bool = False, detail: dict | None = None) -> None:
        fields: dict[str, Any] = {"detail": detail}
        if isinstance(event, E.Digits):
            fields["digits"] = event.digits
        elif isinstance(event, E.Speech):
            fields["speech"] = event.text
            fields["confidence"] = event.confidence
        if match is not None:
            fields["intent"] = match.intent
            fields["detail"] = {**(detail or {}), "intent_confidence": round(match.confidence, 3)}
        self.step(node, "no_match" if no_match else E.NAMES[type(event)], **fields)

    def retry(self, node: AskNode, why: str, logged: bool = False) -> None:
        s = self.state
        handler = node.no_input if why == "no_input" else node.no_match
        limit = handler.retries if handler.retries is not None else node.retries
        tries = s.get("tries") if isinstance(s.get("tries"), dict) else {}
        tries[why] = tries.get(why, 0) + 1
        s["tries"] = tries
        silent_exit, unmatched_exit = node.exits()
        if tries[why] > limit:
            target = silent_exit if why == "no_input" else unmatched_exit
            if not logged:
                self.step(node, why, detail={"gave_up": True, "goto": target})
            self.actions += self.speak(handler.say) if handler.say else []
            self.goto(target)
            return
        sorry = self.speak(handler.say) if handler.say else [
            self.say_text(NOT_HEARD if why == "no_input" else NOT_UNDERSTOOD)]
        if not logged:
            self.step(node, why, detail={"try": tries[why]})
        self.ask(node, sorry, event="reprompt")

    # -- waiting experiences --------------------------------------------------------------

    def on_queue_wait(self, node: QueueNode, event: E.QueueWait) -> None:
        said: list = []
        if node.max_wait and event.queue_time is not None and event.queue_time >= node.max_wait:
            self.step(node, "queue_wait", detail={"position": event.position,
                                                   "queue_time": event.queue_time, "leave": True})
            self.actions.append(A.LeaveQueue())
            return
        est = self.estimate(node, event.position)
        # Our line also holds callbacks, which Twilio's queue position does not count.
        position = est.position if est is not None else event.position
        if node.announce_position and position:
            text = "You are next in line." if position == 1 else f"You are number {position} in line."
            said.append(self.say_text(text))
        if node.announce_wait and est is not None and est.wait_s is not None:
            said.append(self.say_text(WAIT_IS.format(wait=_duration(est.wait_s))))
        said += self.speak(node.wait_say)
        offered = bool(node.callback and est is not None and est.longer_than(node.callback.offer_after)
                       and not self.state.get("no_callback")  # told we cannot call them back
                       and not self.state.get("pending_cb"))  # one is booked already
        if offered:
            offer = node.callback
            self.cbv = self.callback_vars(node, est)
            prompts = self.speak(offer.offer) or [self.say_text(OFFER.format(key=self.cbv["key_words"]))]
            if node.wait_play:
                prompts.append(A.Play(node.wait_play))
            self.actions += said
            self.actions.append(A.OfferCallback(tuple(prompts), offer.key, offer.phrases,
                                                self.flow.language, self.yes_no_inputs()))
            said += prompts
        else:
            if node.wait_play:
                said.append(A.Play(node.wait_play))
            self.actions += said
        detail = {"position": event.position, "queue_time": event.queue_time,
                  "average_time": event.average_time, "size": event.size}
        if est is not None:
            detail.update(line_position=est.position, estimated_wait=_round(est.wait_s),
                          agents_available=est.agents_available, callback_offered=offered)
        self.step(node, "queue_wait", said, detail=detail)

    def on_queue_left(self, node: QueueNode, event: E.QueueLeft) -> None:
        detail = {"result": event.result, "queue_time": event.queue_time}
        self.step(node, "queue_left", detail=detail)
        if (self.state.get("cb") or {}).get("phase") == "leaving" and event.result != "bridged":
            if event.result == "hangup":
                self.state.update(outcome=Outcome.ABANDONED, wait=Wait.ENDED, line=None)
                self.actions.append(A.Hangup())
                return
            self.callback_begin(node)  # the caller asked for a callback and left Twilio's queue
            return
        self.state["line"] = None
        if event.result == "bridged":
            self.state["outcome"] = Outcome.QUEUED
            self.state["wait"] = Wait.ENDED
            self.actions.append(A.Hangup())
        elif event.result == "hangup":
            self.state["outcome"] = Outcome.ABANDONED
            self.state["wait"] = Wait.ENDED
            self.actions.append(A.Hangup())
        else:
            self.goto(node.next)

    def on_transfer_ended(self, node: TransferNode, event: E.TransferEnded) -> None:
        self.step(node, "transfer_ended", detail={"status": event.status, "duration": event.duration})
        if event.status in ("completed", "answered"):
            self.state["outcome"] = Outcome.TRANSFERRED
            self.state["wait"] = Wait.ENDED
            self.actions.append(A.Hangup())
        elif node.next:
            self.goto(node.next)
        else:
            self.actions += [self.say_text("Sorry, nobody could take your call. Please try again later."),
                             A.Hangup()]
            self.state["wait"] = Wait.ENDED
            self.state["outcome"] = Outcome.FAILED

    def on_recording(self, node: RecordNode, event: E.RecordingDone) -> None:
        self.state["outcome"] = Outcome.VOICEMAIL
        self.step(node, "recording", digits=event.digits, action="recorded",
                  detail={"url": event.url, "duration": event.duration})
        self.goto(node.next)


    # -- callbacks ------------------------------------------------------------------------

    def estimate(self, node: QueueNode, position: int | None = None):
        """This caller's place and estimated wait in the node's queue, or None when unknown."""
        if self.ctx.estimate is None:
            return None
        try:
            return self.ctx.estimate(node.name, position)
        except Exception:  # a missing estimate must never cost the caller their call
            return None

    def callback_vars(self, node: QueueNode, est=None) -> dict:
        """`callback.*` for the wording of offers and questions."""
        offer = node.callback
        cb = self.state.get("cb") or {}
        number = cb.get("number") or ""
        key = offer.key if offer else "1"
        wait = est.wait_s if est is not None else None
        return {"key": key, "key_words": KEY_WORDS.get(key, key), "queue": node.name,
                "number": number, "number_spoken": spoken(number, self.ctx.region),
                "wait": _duration(wait) if wait is not None else "",
                "when": _when(wait), "position": est.position if est is not None else None}

    def on_queue_offer(self, node: QueueNode, event: E.Event) -> None:
        """A key press or words during the hold music: a request for a callback, or nothing."""
        offer = node.callback
        digits = event.digits if isinstance(event, E.Digits) else None
        text = _words(event.text) if isinstance(event, E.Speech) else ""
        accepted = offer is not None and (
            (digits is not None and digits[:1] == offer.key)
            or any(f" {p} " in f" {text} " for p in offer.phrases))
        self.step(node, "callback_offer", digits=digits,
                  speech=event.text if isinstance(event, E.Speech) else None,
                  detail={"accepted": accepted})
        if accepted:
            self.state["cb"] = {"phase": "leaving"}
            self.actions.append(A.LeaveQueue())  # Twilio then reports QueueResult=leave

    def callback_begin(self, node: QueueNode) -> None:
        """Out of Twilio's queue (the line keeps the caller's place): confirm the number to call."""
        s = self.state
        number = normalize(s["caller"].get("phone") or s["from"] or None, self.ctx.region)
        s["wait"] = Wait.CALLBACK
        s["tries"] = {}
        s["cb"] = {"phase": "confirm", "number": number} if number else {"phase": "enter"}
        self.callback_prompt(node, [])

    def callback_prompt(self, node: QueueNode, before: list, log: bool = True) -> None:
        offer = node.callback or _DEFAULT_OFFER
        cb = self.state["cb"]
        phase = cb["phase"]
        self.cbv = self.callback_vars(node)
        number = self.cbv["number_spoken"]
        if phase == "reason":
            said = before + (self.speak(offer.reason) or [self.say_text(ASK_REASON)])
            self.actions += said + [A.Record(offer.reason_max_length, "#", True, 3)]
            if log:
                self.step(node, "callback_question", said, action="record", detail={"phase": phase})
            return
        if phase == "enter":
            prompts = before + (self.speak(offer.enter_number) or [self.say_text(ENTER_NUMBER)])
            gather = A.Gather(prompts=tuple(prompts), input=("dtmf",), timeout=10, finish_on_key="#",
                              language=self.flow.language)
        else:
            custom = offer.confirm if phase == "confirm" else offer.read_back
            default = CONFIRM_NUMBER if phase == "confirm" else READ_BACK
            prompts = before + (self.speak(custom) or [self.say_text(default.format(number=number))])
            gather = A.Gather(prompts=tuple(prompts), input=self.yes_no_inputs(), num_digits=1,
                              timeout=6, hints=("yes", "no", "confirm", "different number"),
                              language=self.flow.language)
        self.actions.append(gather)
        if log:
            self.step(node, "callback_question", prompts, action="gather", detail={"phase": phase})

    def yes_no_inputs(self) -> tuple[str, ...]:
        return ("dtmf",) if self.flow.settings.speech == "off" else ("dtmf", "speech")

    def on_callback(self, node: QueueNode, event: E.Event) -> None:
        s = self.state
        cb = s["cb"]
        phase = cb.get("phase")
        fields = {"digits": getattr(event, "digits", None), "speech": getattr(event, "text", None)}
        if phase == "reason":
            if isinstance(event, E.RecordingDone):
                cb["reason_url"] = event.url
                step = self.step(node, "recording", action="recorded", detail={
                    "url": event.url, "duration": event.duration, "callback_reason": True})
                cb["reason_seq"] = step["seq"]
                self.book(node)
            else:
                self.step(node, "unexpected", detail={"event": E.NAMES.get(type(event), "?"),
                                                      "waiting_for": "callback"})
                self.callback_prompt(node, [], log=False)
            return
        if phase == "enter":
            number = (normalize_typed(event.digits, self.ctx.region)
                      if isinstance(event, E.Digits) else None)
            self.step(node, "callback_number", **fields, detail={"valid": bool(number)})
            if number:
                s["cb"] = {"phase": "read_back", "number": number}
                self.callback_prompt(node, [])
            else:
                why = NOT_HEARD if isinstance(event, E.NoInput) else NOT_A_NUMBER
                self.callback_retry(node, why)
            return
        answer = _yes_no(event)
        self.step(node, "callback_confirm", **fields, detail={"phase": phase, "answer": answer})
        if answer == "yes":
            if (node.callback or _DEFAULT_OFFER).reason is not None:
                cb["phase"] = "reason"
                self.callback_prompt(node, [])
            else:
                self.book(node)
        elif answer == "no":
            s["cb"] = {"phase": "enter"}
            self.callback_prompt(node, [])
        else:
            self.callback_retry(node, NOT_HEARD if isinstance(event, E.NoInput) else NOT_UNDERSTOOD)

    def callback_retry(self, node: QueueNode, sorry: str) -> None:
        tries = self.state.get("tries") if isinstance(self.state.get("tries"), dict) else {}
        tries["callback"] = tries.get("callback", 0) + 1
        self.state["tries"] = tries
        if tries["callback"] > CALLBACK_TRIES:
            # No callback after all: back in the queue, with the place the caller already had.
            self.actions.append(self.say_text(BACK_IN_LINE))
            self.goto(node.id)
            return
        self.callback_prompt(node, [self.say_text(sorry)])

    def book(self, node: QueueNode, aloud: bool = True) -> None:
        """The caller confirmed a number: book the callback and end the call politely."""
        s = self.state
        offer = node.callback or _DEFAULT_OFFER
        cb = s["cb"]
        est = self.estimate(node)
        self.cbv = self.callback_vars(node, est)
        opens = self.calling_opens(cb["number"], offer)
        if opens is None:
            # Nobody may call them before the request expires (late evening where they are):
            # no promise we cannot keep; they keep their place in the queue instead.
            self.step(node, "callback_refused", detail={"number": cb["number"], "why": "calling_hours"})
            if not aloud:  # they hung up (after recording a reason): nobody to put back in line
                return
            self.actions.append(self.say_text(NO_CALLING_TIME.format(number=self.cbv["number_spoken"])))
            s["no_callback"] = True
            self.goto(node.id)
            return
        if opens > ((est.wait_s if est is not None else None) or 0):
            self.cbv["when"] = _when(opens)  # the window opens later than their turn comes

        said = (self.speak(offer.booked) or [self.say_text(BOOKED.format(
            number=self.cbv["number_spoken"], when=self.cbv["when"]))]) if aloud else []
        since = (s.get("line") or {}).get("since") or self.at
        self.actions.append(A.RequestCallback(
            number=cb["number"], queue=node.name, enqueued_at=since, flow=offer.flow,
            reason_url=cb.get("reason_url"), reason_seq=cb.get("reason_seq"),
            max_attempts=offer.max_attempts, retry_after=offer.retry_after,
            expire_after=offer.expire_after, calling_hours=offer.calling_hours))
        self.actions += said + [A.Hangup()]
        s.update(outcome=Outcome.CALLBACK, wait=Wait.ENDED, line=None)
        cb["phase"] = "booked"
        self.step(node, "callback_requested", said, action="callback", detail={
            "number": cb["number"], "queue": node.name, "enqueued_at": since,
            "estimated_wait": _round(est.wait_s if est is not None else None),
            "reason_url": cb.get("reason_url")})

    def calling_opens(self, number: str, offer: Any) -> float | None:
        """Seconds until `number` may be called back (0 when unknown: no calling window here)."""
        if self.ctx.calling_opens is None:
            return 0.0
        try:
            return self.ctx.calling_opens(number, offer.calling_hours, offer.expire_after)
        except Exception:  # not knowing the window must not cost the caller their callback
            return 0.0

    # A caller with a pending callback phones again: keep it or cancel it.

    def ask_pending(self) -> bool:
        s = self.state
        if not (self.flow.callbacks.recognise and self.ctx.pending_callback and s["from"]):
            return False
        try:
            pending = self.ctx.pending_callback(s["from"])
        except Exception:  # not knowing about the callback must not stop the call
            pending = None
        if not pending:
            return False
        s["pending_cb"] = {"id": pending["id"], "queue": pending.get("queue", ""),
                           "wait_s": pending.get("wait_s")}
        self.pending_prompt()
        return True

    def pending_vars(self) -> dict:
        p = self.state.get("pending_cb") or {}
        return {"id": p.get("id"), "queue": str(p.get("queue") or "").replace("_", " "),
                "when": _when(p.get("wait_s"))}

    def pending_prompt(self, log: bool = True) -> None:
        self.cbv = self.pending_vars()
        prompts = self.speak(self.flow.callbacks.pending) or [self.say_text(PENDING.format(**self.cbv))]
        self.actions.append(A.Gather(prompts=tuple(prompts), input=self.yes_no_inputs(), num_digits=1,
                                     timeout=6, hints=("keep", "cancel"), language=self.flow.language))
        self.state["wait"] = Wait.PENDING_CALLBACK
        if log:
            self.step(None, "callback_pending", prompts, action="gather",
                      detail={"callback": self.cbv["id"]})

    def on_pending(self, event: E.Event) -> None:
        s = self.state
        self.cbv = self.pending_vars()
        text = _words(event.text) if isinstance(event, E.Speech) else ""
        digits = event.digits if isinstance(event, E.Digits) else None
        if digits == "2" or "cancel" in text.split():
            choice = "cancel"
        elif digits == "1" or _yes_no(event) == "yes" or "keep" in text.split():
            choice = "keep"
        else:
            choice = None
        self.step(None, "callback_pending", digits=digits, speech=getattr(event, "text", None),
                  detail={"callback": self.cbv["id"], "choice": choice})
        if choice == "keep":
            said = self.speak(self.flow.callbacks.kept) or [self.say_text(KEPT.format(**self.cbv))]
            self.actions += said + [A.Hangup()]
            s.update(outcome=Outcome.CALLBACK, wait=Wait.ENDED)
            return
        if choice == "cancel":
            self.actions.append(A.CancelCallback(self.cbv["id"]))
            self.actions += self.speak(self.flow.callbacks.cancelled) or [self.say_text(CANCELLED)]
            s.pop("pending_cb", None)
        self.goto(self.flow.start)  # silence keeps the callback and goes on with the call

    # -- conditions and the whisper -------------------------------------------------------

    def test(self, cond: Any) -> bool:
        if isinstance(cond, bool):
            return cond
        if isinstance(cond, str):
            try:
                return bool(templates.evaluate(cond, self.context()))
            except (TypeError, UndefinedError):  # e.g. `vars.tries > 2` before vars.tries is set
                return False
        s = self.state
        for key, want in cond.items():
            if key == "known_caller":
                ok = bool(s["caller"].get("known")) == bool(want)
            elif key in ("open", "closed"):
                is_open = self.flow.hours[want].is_open(self.ctx.now)
                ok = is_open if key == "open" else not is_open
            elif key == "holiday":
                ok = self.flow.hours[want].holiday(self.ctx.now) is not None
            elif key == "intent":
                ok = s["intent"] in ([want] if isinstance(want, str) else want)
            elif key in ("caller", "vars"):
                data = s["caller"] if key == "caller" else s["vars"]
                ok = all(_equals(data.get(k), v) for k, v in want.items())
            elif key == "all":
                ok = all(self.test(c) for c in want)
            elif key == "any":
                ok = any(self.test(c) for c in want)
            elif key == "not":
                ok = not self.test(want)
            else:
                raise FlowRuntimeError(f"unknown condition '{key}'")
            if not ok:
                return False
        return True

    def _dial_target(self, node: TransferNode) -> str:
        """The number or SIP address a transfer dials, from its template. A value that is
        neither (`{{ caller.account_manager }}` for a caller without one) fails the step
        safely: Twilio would dial nothing and drop the caller."""
        to = self.render(node.to).strip()
        if to.lower().startswith("sip:"):
            return "sip:" + to[4:]
        number = normalize(to, self.ctx.region)
        if number is None:
            raise FlowRuntimeError(f"node '{node.id}' transfers to {to!r}, which is not a phone "
                                   "number or a sip: address")
        return number

    def whisper(self, node: TransferNode) -> str:
        """What the agent hears before the caller is connected, so nobody repeats themselves."""
        template = node.whisper or self.flow.whisper
        if template:
            return self.render(template)
        s = self.state
        c = s["caller"]
        if c.get("known"):
            who = c.get("full_name") or c.get("first_name") or "a known caller"
            if c.get("customer_id"):
                who += f", customer {' '.join(str(c['customer_id']))}"
        elif s["from"]:
            who = f"an unrecognised caller from {' '.join(s['from'].lstrip('+'))}"
        else:
            who = "a caller with a withheld number"
        parts = [f"Call from {who}."]
        if s.get("intent"):
            parts.append(f"Calling about {s['intent'].replace('_', ' ')}.")
        for k, v in s["vars"].items():
            if v not in (None, ""):
                parts.append(f"{k.replace('_', ' ')}: {v}.")
        return " ".join(parts)

    # -- when things go wrong -------------------------------------------------------------

    def fail_safe(self, exc: Exception) -> None:
        """Apologise and hand the caller to a person, whatever state the call is in."""
        if self.state is None:
            self.state = {"v": STATE_VERSION, "sid": "", "flow": self.flow.id, "node": self.flow.start,
                          "seq": 0, "vars": {}, "caller": {"known": False}, "from": "", "to": "",
                          "intent": None, "outcome": None}
        # The caller goes to a person now: no booking half made before the failure.
        self.actions = [a for a in self.actions if not isinstance(a, (*A.WAITING, A.RequestCallback))]
        number = self.flow.settings.fallback_number or self.ctx.fallback_number
        said = [self.say_text(APOLOGY + (" Let me put you through to someone who can help."
                                         if number else " Please leave a message after the tone."))]
        self.actions += said
        if number:
            self.actions.append(A.Dial(number, 30, None, "Transferred after an error in the phone menu."))
            self.state["wait"] = Wait.FAILSAFE
        else:
            self.actions.append(A.Record(120, "#", True, 5))
            self.state["wait"] = Wait.FAILSAFE
        self.state["outcome"] = Outcome.FAILED
        self.step(None, "error", said, action=f"dial:{number}" if number else "record",
                  detail={"error": f"{type(exc).__name__}: {exc}"})


    def after_fail_safe(self, event: E.Event) -> None:
        """The person the caller was handed to after an error answered or not, or the message
        was left: never a bare hang-up."""
        s = self.state
        if isinstance(event, E.RecordingDone):
            self.step(None, "recording", digits=event.digits, action="recorded",
                      detail={"url": event.url, "duration": event.duration, "after_error": True})
            s.update(outcome=Outcome.VOICEMAIL, wait=Wait.ENDED)
            self.actions += [self.say_text("Thank you, we have your message. Goodbye."), A.Hangup()]
            return
        self.step(None, "transfer_ended", detail={"status": event.status, "duration": event.duration,
                                                  "after_error": True})
        if event.status in ("completed", "answered"):
            s.update(outcome=Outcome.TRANSFERRED, wait=Wait.ENDED)
            self.actions.append(A.Hangup())
            return
        self.actions += [self.say_text("Sorry, nobody could take your call. Please leave a message "
                                       "after the tone, and we will get back to you."),
                         A.Record(120, "#", True, 5)]


class _Stop:
    def __repr__(self) -> str:
        return "STOP"


_STOP: Any = _Stop()


_DEFAULT_OFFER = CallbackOffer()


def _words(text: str) -> str:
    return " ".join(text.lower().replace(",", " ").replace(".", " ").replace("!", " ").split())


def _yes_no(event: E.Event) -> str | None:
    if isinstance(event, E.Digits):
        return {"1": "yes", "2": "no"}.get(event.digits)
    if isinstance(event, E.Speech):
        text = _words(event.text)
        words = set(text.split())
        if text in YES_WORDS or "confirm" in words or (words & YES_WORDS and not words & NO_WORDS):
            return "yes"
        if words & NO_WORDS or "different" in words:
            return "no"
    return None


def _duration(seconds: float | None) -> str:
    """A wait in words a caller hears: "less than a minute", "about 12 minutes", "about 2 hours"."""
    if seconds is None:
        return ""
    minutes = round(seconds / 60)
    if seconds < 45:
        return "less than a minute"
    if minutes <= 1:
        return "about a minute"
    if minutes < 90:
        return f"about {minutes} minutes"
    hours = round(minutes / 60)
    return f"about {hours} hours"


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "as soon as an agent is free"
    if seconds < 45:
        return "in a moment"
    return "in " + _duration(seconds)


def _round(value: float | None) -> int | None:
    return None if value is None else int(round(value))


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


def _equals(have: Any, want: Any) -> bool:
    if isinstance(want, list):
        return any(_equals(have, w) for w in want)
    if isinstance(want, bool) or have is None:
        return have == want
    return str(have).strip().lower() == str(want).strip().lower()


def _finish_key(node: AskNode) -> str | None:
    # Twilio ends input on '#' by default, which would swallow a menu choice of '#'.
    if node.finish_on_key is None and any("#" in (c.key or "") for c in node.choices):
        return ""
    return node.finish_on_key


def _digits(node: AskNode) -> int | None:
    # Single-key menus should not wait for the Gather timeout after the key press.
    keys = [c.key for c in node.choices if c.key]
    if keys and all(len(k) == 1 for k in keys):
        return 1
    return None


def clock() -> datetime:
    """The real time, for shells (the engine itself never reads the clock)."""
    return datetime.now(UTC)

