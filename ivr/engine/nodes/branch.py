"""`branch:` the first case whose condition holds decides the way on."""

from __future__ import annotations

from typing import Any

from jinja2 import UndefinedError

from ivr.errors import FlowRuntimeError
from ivr.flows import templates
from ivr.flows.nodes.branch import BranchNode

from ..kind import NodeKind


def enter(run, node: BranchNode):
    for i, case in enumerate(node.cases):
        if holds(run, case.condition):
            run.step(node, "enter", detail={"case": i + 1, "goto": case.goto})
            return case.goto
    run.step(node, "enter", detail={"case": "else", "goto": node.otherwise})
    return node.otherwise


def holds(run, cond: Any) -> bool:
    """Whether a condition (an expression, a bool or a structured test) holds on this call."""
    if isinstance(cond, bool):
        return cond
    if isinstance(cond, str):
        try:
            return bool(templates.evaluate(cond, run.context()))
        except (TypeError, UndefinedError):  # e.g. `vars.tries > 2` before vars.tries is set
            return False
    s = run.state
    for key, want in cond.items():
        if key == "known_caller":
            ok = bool(s["caller"].get("known")) == bool(want)
        elif key in ("open", "closed"):
            is_open = run.flow.hours[want].is_open(run.ctx.now)
            ok = is_open if key == "open" else not is_open
        elif key == "holiday":
            ok = run.flow.hours[want].holiday(run.ctx.now) is not None
        elif key == "intent":
            ok = s["intent"] in ([want] if isinstance(want, str) else want)
        elif key in ("caller", "vars"):
            data = s["caller"] if key == "caller" else s["vars"]
            ok = all(_equals(data.get(k), v) for k, v in want.items())
        elif key == "all":
            ok = all(holds(run, c) for c in want)
        elif key == "any":
            ok = any(holds(run, c) for c in want)
        elif key == "not":
            ok = not holds(run, want)
        else:
            raise FlowRuntimeError(f"unknown condition '{key}'")
        if not ok:
            return False
    return True


def _equals(have: Any, want: Any) -> bool:
    if isinstance(want, list):
        return any(_equals(have, w) for w in want)
    if isinstance(want, bool) or have is None:
        return have == want
    return str(have).strip().lower() == str(want).strip().lower()


KIND = NodeKind(enter)
