"""Load a flow file into typed objects, or explain exactly what is wrong with it.

Three passes, each reporting every problem it finds with file, line and column:
YAML syntax, the JSON Schema (shape of the file), then meaning (targets that exist,
intents that are declared, hours that parse, templates that compile).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from ivr.errors import FlowError, Problem, suggest
from speech.normalize import normalize

from . import templates
from .model import (
    KINDS,
    AskNode,
    BranchNode,
    CallbackOffer,
    Case,
    Choice,
    Flow,
    FlowCallbacks,
    GotoFlowNode,
    Handler,
    HangupNode,
    Intent,
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
    Settings,
    TransferNode,
)
from .yamlsource import Source, parse


@lru_cache(maxsize=1)
def schema() -> dict:
    """The published JSON Schema for flow files (ivr/flows/flow.schema.json)."""
    text = resources.files("ivr.flows").joinpath("flow.schema.json").read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def load_flow(path: str | Path, display_name: str | None = None) -> Flow:
    """Load and check one flow file. Raises FlowError listing every error found."""
    path = Path(path)
    name = display_name or str(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError([Problem(name, None, None, f"cannot read flow file: {exc}", code="io")]) from None
    return load_flow_text(text, name, default_id=path.stem, base_dir=path.parent)


def load_flow_text(
    text: str, file: str, default_id: str = "flow", base_dir: Path | None = None
) -> Flow:
    src = parse(text, file)
    problems = _shape_problems(src)
    if any(p.severity == "error" for p in problems):
        raise FlowError(sorted(problems, key=_order))
    flow, more = _build(src, default_id, base_dir or Path("."))
    problems += more
    if any(p.severity == "error" for p in problems):
        raise FlowError(sorted(problems, key=_order))
    from .checker import check_flow  # a late import: the checker imports the model too

    problems += check_flow(flow)
    problems.sort(key=_order)
    if any(p.severity == "error" for p in problems):
        raise FlowError(problems)
    flow.problems = problems
    flow.digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return flow


def _order(p: Problem) -> tuple:
    return (p.file, p.line or 0, p.column or 0, p.severity != "error", p.message)


# -- pass 2: the shape of the file --------------------------------------------------------


def _shape_problems(src: Source) -> list[Problem]:
    data = src.data
    if data is None:
        return [src.problem((), "the file is empty; a flow needs at least 'nodes'", code="empty")]
    if not isinstance(data, dict):
        return [src.problem((), "a flow file must be a mapping with 'nodes' and other keys")]
    problems: list[Problem] = []
    bad_nodes: set[str] = set()
    nodes = data.get("nodes")
    if isinstance(nodes, dict):
        for node_id, body in nodes.items():
            path = ("nodes", node_id)
            if not isinstance(body, dict):
                problems.append(src.problem(path, f"node '{node_id}' must be a mapping such as "
                                                  "'say: ...' with 'next: ...'"))
                bad_nodes.add(node_id)
                continue
            kinds = [k for k in body if k in KINDS]
            if not kinds:
                others = [k for k in body if k not in ("next", "description", "else")]
                hint = suggest(others[0], KINDS) if others else ""
                problems.append(src.problem(
                    path, f"node '{node_id}' does not say what it does: give it one of "
                          f"{', '.join(KINDS)}{hint}", key=True, code="no-kind"))
                bad_nodes.add(node_id)
            elif len(kinds) > 1:
                problems.append(src.problem(
                    path + (kinds[1],), f"node '{node_id}' has both '{kinds[0]}' and '{kinds[1]}'; "
                    "a node does one thing, so split it into two nodes joined by 'next'",
                    key=True, code="two-kinds"))
                bad_nodes.add(node_id)
    seen: set[tuple] = set()
    for err in _validator().iter_errors(data):
        path = tuple(err.absolute_path)
        if len(path) >= 2 and path[0] == "nodes" and path[1] in bad_nodes:
            continue
        p = _translate(src, err)
        if (p.line, p.column, p.message) not in seen:
            seen.add((p.line, p.column, p.message))
            problems.append(p)
    return problems


_TYPE_WORDS = {"string": "text", "object": "a mapping", "array": "a list", "integer": "a whole number",
               "number": "a number", "boolean": "true or false", "null": "nothing"}


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    if value is None:
        return "nothing"
    return f"'{value}'"


def _translate(src: Source, err: ValidationError) -> Problem:
    """Turn a jsonschema error into one sentence an operator can act on."""
    # anyOf/oneOf errors carry the interesting failure in their context.
    if err.validator in ("anyOf", "oneOf") and err.context:
        deepest = max(err.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
        # Deeper, or as deep but not a mere type mismatch: `queue: {name: x, wiat_say: y}` fails
        # the string form on its type and the mapping form on the key, which is what to say.
        if len(deepest.absolute_path) > len(err.absolute_path) or deepest.validator != "type":
            return _translate(src, deepest)
    path = tuple(err.absolute_path)
    where = _where_words(path)
    if err.validator == "additionalProperties":
        allowed = list(err.schema.get("properties", {}))
        extras = [k for k in err.instance if k not in allowed]
        key = extras[0] if extras else "?"
        return src.problem(path + (key,), f"unknown key '{key}'{where}{suggest(key, allowed)}; "
                           f"allowed here: {', '.join(allowed)}", key=True, code="unknown-key")
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return src.problem(path, f"missing '{missing}'{where}", code="missing-key")
    if err.validator == "type":
        want = err.validator_value
        want = [want] if isinstance(want, str) else want
        words = " or ".join(_TYPE_WORDS.get(w, w) for w in want)
        hint = ""
        if "string" in want and isinstance(err.instance, int) and not isinstance(err.instance, bool):
            # YAML reads +15005550006 as a number (and drops the +): numbers go in quotes
            hint = '; put phone numbers and digits in quotes, e.g. "+15005550006"'
        return src.problem(path, f"expected {words}{where}, got {_describe(err.instance)}{hint}",
                           code="type")
    if err.validator == "enum":
        opts = ", ".join(str(v) for v in err.validator_value)
        return src.problem(path, f"{_describe(err.instance)} is not allowed{where}; use one of: "
                           f"{opts}{suggest(str(err.instance), map(str, err.validator_value))}",
                           code="enum")
    if err.validator == "pattern" and len(path) >= 1:
        return src.problem(path, f"{_describe(err.instance)} is not a valid value{where} "
                           f"(expected to match {err.validator_value})", code="pattern")
    if err.validator in ("anyOf", "oneOf"):
        return src.problem(path, f"{_describe(err.instance)} is not valid{where}", code="shape")
    if err.validator == "propertyNames":
        return src.problem(path, f"invalid name{where}: {err.message}", code="name")
    return src.problem(path, f"{err.message}{where}", code=err.validator)


def _where_words(path: tuple) -> str:
    if len(path) >= 2 and path[0] == "nodes":
        rest = ".".join(str(p) for p in path[2:])
        return f" in node '{path[1]}'" + (f" ({rest})" if rest else "")
    if path:
        return f" at {'.'.join(str(p) for p in path)}"
    return ""


# -- pass 3: meaning ----------------------------------------------------------------------


class _Builder:
    def __init__(self, src: Source, base_dir: Path):
        self.src = src
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        self.texts: list[tuple[tuple, str]] = []  # every template and expression, for later checks
        self.caller_fields: list[tuple[tuple, str]] = []  # (where, column) read outside templates

    def error(self, path: tuple, message: str, code: str = "", key: bool = False) -> None:
        self.problems.append(self.src.problem(path, message, key=key, code=code))

    def warn(self, path: tuple, message: str, code: str = "") -> None:
        self.problems.append(self.src.problem(path, message, severity="warning", code=code))

    def template(self, path: tuple, text: str) -> str:
        self.texts.append((path, text))
        try:
            templates.check(text)
        except templates.TemplateError as exc:
            self.error(path, str(exc), code="template")
        return text

    def prompt(self, path: tuple, value: Any) -> Prompt:
        if value is None or value is True or value is False:
            return ()
        items = value if isinstance(value, list) else [value]
        out: list = []
        for i, item in enumerate(items):
            p = path + (i,) if isinstance(value, list) else path
            if isinstance(item, str):
                out.append(SayText(self.template(p, item)))
            elif "say" in item:
                out.append(SayText(self.template(p + ("say",), item["say"])))
            elif "play" in item:
                out.append(PlayAudio(item["play"], item.get("seconds")))
            elif "pause" in item:
                out.append(Pause(float(item["pause"])))
        return tuple(out)


def _build(src: Source, default_id: str, base_dir: Path) -> tuple[Flow, list[Problem]]:
    b = _Builder(src, base_dir)
    d = src.data
    settings = Settings(**d.get("settings", {}))
    if settings.fallback_number:
        _check_dialable(b, ("settings", "fallback_number"), settings.fallback_number, "fallback_number")
    nodes: dict[str, Node] = {}
    for node_id, body in d["nodes"].items():
        nodes[node_id] = _build_node(b, node_id, body, settings)

    intents = {}
    for name, spec in (d.get("intents") or {}).items():
        if isinstance(spec, list):
            phrases, keywords = spec, []
        else:
            phrases, keywords = spec.get("phrases", []), spec.get("keywords", [])
        if not phrases and not keywords:
            b.error(("intents", name), f"intent '{name}' needs at least one phrase or keyword")
        for key, items in (("phrases", phrases), ("keywords", keywords)):
            for i, item in enumerate(items):
                if isinstance(item, str) and not normalize(item):
                    where = ("intents", name, i) if isinstance(spec, list) else ("intents", name, key, i)
                    b.error(where, f"'{item}' has no words a caller could say", code="empty-phrase")
        if name == "fallback":
            b.error(("intents", name), "'fallback' is reserved for speech that matches no intent; "
                    "give this intent another name", key=True, code="reserved")
        intents[name] = Intent(name, tuple(phrases), tuple(keywords))

    hours = {}
    broken_hours = set()
    for name, spec in (d.get("hours") or {}).items():
        from .hours import HoursError, parse_hours

        try:
            hours[name] = parse_hours(name, spec)
        except HoursError as exc:
            broken_hours.add(name)
            b.error(("hours", name) + tuple(exc.path), f"hours '{name}': {exc.message}", code="hours")

    start = d.get("start") or next(iter(d["nodes"]))
    flow = Flow(
        id=d.get("id", default_id),
        file=src.file,
        nodes=nodes,
        start=start,
        description=d.get("description", ""),
        numbers=tuple(d.get("numbers", ())),
        default=bool(d.get("default", False)),
        language=d.get("language", "en-US"),
        voice=d.get("voice"),
        directory=d.get("directory"),
        whisper=b.template(("whisper",), d["whisper"]) if d.get("whisper") else None,
        hours=hours,
        intents=intents,
        settings=settings,
        callbacks=_flow_callbacks(b, d.get("callbacks")),
        source=src,
    )
    _check_references(b, flow, d, broken_hours)
    _check_hours_in_templates(b, flow, broken_hours)
    flow.caller_fields = tuple(_caller_fields(b, flow))
    return flow, b.problems


def _build_node(b: _Builder, node_id: str, body: dict, settings: Settings) -> Node:
    kind = next(k for k in body if k in KINDS)
    path = ("nodes", node_id)
    kp = path + (kind,)
    line = b.src.where(path, key=True)[0]
    common = dict(id=node_id, kind=kind, line=line, next=body.get("next"),
                  description=body.get("description", ""))
    v = body[kind]
    if kind == "say":
        return SayNode(**common, prompt=b.prompt(kp, v))
    if kind == "ask":
        def handler(name: str) -> Handler:
            h = v.get(name) or {}
            return Handler(b.prompt(kp + (name, "say"), h.get("say")), h.get("goto"), h.get("retries"))

        choices = tuple(
            Choice(goto=c["goto"], key=str(c["key"]) if "key" in c else None, label=c.get("label"),
                   intent=c.get("intent"), say=b.prompt(kp + ("choices", i, "say"), c.get("say")))
            for i, c in enumerate(v.get("choices", []))
        )
        for i, c in enumerate(choices):
            if c.key is not None and not _KEY.match(c.key):  # numbers in YAML skip the schema's pattern
                b.error(kp + ("choices", i, "key"), f"key '{c.key}' cannot be pressed: use 1 to 10 of "
                        "0-9, * and #", code="bad-key")
        if choices and body.get("next") is not None:
            b.error(path + ("next",), "'next' is only for a question without 'choices' (a free answer "
                    "saved with save_as); a menu goes where its choices, no_input and no_match say",
                    key=True, code="next-on-menu")
        return AskNode(
            **common, prompt=b.prompt(kp + ("prompt",), v["prompt"]), choices=choices,
            announce=v.get("announce", True), input=tuple(v.get("input", ("dtmf", "speech"))),
            num_digits=v.get("num_digits"), finish_on_key=v.get("finish_on_key"),
            timeout=v.get("timeout", 5), speech_timeout=v.get("speech_timeout", "auto"),
            retries=v.get("retries", 2), no_input=handler("no_input"), no_match=handler("no_match"),
            save_as=v.get("save_as"), confirm_below=v.get("confirm_below", settings.confirm_below),
            escape=settings.escape,
        )
    if kind == "branch":
        cases = []
        for i, c in enumerate(v):
            cond = c["if"]
            if isinstance(cond, str):
                b.texts.append((kp + (i, "if"), "{{" + cond + "}}"))
                try:
                    templates.check_expression(cond)
                except templates.TemplateError as exc:
                    b.error(kp + (i, "if"), str(exc), code="template")
            cases.append(Case(cond, c["goto"]))
        if "else" not in body:
            b.error(path, f"branch node '{node_id}' needs 'else': where callers go when no "
                    "case matches", code="missing-key", key=True)
        return BranchNode(**common, cases=tuple(cases), otherwise=body.get("else"))
    if kind == "lookup":
        return LookupNode(**common, by=v.get("by", "phone"),
                          value=b.template(kp + ("value",), v.get("value", "{{ call.from }}")),
                          found=v["found"], not_found=v["not_found"])
    if kind == "set":
        for name, val in v.items():
            if isinstance(val, str):
                b.template(kp + (name,), val)
        return SetNode(**common, values=tuple(v.items()))
    if kind == "queue":
        v = {"name": v} if isinstance(v, str) else v
        offer = v.get("callback")
        return QueueNode(**common, name=v["name"], say=b.prompt(kp + ("say",), v.get("say")),
                         wait_say=b.prompt(kp + ("wait_say",), v.get("wait_say")),
                         wait_play=v.get("wait_play"),
                         announce_position=v.get("announce_position", True),
                         announce_wait=v.get("announce_wait", False),
                         max_wait=v.get("max_wait"),
                         callback=(_callback_offer(b, kp + ("callback",), offer)
                                   if offer not in (None, False) else None))
    if kind == "transfer":
        v = {"to": v} if isinstance(v, str) else v
        whisper = v.get("whisper")
        if "{" not in v["to"]:
            _check_dialable(b, kp + (("to",) if isinstance(body[kind], dict) else ()), v["to"], "transfer to")
        if v.get("caller_id"):
            _check_dialable(b, kp + ("caller_id",), v["caller_id"], "caller_id", sip=False)
        return TransferNode(**common, to=b.template(kp + ("to",), v["to"]),
                            say=b.prompt(kp + ("say",), v.get("say")),
                            whisper=b.template(kp + ("whisper",), whisper) if whisper else None,
                            timeout=v.get("timeout", 30), caller_id=v.get("caller_id"))
    if kind == "record":
        v = v or {}
        return RecordNode(**common, prompt=b.prompt(kp + ("prompt",), v.get("prompt")),
                          max_length=v.get("max_length", 120),
                          finish_on_key=v.get("finish_on_key", "#"), beep=v.get("beep", True),
                          timeout=v.get("timeout", 5))
    if kind == "hangup":
        return HangupNode(**common, prompt=b.prompt(kp, v))
    v = {"flow": v} if isinstance(v, str) else v
    return GotoFlowNode(**common, flow=v["flow"], node=v.get("node"))


def _callback_offer(b: _Builder, path: tuple, v: Any) -> CallbackOffer:
    """queue.callback: `true` for every default, or a mapping (the schema checked its shape)."""
    from .hours import HoursError, parse_hours

    v = {} if v is True else v
    key = str(v.get("key", 1))
    if len(key) != 1:
        b.error(path + ("key",), f"the callback key must be one key (0-9, * or #), got '{key}'",
                code="callback-key")
    hours = v.get("calling_hours")
    if hours is not None:
        try:  # the days and times are checked now; the time zone is the caller's, at dial time
            parse_hours("calling_hours", {"timezone": "UTC", "open": hours})
        except HoursError as exc:
            b.error(path + ("calling_hours",) + tuple(exc.path[1:]), f"calling_hours: {exc.message}",
                    code="hours")
    reason = v.get("reason")
    offer = CallbackOffer(
        offer_after=v.get("offer_after", 120), key=key,
        phrases=tuple(p.lower() for p in v.get("phrases", CallbackOffer.phrases)),
        offer=b.prompt(path + ("offer",), v.get("offer")),
        confirm=b.prompt(path + ("confirm",), v.get("confirm")),
        enter_number=b.prompt(path + ("enter_number",), v.get("enter_number")),
        read_back=b.prompt(path + ("read_back",), v.get("read_back")),
        reason=None if reason in (None, False) else b.prompt(path + ("reason",), reason),
        reason_max_length=v.get("reason_max_length", 30),
        booked=b.prompt(path + ("booked",), v.get("booked")),
        flow=v.get("flow", "callback"), max_attempts=v.get("max_attempts", 3),
        retry_after=v.get("retry_after", 300), expire_after=v.get("expire_after", 4 * 3600),
        calling_hours=hours,
    )
    texts = [item.text for item in offer.offer if isinstance(item, SayText)]
    named = re.compile(rf"(?<![0-9]){re.escape(key)}(?![0-9])|callback\.key")
    if offer.offer and not any(named.search(t) for t in texts):
        b.warn(path + ("offer",), f"the callback offer never names key {key}: callers hear the offer "
               f"but not what to press; say \"press {key}\"", code="callback-key")
    return offer


def _flow_callbacks(b: _Builder, v: dict | None) -> FlowCallbacks:
    v = v or {}
    path = ("callbacks",)
    return FlowCallbacks(recognise=v.get("recognise", True),
                         pending=b.prompt(path + ("pending",), v.get("pending")),
                         kept=b.prompt(path + ("kept",), v.get("kept")),
                         cancelled=b.prompt(path + ("cancelled",), v.get("cancelled")))


def _check_references(b: _Builder, flow: Flow, d: dict, broken_hours: set[str]) -> None:
    ids = list(flow.nodes)

    def target(path: tuple, node_id: str | None) -> None:
        if node_id and node_id not in flow.nodes:
            b.error(path, f"there is no node '{node_id}'{suggest(node_id, ids)}", code="missing-node")

    target(("start",), flow.start)
    target(("settings", "escape"), flow.settings.escape)
    for node_id, node in flow.nodes.items():
        path = ("nodes", node_id)
        target(path + ("next",), node.next)
        if isinstance(node, AskNode):
            ap = path + ("ask",)
            keys: dict[str, int] = {}
            for i, c in enumerate(node.choices):
                cp = ap + ("choices", i)
                target(cp + ("goto",), c.goto)
                if c.intent and c.intent not in flow.intents:
                    b.error(cp + ("intent",), f"intent '{c.intent}' is not declared under "
                            f"'intents'{suggest(c.intent, flow.intents)}", code="missing-intent")
                if c.key is not None:
                    if c.key in keys:
                        b.error(cp + ("key",), f"key {c.key} is already used by choice "
                                f"{keys[c.key] + 1} of this menu", code="duplicate-key")
                    keys[c.key] = i
                    if node.num_digits and len(c.key) != node.num_digits:
                        b.error(cp + ("key",), f"key '{c.key}' has {len(c.key)} digits but the menu "
                                f"waits for num_digits: {node.num_digits}", code="key-length")
                if c.key is None and c.intent is None:
                    b.error(cp, "a choice needs a 'key', an 'intent', or both", code="choice")
                if c.key is not None and not c.label and node.announce:
                    b.warn(cp, f"choice for key {c.key} has no 'label', so it cannot be announced "
                           "('for <label>, press <key>')", code="no-label")
            for h in ("no_input", "no_match"):
                target(ap + (h, "goto"), getattr(node, h).goto)
            if "dtmf" not in node.input:
                b.warn(ap + ("input",), "this menu does not take the keypad; callers whose speech is "
                       "not understood have no other way through", code="no-keypad")
        elif isinstance(node, BranchNode):
            for i, c in enumerate(node.cases):
                target(path + ("branch", i, "goto"), c.goto)
                _check_condition(b, flow, path + ("branch", i, "if"), c.condition, broken_hours)
            target(path + ("else",), node.otherwise)
        elif isinstance(node, LookupNode):
            b.caller_fields.append((path + ("lookup", "by"), node.by))
            target(path + ("lookup", "found"), node.found)
            target(path + ("lookup", "not_found"), node.not_found)


_KEY = re.compile(r"^[0-9*#]{1,10}$")


def _check_dialable(b: _Builder, path: tuple, value: str, what: str, sip: bool = True) -> None:
    """A fixed number to dial (or call from) must be one: E.164, or a sip: address."""
    from ivr.phone import normalize

    text = str(value).strip()
    if sip and text.lower().startswith("sip:"):
        return
    if normalize(text) is None or not text.startswith("+"):
        b.error(path, f"{what} '{text}' is not a phone number: write it with its country code, e.g. "
                f"\"+14155550100\" (in quotes){' or a sip: address' if sip else ''}", code="bad-number")


def _check_hours_in_templates(b: _Builder, flow: Flow, broken: set[str]) -> None:
    """`hours.<name>` in a template or condition must name business hours of this flow: an
    unknown name is silently empty and false at run time (the line never 'opens')."""
    for path, text in b.texts:
        for name in templates.hours_names(text):
            if name not in flow.hours and name not in broken:
                b.error(path, f"no business hours named '{name}' under 'hours'"
                        f"{suggest(name, flow.hours)}", code="missing-hours")


def _caller_fields(b: _Builder, flow: Flow) -> list[tuple[tuple, str]]:
    """Where the flow reads a directory column: `caller.<name>` in templates and conditions,
    `{caller: {...}}` tests and lookups `by` a column. Checked against the directory's
    columns once it is open (checker.caller_field_problems)."""
    reads = [(path, name) for path, text in b.texts for name in templates.names_read(text, "caller")]
    return reads + b.caller_fields


def _check_condition(b: _Builder, flow: Flow, path: tuple, cond: Any, broken: set[str]) -> None:
    if not isinstance(cond, dict):
        return
    for key in ("open", "closed", "holiday"):
        name = cond.get(key)
        if name is not None and name not in flow.hours and name not in broken:
            b.error(path + (key,), f"no business hours named '{name}' under 'hours'"
                    f"{suggest(name, flow.hours)}", code="missing-hours")
    intent = cond.get("intent")
    for name in [intent] if isinstance(intent, str) else (intent or []):
        if name not in flow.intents:
            b.error(path + ("intent",), f"intent '{name}' is not declared under 'intents'"
                    f"{suggest(name, flow.intents)}", code="missing-intent")
    if isinstance(cond.get("caller"), dict):
        b.caller_fields += [(path + ("caller", name), name) for name in cond["caller"]]
    for key in ("all", "any"):
        for i, sub in enumerate(cond.get(key, []) or []):
            _check_condition(b, flow, path + (key, i), sub, broken)
    if "not" in cond:
        _check_condition(b, flow, path + ("not",), cond["not"], broken)
