"""`set:` give the call's variables values (templates allowed), then go on to `next`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..model import Node
from .kind import NodeKind, RawNode


@dataclass(frozen=True)
class SetNode(Node):
    values: tuple[tuple[str, Any], ...] = ()


def load(b, raw: RawNode) -> SetNode:
    for name, value in raw.value.items():
        if isinstance(value, str):
            b.template(raw.key_path + (name,), value)
    return SetNode(**raw.common, values=tuple(raw.value.items()))


def check(c, node: SetNode) -> None:
    if not node.next:
        c.at(node, f"the call would stop abruptly after '{node.id}': add 'next'", code="dead-end")


SCHEMA = {"type": "object", "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}, "minProperties": 1}

KIND = NodeKind("set", SetNode, SCHEMA, load, check=check, sets_vars=True, goes_straight_on=True,
                mermaid=("[/", "/]"), dot="parallelogram")
