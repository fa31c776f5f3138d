"""`record:` record a message (voicemail), then go on to `next`."""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Node, Prompt
from .kind import PROMPT, NodeKind, RawNode


@dataclass(frozen=True)
class RecordNode(Node):
    prompt: Prompt = ()
    max_length: int = 120
    finish_on_key: str = "#"
    beep: bool = True
    timeout: int = 5


def load(b, raw: RawNode) -> RecordNode:
    v = raw.value or {}
    return RecordNode(**raw.common, prompt=b.prompt(raw.key_path + ("prompt",), v.get("prompt")),
                      max_length=v.get("max_length", 120), finish_on_key=v.get("finish_on_key", "#"),
                      beep=v.get("beep", True), timeout=v.get("timeout", 5))


def check(c, node: RecordNode) -> None:
    if not node.next:
        c.at(node, f"after recording in '{node.id}' the call ends with no goodbye: add 'next'",
             "warning", "dead-end")
    if not node.prompt:
        c.at(node, f"'{node.id}' records without a prompt: callers hear only a beep and may not "
             "know they are being recorded", "warning", "silence")


SCHEMA = {
    "type": "object",
    "properties": {
        "prompt": PROMPT,
        "max_length": {"type": "integer", "minimum": 1, "maximum": 14400},
        "finish_on_key": {"type": "string"},
        "beep": {"type": "boolean"},
        "timeout": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}

KIND = NodeKind("record", RecordNode, SCHEMA, load, check=check, destination=lambda node: "voicemail",
                waits=True, mermaid=("[(", ")]"), dot="cylinder")
