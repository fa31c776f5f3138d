"""API answers declared by operators, for trying flows without the company's systems.

Flow tests declare what each `request:` node's API answers (`responses:`, by node id), for
the whole file and per test; the terminal simulator and the dashboard's test calls use the
answers a flow's test files declare for all their tests, unless asked to call the real APIs.

    responses:
      order_status: {status: 200, json: {status: shipped, eta: Thursday}}
      outage_check: timeout              # the API does not answer in time
      crm: 500                           # a status alone (no body)
      billing: {status: 200, body: "<html>oops</html>"}   # not JSON
      slow_one: {json: {ok: true}, seconds: 2}            # answers, but slowly
      gone: refused                      # nothing listens

An answer becomes the events.RequestDone the web server would have fed the engine. A flow
whose caller directory is an HTTP API (a CRM) can declare its answer too, as `directory`:
every test's caller is looked up in it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.errors import FlowError, IvrError, Problem, suggest
from ivr.flows.directory_api import AnswerError, caller_from_answer
from ivr.flows.model import Flow
from ivr.flows.yamlsource import Source, parse

from . import actions as A
from . import events as E

DIRECTORY = "directory"  # the answer of a flow's HTTP caller directory
QUICK_S = 0.3  # the web server's default IVR_REQUEST_QUICK_MS: slower answers let the prompt play
DEFAULT_SECONDS = 0.05
WORDS = {"timeout": "timeout", "refused": "connection", "connection": "connection"}
KEYS = ("status", "json", "body", "seconds", "error")
SHAPE = ("an answer is a status (500), timeout, refused, or a mapping with status, json or body, "
         "and seconds, e.g. {status: 200, json: {status: shipped}}")


@dataclass(frozen=True)
class Answer:
    """What an API answers one request, as a test declares it."""

    status: int = 200
    body: str | None = None
    error: str | None = None  # "timeout", "connection"
    seconds: float = DEFAULT_SECONDS

    def event(self, req: A.Request, quick_s: float = QUICK_S) -> E.RequestDone:
        """The answer as the web server would feed it to the engine."""
        if self.error == "timeout" or self.seconds >= req.timeout:
            return E.RequestDone(req.id, error="timeout", ms=int(req.timeout * 1000),
                                 heard_prompt=req.timeout > quick_s)
        ms = int(self.seconds * 1000)
        if self.error:
            return E.RequestDone(req.id, error=self.error, ms=ms, heard_prompt=self.seconds > quick_s)
        size = len((self.body or "").encode())
        return E.RequestDone(req.id, status=self.status, body=self.body, ms=ms, size=size,
                             heard_prompt=self.seconds > quick_s)


class NoAnswer(IvrError, LookupError):
    """A request no answer was declared for."""

    def __init__(self, node: str):
        super().__init__(node)
        self.node = node


def parse_answer(value: Any, src: Source, path: tuple) -> Answer:
    if isinstance(value, str) and value.lower() in WORDS:
        return Answer(error=WORDS[value.lower()])
    if isinstance(value, int) and not isinstance(value, bool):
        return _status(value, src, path) and Answer(status=value, body="")
    if not isinstance(value, dict):
        raise FlowError([src.problem(path, SHAPE)])
    for k in value:
        if k not in KEYS:
            raise FlowError([src.problem(path + (k,), f"unknown key '{k}' in an answer{suggest(k, KEYS)}; "
                                         f"allowed: {', '.join(KEYS)}", key=True)])
    if "json" in value and "body" in value:
        raise FlowError([src.problem(path, "an answer has 'json' or 'body', not both")])
    status = value.get("status", 200)
    _status(status, src, path + ("status",))
    seconds = value.get("seconds", DEFAULT_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise FlowError([src.problem(path + ("seconds",), "seconds is how long the API takes to "
                                     "answer, a number like 0.2")])
    error = value.get("error")
    if error is not None and str(error).lower() not in WORDS:
        raise FlowError([src.problem(path + ("error",), "error is timeout or refused")])
    if "json" in value:
        body = json.dumps(value["json"], default=str)
    else:
        body = value.get("body", "")
        if not isinstance(body, str):
            raise FlowError([src.problem(path + ("body",), "body is the answer's text as is; for JSON "
                                         "write json: instead")])
    return Answer(status=status, body=body, error=WORDS[str(error).lower()] if error else None,
                  seconds=float(seconds))


def _status(value: Any, src: Source, path: tuple) -> bool:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise FlowError([src.problem(path, f"'{value}' is not an HTTP status (100 to 599)")])
    return True


def parse_answers(value: Any, flow: Flow, src: Source, path: tuple) -> dict[str, Answer]:
    """A `responses:` mapping, checked against the flow's request nodes."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FlowError([src.problem(path, "responses maps request node ids to their API's answer, "
                                           "e.g. {order_status: {status: 200, json: {...}}}")])
    nodes = [n.id for n in flow.nodes.values() if n.kind == "request"]
    if flow.directory_api is not None:
        nodes.append(DIRECTORY)
    out = {}
    for name, answer in value.items():
        if name not in nodes:
            raise FlowError([src.problem(path + (name,), f"flow '{flow.id}' has no request node "
                                         f"'{name}'{suggest(str(name), nodes)}", key=True)])
        out[name] = parse_answer(answer, src, path + (name,))
    return out


def answering(answers: Mapping[str, Answer],
              quick_s: float = QUICK_S) -> Callable[[A.Request], E.RequestDone]:
    """A requester for SimulatedCall that answers from `answers` (NoAnswer when none is declared)."""
    def answer(req: A.Request) -> E.RequestDone:
        found = answers.get(req.node)
        if found is None:
            raise NoAnswer(req.node)
        return found.event(req, quick_s)

    return answer


def caller_lookup(answers: Mapping[str, Answer], flow: Flow) -> Callable[[str], dict | None]:
    """Who calls, for a flow with an HTTP directory: from its declared answer (nobody
    without one, or when the answer is an error, as on a real call)."""
    answer = answers.get(DIRECTORY)

    def lookup(phone: str) -> dict | None:
        if answer is None or flow.directory_api is None:
            return None
        api = flow.directory_api
        done = answer.event(A.Request(DIRECTORY, DIRECTORY, "GET", api.url, timeout=api.timeout))
        if done.error:
            return None
        try:
            return caller_from_answer(api, phone, done.status, done.body)
        except AnswerError:
            return None

    return lookup


def declared_for(flow: Flow) -> tuple[dict[str, Answer], list[Problem]]:
    """The answers the test files of a flow (tests/*.test.yaml next to it, naming it) declare
    for all their tests, first file first; and what is wrong with those files."""
    here = Path(flow.file).parent
    answers: dict[str, Answer] = {}
    problems: list[Problem] = []
    for path in sorted((here / "tests").glob("*.test.y*ml")):
        try:
            src = parse(path.read_text("utf-8"), str(path))
        except (OSError, FlowError):
            continue  # `ivr flows test` says what is wrong with it
        data = src.data
        if not isinstance(data, dict) or not _names(data.get("flow"), path, flow):
            continue
        try:
            for name, answer in parse_answers(data.get("responses"), flow, src, ("responses",)).items():
                answers.setdefault(name, answer)
        except FlowError as exc:
            problems += exc.problems
    return answers, problems


def _names(spec: Any, test_file: Path, flow: Flow) -> bool:
    """Whether a test file's `flow:` is this flow (a path to its file, or its name)."""
    if not isinstance(spec, str):
        return False
    candidate = test_file.parent / spec
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate.resolve() == Path(flow.file).resolve()
    return spec in (flow.id, Path(flow.file).stem)
