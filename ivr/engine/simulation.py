"""Calls without a phone: drive the engine as a caller would, for the terminal simulator,
the operators' flow tests and test calls.

The same engine and the same intent matcher as real calls; only the telephony is pretend.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO

from ivr.flows.directory import Directory, open_directory, unknown_context
from ivr.flows.model import Flow
from ivr.phone import normalize

from . import actions as A
from . import events as E
from .runner import Context, Result, clock, run
from .states import Outcome, Wait, is_over, is_with_a_person, records_a_message

log = logging.getLogger("ivr.simulation")
_ids = itertools.count(1)


class SimulatedCall:
    """One call driven by hand. Keeps what the caller heard and every node it went through."""

    def __init__(self, flow: Flow, from_number: str | None, *, flows: Mapping[str, Flow] | None = None,
                 now: datetime | None = None, directory: Directory | None = None,
                 match: Callable | None = None, caller: dict | None = None,
                 to_number: str | None = None, call_sid: str | None = None, region: str = "US",
                 estimate: Callable | None = None, pending_callback: Callable | None = None,
                 propagate: bool = False,
                 requester: Callable[[A.Request], E.RequestDone] | None = None,
                 caller_lookup: Callable[[str], dict | None] | None = None,
                 sms_opted_out: Callable[[str], bool] | None = None,
                 in_survey_share: bool | None = True):
        self.flow = flow
        self.flows = dict(flows or {flow.id: flow})
        self.flows.setdefault(flow.id, flow)
        self.now = now
        self.region = region
        self.raw_from = from_number
        self.from_number = normalize(from_number, region)
        self.to_number = to_number or (flow.numbers[0] if flow.numbers else None)
        self.directory = directory
        self.match = match
        self.estimate = estimate  # queue -> Estimate: what a test says the wait is
        self.pending_callback = pending_callback
        self.propagate = propagate  # a bug in the engine raises instead of failing safe
        # answers `request:` nodes: declared answers (ivr.engine.answers) or the real API
        self.requester = requester
        self.requests: list[tuple[A.Request, E.RequestDone]] = []  # what the flow asked, and the answer
        # a flow's HTTP caller directory: E.164 number -> caller context or None
        self.caller_lookup = caller_lookup
        self.sms_opted_out = sms_opted_out  # the opt-out list: number -> whether it is on it
        # whether the call falls within the survey's `share` (None: by its call id, as real
        # calls): operators trying a flow want to hear the survey, whatever the share
        self.in_survey_share = in_survey_share
        self.call_sid = call_sid or f"SIM{next(_ids):08d}"
        self.caller = caller if caller is not None else self._lookup()
        self.state: dict | None = None
        self.steps: list[dict] = []
        self.results: list[Result] = []
        self.ended: dict | None = None

    def _lookup(self) -> dict:
        if self.flow.directory_api is not None:
            found = self.caller_lookup(self.from_number) if self.from_number and self.caller_lookup else None
            return found or unknown_context(self.from_number)
        if self.from_number and self.directory is not None:
            found = self.directory.lookup(self.from_number)
            if found:
                return found.as_context()
        return unknown_context(self.from_number)

    def _context(self) -> Context:
        def lookup(field: str, value: str) -> dict | None:
            if self.flow.directory_api is not None:
                number = normalize(value, self.region) if field == "phone" else None
                return self.caller_lookup(number) if number and self.caller_lookup else None
            if self.directory is None:
                return None
            found = (self.directory.lookup(normalize(value, self.region) or "") if field == "phone"
                     else self.directory.find(field, value))
            return found.as_context() if found else None

        return Context(now=self.now or clock(), flows=self.flows, lookup=lookup, match=self.match,
                       estimate=self.estimate, pending_callback=self.pending_callback,
                       region=self.region, propagate=self.propagate, sms_opted_out=self.sms_opted_out,
                       survey_sampled=None if self.in_survey_share is None
                       else (lambda sid, share: bool(self.in_survey_share) and share > 0))

    def send(self, event: E.Event) -> Result:
        if isinstance(event, E.Digits):
            event = self._as_twilio_sends(event)
        flow = self.flows[self.state["flow"]] if self.state else self.flow
        result = run(flow, self.state, event, self._context())
        result.log_error(log, self.call_sid)
        self.state = result.state
        self.steps += result.steps
        self.results.append(result)
        if result.ended:
            self.ended = result.ended
        if (any(isinstance(a, A.LeaveQueue) for a in result.actions)
                and (self.state.get("cb") or {}).get("phase") == "leaving"):
            # The caller asked for a callback during the hold music: Twilio takes them out of
            # its queue and reports it, as it would on a real call.
            return self.send(E.QueueLeft("leave", 30))
        if result.actions and isinstance(result.actions[-1], A.Request):
            return self._answer(result, result.actions[-1])
        return result

    def _answer(self, result: Result, req: A.Request) -> Result:
        """The flow asked an API: answer it, and make the two steps one, as the caller hears
        them (the request's prompt only when the answer was slow)."""
        if self.requester is None:
            done = E.RequestDone(req.id, error="not_declared")
        else:
            done = self.requester(req)  # NoAnswer: no answer declared for this node
        self.requests.append((req, done))
        first = len(self.results) - 1
        more = self.send(done)
        heard = list(req.prompts) if done.heard_prompt else []
        merged = Result(result.actions[:-1] + heard + more.actions, more.state,
                        result.steps + more.steps, more.ended or result.ended, more.error or result.error)
        del self.results[first:]
        self.results.append(merged)
        return merged

    def _as_twilio_sends(self, event: E.Digits) -> E.Event:
        """The keys pressed, as Twilio reports them for the menu listening: it stops at the
        finish key (`#` unless the menu says otherwise) and leaves it out, and stops after
        `num_digits` keys. Only the finish key pressed is silence."""
        gather = self.last_action()
        if not isinstance(gather, A.Gather) or "dtmf" not in gather.input:
            return event
        digits = event.digits
        finish = "#" if gather.finish_on_key is None else gather.finish_on_key
        if finish and finish in digits:
            digits = digits[:digits.index(finish)]
        if gather.num_digits:
            digits = digits[:gather.num_digits]
        return E.Digits(digits) if digits else E.NoInput()

    def start(self) -> Result:
        return self.send(E.CallStarted(self.call_sid, self.from_number, self.to_number, self.caller,
                                       is_test=True))

    # -- what an operator wants to know ---------------------------------------------------

    @property
    def waiting_for(self) -> Wait | None:
        return Wait.of(self.state.get("wait")) if self.state else None

    @property
    def node(self) -> str | None:
        return self.state.get("node") if self.state else None

    @property
    def visited(self) -> list[str]:
        out: list[str] = []
        for s in self.steps:
            if s["event"] == "enter" and (not out or out[-1] != s["node"]):
                out.append(s["node"])
        return out

    @property
    def last_heard(self) -> str:
        return self.results[-1].said if self.results else ""

    def actions(self, kind: type) -> list:
        """Every action of this kind the call produced so far (e.g. A.RequestCallback)."""
        return [a for r in self.results for a in r.actions if isinstance(a, kind)]

    @property
    def heard(self) -> str:
        return " ".join(r.said for r in self.results if r.said)

    @property
    def over(self) -> bool:
        return is_over(self.waiting_for) or self.ended is not None

    def survey_answers(self) -> dict | None:
        """What the caller answered in the post-call survey (the `survey_end` step's detail:
        score, solved, comment, hung_up), or None when they were not surveyed or it is not over."""
        ends = [st for st in self.steps if st["event"] == "survey_end"]
        return ends[-1].get("detail") if ends else None

    def last_action(self):
        return self.results[-1].actions[-1] if self.results and self.results[-1].actions else None


def directory_for(flow: Flow, region: str = "US") -> Directory | None:
    """The flow's caller directory, resolved next to its file (DirectoryError if broken)."""
    if not flow.directory:
        return None
    return open_directory(flow.directory, Path(flow.file).parent, region)


def default_matcher() -> Callable:
    from ivr.flows.intents import Matchers

    return Matchers().match


def parse_input(line: str) -> E.Event:
    """What the operator typed: digits are key presses, an empty line is silence, anything
    else is speech."""
    text = line.strip()
    if not text:
        return E.NoInput()
    if text.lower() in ("hangup", "hang up", "/hangup", "bye!"):
        return E.HangUp("completed")
    if all(ch in "0123456789*#" for ch in text.replace(" ", "")):
        return E.Digits(text.replace(" ", ""))
    return E.Speech(text, 0.9)


def describe_request(req: A.Request, done: E.RequestDone) -> str:
    """One line for the operator: what the flow asked and what came back."""
    from ivr.flows.templates import mask_secrets

    outcome = {"not_declared": "no answer declared (the flow takes on_error)"}.get(
        done.error or "", done.error or f"HTTP {done.status}")
    took = f" in {done.ms} ms" if done.ms is not None else ""
    return f"[request '{req.node}': {req.method} {mask_secrets(req.url)} -> {outcome}{took}]"


def describe_texts(result: Result) -> list[str]:
    """A line per text message the step would send (a simulated call sends none)."""
    return [f"[text to {a.to}: \"{a.body}\" ({a.segments} segment{'s' if a.segments != 1 else ''}; "
            "not sent: this is a simulation)]" for a in result.actions if isinstance(a, A.SendSms)]


def describe_survey(answers: dict) -> str:
    """One line: "score 4, solved: yes, a comment recorded" or "no answer (hung up)"."""
    parts = [f"score {answers['score']}" if answers.get("score") else "no score"]
    if answers.get("solved") is not None:
        parts.append(f"solved: {'yes' if answers['solved'] else 'no'}")
    if answers.get("comment"):
        parts.append("a comment recorded")
    if answers.get("hung_up"):
        parts.append("the caller hung up")
    return ", ".join(parts)


def describe_wait(call: SimulatedCall) -> str:
    action = call.last_action()
    if isinstance(action, A.Gather):
        ways = " or ".join({"dtmf": "keypad", "speech": "speech"}[i] for i in action.input)
        return f"[listening for {ways}: type digits, words, or Enter for silence]"
    if isinstance(action, A.Enqueue):
        return f"[the caller waits in queue '{action.queue}' for the next agent]"
    if isinstance(action, A.Dial):
        whisper = f"; the agent first hears: \"{action.whisper}\"" if action.whisper else ""
        return f"[transferring to {action.to}{whisper}]"
    if isinstance(action, A.Record):
        return "[recording a message: type what the caller says, or Enter to leave it empty]"
    if isinstance(action, A.Hangup):
        return "[the call ends]"
    return ""


def interactive(call: SimulatedCall, stdin: IO[str] | None = None, out: IO[str] | None = None) -> int:
    """Run a simulated call in the terminal. Returns 0 when the call reached an end."""
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    echo = not stdin.isatty()
    c = call.caller
    who = (f"known caller {c.get('full_name') or c.get('first_name')}" if c.get("known")
           else "unknown caller")
    print(f"Call from {call.from_number or 'a withheld number'} ({who}) to flow '{call.flow.id}'",
          file=out)
    asked = 0
    surveyed = False
    result = call.start()
    while True:
        for req, done in call.requests[asked:]:
            print(describe_request(req, done), file=out)
        asked = len(call.requests)
        if result.said:
            print(f"IVR: {result.said}", file=out)
        for line in describe_texts(result):
            print(line, file=out)
        note = describe_wait(call)
        if note:
            print(note, file=out)
        wait = call.waiting_for
        if is_with_a_person(wait) and call.flows[call.state["flow"]].survey is not None and not surveyed:
            # The flow asks callers for their verdict once the agent hangs up: play it out.
            surveyed = True
            print("[an agent takes the call, talks with the caller, then hangs up; the caller is "
                  "still on the line]", file=out)
            result = call.send(E.TransferEnded("completed", 120))
            continue
        if is_over(wait) or is_with_a_person(wait):
            break
        print("caller> ", end="", file=out, flush=True)
        line = stdin.readline()
        if line == "":
            print("(hang up)" if echo else "", file=out)
            result = call.send(E.HangUp("completed"))
            break
        if echo:
            print(line.rstrip("\n"), file=out)
        if wait is Wait.RECORD or records_a_message(call.state):
            event = E.RecordingDone("simulated-recording", len(line.split()) * 2 or None)
        else:
            event = parse_input(line)
        result = call.send(event)
        if isinstance(event, E.HangUp):
            break
    print(f"Path: {' -> '.join(call.visited)}", file=out)
    answers = call.survey_answers()
    if answers is not None:
        print(f"Survey: {describe_survey(answers)}", file=out)
    outcome = call.state.get("outcome") if call.state else None
    where = {Wait.QUEUE: Outcome.QUEUED, Wait.DIAL: Outcome.TRANSFERRED}.get(call.waiting_for, outcome)
    print(f"Ended: {where or 'completed'} at '{call.node}'", file=out)
    return 0
