"""`goto_flow:` the call goes on in another loaded flow."""

from __future__ import annotations

from ivr.errors import FlowRuntimeError
from ivr.flows.nodes.goto_flow import GotoFlowNode

from ..kind import NodeKind


def enter(run, node: GotoFlowNode):
    target = run.ctx.flows.get(node.flow)
    if target is None:
        raise FlowRuntimeError(f"flow '{node.flow}' is not loaded")
    run.step(node, "enter", detail={"flow": node.flow, "node": node.node or target.start})
    run.flow = target
    run.state["flow"] = target.id
    return node.node or target.start


KIND = NodeKind(enter)
