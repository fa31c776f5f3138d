"""`lookup:` find the caller in the flow's directory by a column (phone by default)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..model import Flow, Node
from .kind import NODE_ID, NodeKind, RawNode


@dataclass(frozen=True)
class LookupNode(Node):
    by: str = "phone"
    value: str = "{{ call.from }}"
    found: str = ""
    not_found: str = ""

    def edges(self) -> Iterator[tuple[str, str]]:
        yield ("found", self.found)
        yield ("not found", self.not_found)


def load(b, raw: RawNode) -> LookupNode:
    v = raw.value
    return LookupNode(**raw.common, by=v.get("by", "phone"),
                      value=b.template(raw.key_path + ("value",), v.get("value", "{{ call.from }}")),
                      found=v["found"], not_found=v["not_found"])


def resolve(b, flow: Flow, node: LookupNode) -> None:
    path = ("nodes", node.id, "lookup")
    b.caller_fields.append((path + ("by",), node.by))
    b.target(flow, path + ("found",), node.found)
    b.target(flow, path + ("not_found",), node.not_found)


def check(c, node: LookupNode) -> None:
    if c.flow.directory_api is not None and node.by != "phone":
        c.at(node, f"the caller directory is an HTTP API, which finds callers by their number only: "
             f"this lookup by '{node.by}' never finds anyone (ask the API with a request node)",
             "warning", "lookup-by", sub=("lookup", "by"))


SCHEMA = {
    "type": "object",
    "properties": {"by": {"type": "string"}, "value": {"type": "string"}, "found": NODE_ID,
                   "not_found": NODE_ID},
    "required": ["found", "not_found"],
    "additionalProperties": False,
}

KIND = NodeKind("lookup", LookupNode, SCHEMA, load, has_next=False, resolve=resolve, check=check,
                mermaid=("[(", ")]"), dot="cylinder")
