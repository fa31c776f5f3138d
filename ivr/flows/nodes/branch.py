"""`branch:` go to the first case whose condition holds, or to `else`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ivr.errors import suggest

from .. import templates
from ..model import Flow, Node
from .kind import NODE_ID, NodeKind, RawNode


@dataclass(frozen=True)
class Case:
    condition: Any  # a string expression, a bool, or a structured mapping
    goto: str


@dataclass(frozen=True)
class BranchNode(Node):
    cases: tuple[Case, ...] = ()
    otherwise: str | None = None

    def edges(self) -> Iterator[tuple[str, str]]:
        for c in self.cases:
            yield (describe_condition(c.condition), c.goto)
        if self.otherwise:
            yield ("else", self.otherwise)


def describe_condition(cond: Any) -> str:
    """A short human label for a branch condition (diagrams, path reports)."""
    if isinstance(cond, str):
        return cond
    if isinstance(cond, bool):
        return "always" if cond else "never"
    if isinstance(cond, dict):
        parts = []
        for k, v in cond.items():
            if k == "known_caller":
                parts.append("known caller" if v else "unknown caller")
            elif k in ("open", "closed", "holiday"):
                parts.append(f"{k} {v}")
            elif k in ("all", "any"):
                parts.append(f" {'and' if k == 'all' else 'or'} ".join(describe_condition(c) for c in v))
            elif k == "not":
                parts.append(f"not ({describe_condition(v)})")
            elif isinstance(v, dict):
                parts.append(", ".join(f"{k}.{a} = {b}" for a, b in v.items()))
            else:
                parts.append(f"{k} = {v}")
        return " and ".join(parts)
    return str(cond)


def load(b, raw: RawNode) -> BranchNode:
    kp = raw.key_path
    cases = []
    for i, c in enumerate(raw.value):
        cond = c["if"]
        if isinstance(cond, str):
            b.texts.append((kp + (i, "if"), "{{" + cond + "}}"))
            try:
                templates.check_expression(cond)
            except templates.TemplateError as exc:
                b.error(kp + (i, "if"), str(exc), code="template")
        cases.append(Case(cond, c["goto"]))
    if "else" not in raw.body:
        b.error(raw.path, f"branch node '{raw.id}' needs 'else': where callers go when no "
                "case matches", code="missing-key", key=True)
    return BranchNode(**raw.common, cases=tuple(cases), otherwise=raw.body.get("else"))


def resolve(b, flow: Flow, node: BranchNode) -> None:
    path = ("nodes", node.id)
    for i, c in enumerate(node.cases):
        b.target(flow, path + ("branch", i, "goto"), c.goto)
        _check_condition(b, flow, path + ("branch", i, "if"), c.condition)
    b.target(flow, path + ("else",), node.otherwise)


def _check_condition(b, flow: Flow, path: tuple, cond: Any) -> None:
    if not isinstance(cond, dict):
        return
    for key in ("open", "closed", "holiday"):
        name = cond.get(key)
        if name is not None and name not in flow.hours and name not in b.broken_hours:
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
            _check_condition(b, flow, path + (key, i), sub)
    if "not" in cond:
        _check_condition(b, flow, path + ("not",), cond["not"])


SCHEMA = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "properties": {"if": {"$ref": "#/$defs/condition"}, "goto": NODE_ID},
        "required": ["if", "goto"],
        "additionalProperties": False,
    },
}
CONDITION = {
    "description": "A template expression (string) or a structured test.",
    "anyOf": [
        {"type": "string"},
        {"type": "boolean"},
        {
            "type": "object",
            "properties": {
                "known_caller": {"type": "boolean"},
                "open": {"type": "string"},
                "closed": {"type": "string"},
                "holiday": {"type": "string"},
                "intent": {"type": ["string", "array"]},
                "caller": {"type": "object"},
                "vars": {"type": "object"},
                "all": {"type": "array", "items": {"$ref": "#/$defs/condition"}},
                "any": {"type": "array", "items": {"$ref": "#/$defs/condition"}},
                "not": {"$ref": "#/$defs/condition"},
            },
            "additionalProperties": False,
            "minProperties": 1,
        },
    ],
}

KIND = NodeKind("branch", BranchNode, SCHEMA, load, keys={"else": NODE_ID}, has_next=False,
                defs={"condition": CONDITION}, resolve=resolve, mermaid=("{", "}"), dot="diamond")
