"""Flow tests for operators: "a caller from +1... says ... then presses ... and must reach
node X and hear Y", written as YAML and run by `ivr flows test` before a flow takes calls.

    flow: ../support.yaml          # relative to this file (or a flow id in the flows folder)
    at: 2026-11-24T15:00:00Z       # the time of the calls, for business hours (default: now)
    tests:
      - name: Ada is greeted by name and routed by speech
        from: "+14155550100"
        steps:
          - hears: Hi Ada
          - say: I was charged twice
          - reaches: billing_queue
          - hears: billing team

Inputs: press, say, silence, hangup, recording, agent_answers, agent_hangs_up, no_answer,
queue_wait. Checks: hears, not_hears, at, reaches, not_reaches, outcome, intent, vars,
known_caller, callback, requested, sms, survey.

The post-call survey: `agent_hangs_up` has the agent take the call (at a queue, the server
puts the caller through) and hang up with the caller still on the line; the survey's
questions are then answered with press and say, and checked with `survey: {score: 5,
solved: true, comment: true}` or `survey: none` (not surveyed, or no answer). A test call is
within the survey's `share` unless the test says `in_survey_share: false`.

What the company's APIs answer the flow's `request:` nodes is declared by node id, under
`responses:` for the whole file and in each test that needs another answer (see
ivr/engine/answers.py):

    responses:
      order_status: {status: 200, json: {status: shipped, eta: Thursday}}
    tests:
      - name: the order API is down
        responses: {order_status: 500}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ivr.engine import actions as A
from ivr.engine import events as E
from ivr.engine.answers import NoAnswer, answering, caller_lookup, parse_answers
from ivr.engine.runner import Estimate
from ivr.engine.simulation import SimulatedCall, default_matcher, directory_for
from ivr.engine.states import Outcome, Wait
from ivr.errors import FlowError, IvrError, Problem, suggest
from ivr.flows.directory import DirectoryError
from ivr.flows.loader import load_flow
from ivr.flows.model import Flow
from ivr.flows.registry import flow_files
from ivr.flows.yamlsource import Source, parse

INPUTS = ("press", "say", "silence", "hangup", "recording", "agent_answers", "agent_hangs_up", "no_answer",
          "queue_wait")
CHECKS = ("hears", "not_hears", "at", "reaches", "not_reaches", "outcome", "intent", "vars",
          "known_caller", "callback", "requested", "sms", "survey")
OUTCOMES = tuple(Outcome)
TEST_KEYS = ("name", "from", "to", "at", "caller", "estimated_wait", "pending_callback", "responses",
             "sms_opted_out", "in_survey_share", "steps")
FILE_KEYS = ("flow", "at", "responses", "tests", "description")


@dataclass
class Failure:
    test: str
    line: int | None
    message: str


@dataclass
class FileResult:
    file: str
    passed: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # the file itself is broken

    @property
    def ok(self) -> bool:
        return not self.failed and not any(p.severity == "error" for p in self.problems)


def find_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(list(p.glob("**/*.test.yaml")) + list(p.glob("**/*.test.yml")))
        else:
            out.append(p)
    return out


def _time(value: Any, src: Source, path: tuple) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise FlowError([src.problem(path, f"'{value}' is not a date and time like "
                                           "2026-11-24T15:00:00Z")]) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _resolve_flow(spec: Any, here: Path, src: Source) -> tuple[Flow, dict[str, Flow]]:
    if not isinstance(spec, str):
        raise FlowError([src.problem(("flow",), "'flow' must name the flow file to test, e.g. "
                                                "'flow: ../support.yaml'")])
    candidate = (here.parent / spec)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        flow = load_flow(candidate)
        folder = candidate.parent
    else:
        folder = here.parent.parent if here.parent.name == "tests" else here.parent
        flow = None
        for path in flow_files(folder):
            if path.stem == spec:
                flow = load_flow(path)
        if flow is None:
            raise FlowError([src.problem(("flow",), f"no flow file '{spec}' next to {here.name} "
                                                    f"or in {folder}")])
    flows = {flow.id: flow}
    for path in flow_files(folder):
        if path.resolve() != Path(flow.file).resolve():
            try:
                other = load_flow(path)
                flows.setdefault(other.id, other)
            except FlowError:
                pass  # only the flow under test must load; others matter only for goto_flow
    return flow, flows


def run_file(path: str | Path, propagate: bool = False) -> FileResult:
    """Run one file's tests. `propagate` lets a bug in the engine out rather than have the
    call fail safe (IVR_PROPAGATE_EXCEPTIONS)."""
    path = Path(path)
    result = FileResult(str(path))
    try:
        src = parse(path.read_text("utf-8"), str(path))
    except FlowError as exc:
        result.problems = exc.problems
        return result
    except OSError as exc:
        result.problems = [Problem(str(path), None, None, f"cannot read: {exc}")]
        return result
    data = src.data
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
        result.problems = [src.problem((), "a flow test file needs 'flow' and a list of 'tests'")]
        return result
    for key in data:
        if key not in FILE_KEYS:
            result.problems.append(src.problem((key,), f"unknown key '{key}'"
                                               f"{suggest(key, FILE_KEYS)}", key=True))
    try:
        flow, flows = _resolve_flow(data.get("flow"), path, src)
        default_at = _time(data.get("at"), src, ("at",))
        answers = parse_answers(data.get("responses"), flow, src, ("responses",))
    except FlowError as exc:
        result.problems += exc.problems
        return result
    if result.problems:
        return result
    try:
        directory = directory_for(flow)
    except DirectoryError as exc:
        line, col = flow.source.where(("directory",))
        result.problems.append(Problem(flow.file, line, col, f"caller directory: {exc}"))
        return result
    match = default_matcher()
    for i, test in enumerate(data["tests"]):
        tp = ("tests", i)
        name = (test.get("name") if isinstance(test, dict) else None) or f"test {i + 1}"
        try:
            _run_test(flow, flows, test, src, tp, default_at, directory, match, answers, propagate)
        except _Fail as f:
            result.failed.append(Failure(name, f.line, f.message))
        except FlowError as exc:
            result.problems += exc.problems
        else:
            result.passed.append(name)
    return result


class _Fail(IvrError):
    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line, self.message = line, message


def _run_test(flow, flows, test, src: Source, tp: tuple, default_at, directory, match,
              answers: dict, propagate: bool = False) -> None:
    if not isinstance(test, dict):
        raise FlowError([src.problem(tp, "each test is a mapping with 'name', 'from' and 'steps'")])
    for key in test:
        if key not in TEST_KEYS:
            raise FlowError([src.problem(tp + (key,), f"unknown key '{key}'{suggest(key, TEST_KEYS)}",
                                         key=True)])
    at = _time(test.get("at"), src, tp + ("at",)) or default_at
    caller = test.get("caller")
    if caller is not None and not isinstance(caller, dict):
        raise FlowError([src.problem(tp + ("caller",), "'caller' is the caller's directory record, a "
                                     "mapping like {first_name: Ada, plan: premium}")])
    if caller is not None:
        caller = {"known": True, **{k: v if isinstance(v, bool) else str(v) for k, v in caller.items()}}
        name = f"{caller.get('first_name', '')} {caller.get('last_name', '')}"
        caller.setdefault("full_name", name.strip())
    answers = {**answers, **parse_answers(test.get("responses"), flow, src, tp + ("responses",))}
    line = src.where(tp)[0]
    requester = answering(answers)

    def answer(req: A.Request) -> E.RequestDone:
        try:
            return requester(req)
        except NoAnswer:
            raise _Fail(line, f"the flow asked request '{req.node}', but no answer is declared for it: "
                        f"add responses: {{{req.node}: {{status: 200, json: {{...}}}}}} to the file or "
                        "this test") from None

    call = SimulatedCall(flow, str(test.get("from", "Anonymous")), flows=flows, now=at,
                         directory=directory, match=match, caller=caller,
                         to_number=test.get("to"),
                         estimate=_estimate(test.get("estimated_wait"), src, tp + ("estimated_wait",)),
                         pending_callback=_pending(test.get("pending_callback"), src,
                                                   tp + ("pending_callback",)),
                         propagate=propagate, requester=answer,
                         caller_lookup=caller_lookup(answers, flow),
                         sms_opted_out=(lambda number: True) if test.get("sms_opted_out") else None,
                         in_survey_share=test.get("in_survey_share", True) is not False)
    call.start()
    heard = call.last_heard
    for j, step in enumerate(test.get("steps") or []):
        sp = tp + ("steps", j)
        line = src.where(sp)[0]
        if isinstance(step, str):
            step = {step: True}
        if not isinstance(step, dict) or len(step) != 1:
            raise FlowError([src.problem(sp, "each step is one input (press, say, silence...) or "
                                             "one check (hears, reaches, at...)")])
        (kind, value), = step.items()
        if kind in INPUTS:
            if call.over:
                raise _Fail(line, f"cannot {kind}: the call already ended at '{call.node}'")
            call.send(_event(kind, value, call, src, sp))
            heard = call.last_heard
        elif kind in CHECKS:
            _check_names(kind, value, flows or {flow.id: flow}, src, sp + (kind,))
            _check(kind, value, call, heard, line)
        else:
            raise FlowError([src.problem(sp, f"unknown step '{kind}'{suggest(kind, INPUTS + CHECKS)}",
                                         key=True)])


def _check_names(kind: str, value: Any, flows: dict, src: Source, path: tuple) -> None:
    """A check that names a node or an outcome that cannot exist is a mistake in the test, not
    a failing flow: say so with the name meant."""
    if kind in ("at", "reaches", "not_reaches"):
        nodes = {node for f in flows.values() for node in f.nodes}
        for want in value if isinstance(value, list) else [value]:
            if want not in nodes:
                raise FlowError([src.problem(path, f"there is no node '{want}' in the flows"
                                             f"{suggest(str(want), nodes)}")])
    elif kind == "outcome" and value not in OUTCOMES:
        raise FlowError([src.problem(path, f"'{value}' is not an outcome{suggest(str(value), OUTCOMES)}; "
                                     f"outcomes: {', '.join(OUTCOMES)}")])


def _estimate(value: Any, src: Source, path: tuple):
    """`estimated_wait: 600` (seconds, one agent free), or `{wait: 600, position: 4,
    agents_available: 0}`: what every queue's estimate says during this test."""
    if value is None:
        return None
    spec = value if isinstance(value, dict) else {"wait": value}
    unknown = [k for k in spec if k not in ("wait", "position", "agents_available")]
    wait, position, free = spec.get("wait"), spec.get("position", 1), spec.get("agents_available", 1)
    ok = (not unknown and (wait is None or isinstance(wait, int | float)) and isinstance(position, int)
          and isinstance(free, int) and not isinstance(wait, bool))
    if not ok:
        raise FlowError([src.problem(path, "estimated_wait is seconds (e.g. 600) or a mapping with "
                                           "wait, position and agents_available")])
    est = Estimate(position=position, wait_s=None if wait is None else float(wait), agents_available=free)
    return lambda queue, position=None: est


