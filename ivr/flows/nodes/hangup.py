"""`hangup:` say goodbye (optional) and end the call."""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Node, Prompt
from .kind import PROMPT, NodeKind, RawNode


@dataclass(frozen=True)
class HangupNode(Node):
    prompt: Prompt = ()


def load(b, raw: RawNode) -> HangupNode:
    return HangupNode(**raw.common, prompt=b.prompt(raw.key_path, raw.value))


SCHEMA = {"anyOf": [{"type": "boolean"}, {"type": "null"}, PROMPT]}

KIND = NodeKind("hangup", HangupNode, SCHEMA, load, has_next=False, leaves_flow=True,
                mermaid=("((", "))"), dot="doublecircle")
