"""`set:` the call's variables take their values, each template seeing the ones before."""

from __future__ import annotations

from ivr.flows import templates
from ivr.flows.nodes.set import SetNode

from ..kind import NodeKind


def enter(run, node: SetNode):
    ctx = run.context()
    changed = {}
    for name, value in node.values:
        changed[name] = (templates.native(templates.render(value, ctx))
                         if isinstance(value, str) else value)
        run.state["vars"][name] = changed[name]
        ctx = run.context()
    run.step(node, "enter", detail={"set": changed})
    return node.next


KIND = NodeKind(enter)
