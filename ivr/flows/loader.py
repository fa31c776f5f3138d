"""Load a flow file into typed objects, or explain exactly what is wrong with it.

Three passes, each reporting every problem it finds with file, line and column:
YAML syntax, the JSON Schema (shape of the file), then meaning (targets that exist,
intents that are declared, hours that parse, templates that compile).

Each node is built, and its meaning checked, by its kind's row in ivr.flows.nodes.KINDS;
the `Builder` is what a kind's module is given to read its YAML and report problems.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from ivr.errors import FlowError, Problem, suggest
from ivr.i18n import sentences
from ivr.i18n.catalogue import EXTRA_VALUES, placeholders
from ivr.i18n.language import overrides
from speech.normalize import normalize

from . import directory_api, survey, templates
from .model import Flow, FlowCallbacks, Intent, Node, Pause, PlayAudio, Prompt, SayText, Settings
from .nodes import KINDS, NodeKind, RawNode
from .schema import schema
from .yamlsource import Source, parse

__all__ = ["Builder", "load_flow", "load_flow_text", "schema"]


def _validator() -> Draft202012Validator:
    return _validator_for(tuple(KINDS.items()))


@lru_cache(maxsize=4)
def _validator_for(kinds: tuple[tuple[str, NodeKind], ...]) -> Draft202012Validator:
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


class Builder:
    """Reads one file's values into typed ones and collects the problems found on the way."""

    def __init__(self, src: Source, base_dir: Path):
        self.src = src
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        self.texts: list[tuple[tuple, str]] = []  # every template and expression, for later checks
        self.caller_fields: list[tuple[tuple, str]] = []  # (where, column) read outside templates
        self.broken_hours: set[str] = set()  # hours already reported as broken

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

    def target(self, flow: Flow, path: tuple, node_id: str | None) -> None:
        """A node id at `path` must name a node of the flow."""
        if node_id and node_id not in flow.nodes:
            self.error(path, f"there is no node '{node_id}'{suggest(node_id, list(flow.nodes))}",
                       code="missing-node")

    def dialable(self, path: tuple, value: str, what: str, sip: bool = True) -> None:
        """A fixed number to dial (or call from) must be one: E.164, or a sip: address."""
        from ivr.phone import normalize

        text = str(value).strip()
        if sip and text.lower().startswith("sip:"):
            return
        if normalize(text) is None or not text.startswith("+"):
            self.error(path, f"{what} '{text}' is not a phone number: write it with its country code, "
                       f"e.g. \"+14155550100\" (in quotes){' or a sip: address' if sip else ''}",
                       code="bad-number")

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
    b = Builder(src, base_dir)
    d = src.data
    settings = Settings(**d.get("settings", {}))
    if settings.fallback_number:
        b.dialable(("settings", "fallback_number"), settings.fallback_number, "fallback_number")
    nodes: dict[str, Node] = {}
    for node_id, body in d["nodes"].items():
        nodes[node_id] = _build_node(b, node_id, body, settings, d.get("language") or "en-US")

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
    broken_hours = b.broken_hours
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
        directory=d["directory"] if isinstance(d.get("directory"), str) else None,
        directory_api=directory_api.load(b, d["directory"]) if isinstance(d.get("directory"), dict) else None,
        whisper=b.template(("whisper",), d["whisper"]) if d.get("whisper") else None,
        messages=_messages(b, d.get("messages") or {}),
        hours=hours,
        intents=intents,
        settings=settings,
        callbacks=_flow_callbacks(b, d.get("callbacks")),
        survey=survey.load(b, d.get("survey")),
        source=src,
    )
    _check_references(b, flow)
    _check_hours_in_templates(b, flow, broken_hours)
    _check_secrets_in_templates(b)
    flow.caller_fields = tuple(_caller_fields(b, flow))
    return flow, b.problems