def _pending(value: Any, src: Source, path: tuple):
    """`pending_callback: {queue: billing, wait: 600}`: the caller already has a callback booked."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("queue"), str):
        raise FlowError([src.problem(path, "pending_callback is a mapping with queue (and wait in "
                                           "seconds), e.g. {queue: billing, wait: 600}")])
    found = {"id": "CBTEST", "queue": value["queue"], "wait_s": value.get("wait")}
    return lambda number: found


def _event(kind: str, value: Any, call: SimulatedCall, src: Source, sp: tuple) -> E.Event:
    if kind == "press":
        return E.Digits(str(value))
    if kind == "say":
        if isinstance(value, dict):
            confidence = value.get("confidence", 0.9)
            number = isinstance(confidence, int | float) and not isinstance(confidence, bool)
            if not number or not 0 <= confidence <= 1:
                raise FlowError([src.problem(sp + ("say", "confidence"), f"confidence '{confidence}' "
                                             "must be a number from 0 to 1, e.g. 0.9")])
            return E.Speech(str(value.get("text", "")), float(confidence))
        return E.Speech(str(value), 0.9)
    if kind == "silence":
        return E.NoInput()
    if kind == "hangup":
        return E.HangUp("completed")
    if kind == "recording":
        return E.RecordingDone("https://api.twilio.com/test-recording", int(value) if
                               isinstance(value, int) and not isinstance(value, bool) else 10)
    if kind == "agent_answers":
        if call.waiting_for is Wait.QUEUE:
            return E.QueueLeft("bridged", 30)
        return E.TransferEnded("completed", 60)
    if kind == "agent_hangs_up":
        # At a queue: the server put the caller through to an agent with a <Dial>, whose action
        # comes back when the agent hangs up; at a transfer, the transfer's own.
        if call.waiting_for not in (Wait.QUEUE, Wait.DIAL):
            raise _Fail(src.where(sp)[0], f"agent_hangs_up: the caller is not with a queue or a "
                        f"transfer but at '{call.node}' (waiting for {call.waiting_for})")
        return E.TransferEnded("completed", int(value) if isinstance(value, int)
                               and not isinstance(value, bool) else 120)
    if kind == "no_answer":
        if call.waiting_for is Wait.QUEUE:
            return E.QueueLeft("leave", 60)
        return E.TransferEnded("no-answer")
    if kind == "queue_wait":
        v = value if isinstance(value, dict) else {}
        return E.QueueWait(v.get("position", 1), v.get("time", 30), v.get("average", 60),
                           v.get("size", v.get("position", 1)))
    raise FlowError([src.problem(sp, f"unknown input '{kind}'")])


def _norm(text: str) -> str:
    return " ".join(str(text).lower().replace("’", "'").split())


def _check(kind: str, value: Any, call: SimulatedCall, heard: str, line: int | None) -> None:
    if kind in ("hears", "not_hears"):
        wants = value if isinstance(value, list) else [value]
        for want in wants:
            found = _norm(want) in _norm(heard)
            if kind == "hears" and not found:
                raise _Fail(line, f"expected to hear '{want}', but heard: \"{heard or '(nothing)'}\"")
            if kind == "not_hears" and found:
                raise _Fail(line, f"expected not to hear '{want}', but heard: \"{heard}\"")
    elif kind == "at":
        if call.node != value:
            raise _Fail(line, f"expected the call to be at '{value}', but it is at '{call.node}' "
                        f"(path: {' -> '.join(call.visited)})")
    elif kind in ("reaches", "not_reaches"):
        wants = value if isinstance(value, list) else [value]
        for want in wants:
            reached = want in call.visited
            if kind == "reaches" and not reached:
                raise _Fail(line, f"expected to reach '{want}', but the path was: "
                            f"{' -> '.join(call.visited)}")
            if kind == "not_reaches" and reached:
                raise _Fail(line, f"expected not to reach '{want}', but the path was: "
                            f"{' -> '.join(call.visited)}")
    elif kind == "outcome":
        outcome = call.state.get("outcome")
        if outcome != value:
            raise _Fail(line, f"expected outcome '{value}', got '{outcome}'")
    elif kind == "intent":
        if call.state.get("intent") != value:
            raise _Fail(line, f"expected intent '{value}', got '{call.state.get('intent')}'")
    elif kind == "vars":
        if not isinstance(value or {}, dict):
            raise _Fail(line, "'vars' expects a mapping of names to values, e.g. {account: '12345'}")
        for k, v in (value or {}).items():
            have = call.state["vars"].get(k)
            if str(have) != str(v):
                raise _Fail(line, f"expected vars.{k} = '{v}', got '{have}'")
    elif kind == "callback":
        _check_callback(value, call, line)
    elif kind == "requested":
        _check_requested(value, call, line)
    elif kind == "sms":
        _check_sms(value, call, line)
    elif kind == "survey":
        _check_survey(value, call, line)
    elif kind == "known_caller":
        known = bool(call.state["caller"].get("known"))
        if known != bool(value):
            raise _Fail(line, f"expected a {'known' if value else 'unknown'} caller, got "
                        f"{'known' if known else 'unknown'}")


def _check_requested(value: Any, call: SimulatedCall, line: int | None) -> None:
    """`requested: order_status` (the flow asked it), `requested: {order_status: {url: "C-1001"}}`
    (and the URL it sent contains that text; `json: {...}` the body has these values), or
    `requested: none`."""
    from ivr.flows.templates import mask_secrets

    asked = [req for req, _ in call.requests]
    if value == "none":
        if asked:
            raise _Fail(line, f"expected no request, but the flow asked {', '.join(r.node for r in asked)}")
        return
    names = value if isinstance(value, list) else [value]
    wants = value if isinstance(value, dict) else {n: {} for n in names}
    for node, want in wants.items():
        sent = [r for r in asked if r.node == node]
        if not sent:
            raise _Fail(line, f"expected request '{node}', but the flow asked "
                        f"{', '.join(r.node for r in asked) or 'nothing'}")
        last = sent[-1]
        want = want or {}
        if not isinstance(want, dict):
            raise _Fail(line, "'requested' takes node ids, or {node: {url: text, json: {...}}}")
        url = mask_secrets(last.url)
        if "url" in want and str(want["url"]) not in url:
            raise _Fail(line, f"expected request '{node}' to a URL containing '{want['url']}', but it "
                        f"went to {url}")
        for k, v in (want.get("json") or {}).items():
            have = (last.json or {}).get(k) if isinstance(last.json, dict) else None
            if str(have) != str(v):
                raise _Fail(line, f"expected request '{node}' to send {k} = '{v}', but it sent '{have}'")


def _check_survey(value: Any, call: SimulatedCall, line: int | None) -> None:
    """`survey: none` (not surveyed, or no score given), `survey: asked` (the survey started),
    or `survey: {score: 4, solved: true, comment: true, hung_up: false}`: what the caller answered."""
    from ivr.engine.simulation import describe_survey

    started = any(st["event"] == "survey_start" for st in call.steps)
    answers = call.survey_answers()
    if value == "none":
        if answers is not None and answers.get("score") is not None:
            raise _Fail(line, f"expected no survey answer, got: {describe_survey(answers)}")
        return
    if not started:
        raise _Fail(line, "expected the caller to be surveyed, but the survey never started "
                    f"(path: {' -> '.join(call.visited)})")
    if value == "asked" or value is True:
        return
    if not isinstance(value, dict):
        raise _Fail(line, "'survey' is none, asked, or a mapping such as {score: 4, solved: true}")
    if answers is None:
        raise _Fail(line, "expected survey answers, but the survey is not over yet")
    for key, want in value.items():
        have = answers.get(key)
        if key == "comment":
            have = bool(have)
        if str(have).lower() != str(want).lower():
            raise _Fail(line, f"expected the survey's {key} to be '{want}', got '{have}' "
                        f"({describe_survey(answers)})")


def _check_sms(value: Any, call: SimulatedCall, line: int | None) -> None:
    """`sms: sent` (a text went out), `sms: {to: "+1...", body: "tracking"}` (the last one went
    to that number and its text contains that), or `sms: none`."""
    texts = call.actions(A.SendSms)
    if value == "none":
        if texts:
            raise _Fail(line, f"expected no text message, but one was sent to {texts[-1].to}")
        return
    if not texts:
        raise _Fail(line, "expected a text message, but none was sent")
    if isinstance(value, dict):
        last = texts[-1]
        if "to" in value:
            from ivr.phone import normalize

            want = normalize(str(value["to"]), call.region) or str(value["to"])
            if last.to != want:
                raise _Fail(line, f"expected the text to go to {want}, but it went to {last.to}")
        if "body" in value and _norm(value["body"]) not in _norm(last.body):
            raise _Fail(line, f"expected the text to contain '{value['body']}', but it says: \"{last.body}\"")


def _check_callback(value: Any, call: SimulatedCall, line: int | None) -> None:
    """`callback: requested`, `callback: {number: ..., queue: ...}`, `callback: cancelled` or
    `callback: none`."""
    booked = call.actions(A.RequestCallback)
    if value == "none":
        if booked:
            raise _Fail(line, f"expected no callback, but one was booked for {booked[-1].number}")
        return
    if value == "cancelled":
        if not call.actions(A.CancelCallback):
            raise _Fail(line, "expected the pending callback to be cancelled, but it was not")
        return
    if not booked:
        raise _Fail(line, "expected a callback to be booked, but none was")
    if isinstance(value, dict):
        last = booked[-1]
        for key, want in value.items():
            have = getattr(last, key, None)
            if key == "number":
                from ivr.phone import normalize

                want = normalize(str(want), call.region) or want
            if str(have) != str(want):
                raise _Fail(line, f"expected the callback's {key} to be '{want}', got '{have}'")
