"""`transfer:` dial a person (a number or a sip: address), with a whisper for them first."""

from __future__ import annotations

from dataclasses import dataclass

from ivr.i18n import sentences as S

from ..model import Flow, Node, Prompt
from .kind import PROMPT, NodeKind, RawNode


@dataclass(frozen=True)
class TransferNode(Node):
    to: str = ""
    say: Prompt = ()
    whisper: str | None = None
    timeout: int = 30
    caller_id: str | None = None


def load(b, raw: RawNode) -> TransferNode:
    kp = raw.key_path
    v = {"to": raw.value} if isinstance(raw.value, str) else raw.value
    whisper = v.get("whisper")
    if "{" not in v["to"]:
        b.dialable(kp + (("to",) if isinstance(raw.value, dict) else ()), v["to"], "transfer to")
    if v.get("caller_id"):
        b.dialable(kp + ("caller_id",), v["caller_id"], "caller_id", sip=False)
    return TransferNode(**raw.common, to=b.template(kp + ("to",), v["to"]),
                        say=b.prompt(kp + ("say",), v.get("say")),
                        whisper=b.template(kp + ("whisper",), whisper) if whisper else None,
                        timeout=v.get("timeout", 30), caller_id=v.get("caller_id"))


def check(c, node: TransferNode) -> None:
    if not node.next:
        c.at(node, f"if nobody answers the transfer from '{node.id}', the call just ends: add "
             "'next' (e.g. voicemail or a queue)", "warning", "dead-end")


def speaks(flow: Flow, node: TransferNode):
    """The whisper the agent hears, unless the node or the flow writes its own, and the
    apology when nobody answers and the node has no `next`."""
    if not (node.whisper or flow.whisper):
        for sentence in (S.WHISPER_FROM, S.WHISPER_KNOWN, S.WHISPER_CUSTOMER, S.WHISPER_UNKNOWN,
                         S.WHISPER_WITHHELD, S.WHISPER_ABOUT, S.WHISPER_VALUE, S.PHONE_DIGITS,
                         S.FROM_ABROAD):
            yield sentence, ("whisper",)
    if not node.next:
        yield S.NOBODY_AVAILABLE, ()


def label(flow: Flow, node: TransferNode) -> str:
    return node.to


SCHEMA = {"anyOf": [
    {"type": "string"},
    {
        "type": "object",
        "properties": {
            "to": {"type": "string"},
            "say": PROMPT,
            "whisper": {"type": "string"},
            "timeout": {"type": "integer", "minimum": 5, "maximum": 600},
            "caller_id": {"type": "string"},
        },
        "required": ["to"],
        "additionalProperties": False,
    },
]}

KIND = NodeKind("transfer", TransferNode, SCHEMA, load, check=check, speaks=speaks,
                destination=lambda node: f"transfer to {node.to}", reaches_a_person=True, waits=True,
                mermaid=("[[", "]]"), dot="box3d", label=label)
