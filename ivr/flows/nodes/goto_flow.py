"""`goto_flow:` go on in another flow, at its start or at a node of it."""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Node
from .kind import NODE_ID, NodeKind, RawNode


@dataclass(frozen=True)
class GotoFlowNode(Node):
    flow: str = ""
    node: str | None = None


def load(b, raw: RawNode) -> GotoFlowNode:
    v = {"flow": raw.value} if isinstance(raw.value, str) else raw.value
    return GotoFlowNode(**raw.common, flow=v["flow"], node=v.get("node"))


SCHEMA = {"anyOf": [
    {"type": "string"},
    {"type": "object", "properties": {"flow": {"type": "string"}, "node": NODE_ID}, "required": ["flow"],
     "additionalProperties": False},
]}

KIND = NodeKind("goto_flow", GotoFlowNode, SCHEMA, load, has_next=False, leaves_flow=True,
                destination=lambda node: f"flow {node.flow}", mermaid=(">", "]"), dot="cds")