def _build_node(b: Builder, node_id: str, body: dict, settings: Settings, language: str) -> Node:
    kind = next(k for k in body if k in KINDS)
    path = ("nodes", node_id)
    line = b.src.where(path, key=True)[0]
    common = dict(id=node_id, kind=kind, line=line, next=body.get("next"),
                  description=body.get("description", ""))
    return KINDS[kind].load(b, RawNode(node_id, kind, body, body[kind], path, common, settings, language))


def _messages(b: Builder, given: dict) -> tuple[tuple[str, str], ...]:
    """`messages:` the flow's own words for catalogue sentences, by name, with no placeholder
    the sentence does not have."""
    names = sentences.by_name()
    found = {}
    for name, text in given.items():
        message = names.get(name)
        if message is None:
            b.error(("messages", name), f"no sentence is called '{name}'{suggest(name, names)}; the "
                    "names are those of ivr/i18n/sentences.py in lower case", code="unknown-message",
                    key=True)
            continue
        allowed = (placeholders(message.msgid) | placeholders(message.plural or "")
                   | ({"n"} if message.plural else set()) | EXTRA_VALUES.get(message.context or "", set()))
        extra = placeholders(text) - allowed
        if extra:
            b.error(("messages", name), f"'{name}' has no {{{sorted(extra)[0]}}}; it may use "
                    f"{', '.join('{' + p + '}' for p in sorted(allowed)) or 'no placeholder'}",
                    code="bad-placeholder")
            continue
        found[message] = text
    return overrides(found)


def _flow_callbacks(b: Builder, v: dict | None) -> FlowCallbacks:
    v = v or {}
    path = ("callbacks",)
    return FlowCallbacks(recognise=v.get("recognise", True),
                         pending=b.prompt(path + ("pending",), v.get("pending")),
                         kept=b.prompt(path + ("kept",), v.get("kept")),
                         cancelled=b.prompt(path + ("cancelled",), v.get("cancelled")))


def _check_references(b: Builder, flow: Flow) -> None:
    b.target(flow, ("start",), flow.start)
    b.target(flow, ("settings", "escape"), flow.settings.escape)
    for node_id, node in flow.nodes.items():
        b.target(flow, ("nodes", node_id, "next"), node.next)
        resolve = KINDS[node.kind].resolve
        if resolve is not None:
            resolve(b, flow, node)


def _check_hours_in_templates(b: Builder, flow: Flow, broken: set[str]) -> None:
    """`hours.<name>` in a template or condition must name business hours of this flow: an
    unknown name is silently empty and false at run time (the line never 'opens')."""
    for path, text in b.texts:
        for name in templates.hours_names(text):
            if name not in flow.hours and name not in broken:
                b.error(path, f"no business hours named '{name}' under 'hours'"
                        f"{suggest(name, flow.hours)}", code="missing-hours")


def _may_read_secrets(path: tuple) -> bool:
    """Only what is sent to an API may hold a secret: a request's url, headers and body, an
    HTTP directory's url and headers. Anywhere else it could be said to the caller or logged."""
    if len(path) >= 4 and path[0] == "nodes" and path[2] == "request":
        return path[3] in ("url", "headers", "json", "form")
    return len(path) >= 2 and path[0] == "directory" and path[1] in ("url", "headers")


def _check_secrets_in_templates(b: Builder) -> None:
    for path, text in b.texts:
        if templates.names_read(text, "secrets") and not _may_read_secrets(path):
            b.error(path, "secrets can only be used in what a request sends (its url, headers, json "
                    "or form): anywhere else they could be said to the caller or written in the log",
                    code="secret-use")


def _caller_fields(b: Builder, flow: Flow) -> list[tuple[tuple, str]]:
    """Where the flow reads a directory column: `caller.<name>` in templates and conditions,
    `{caller: {...}}` tests and lookups `by` a column. Checked against the directory's
    columns once it is open (checker.caller_field_problems)."""
    reads = [(path, name) for path, text in b.texts for name in templates.names_read(text, "caller")]
    return reads + b.caller_fields
