"""`lookup:` the caller is looked up in the directory; found or not decides the way on."""

from __future__ import annotations

from ivr.flows.nodes.lookup import LookupNode

from ..kind import NodeKind


def enter(run, node: LookupNode):
    value = run.render(node.value)
    found = run.ctx.lookup(node.by, value) if (run.ctx.lookup and value) else None
    if found:
        run.state["caller"] = found
    run.step(node, "enter", detail={"by": node.by, "found": bool(found)})
    return node.found if found else node.not_found


KIND = NodeKind(enter)
