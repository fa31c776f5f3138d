"""`sms:` send the caller a text message (a tracking link, the callback time, a survey link),
then go on to `next`. The call does not wait for it: the text goes out from a worker, and
its delivery is reported later."""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Flow, Node
from .kind import NODE_ID, NodeKind, RawNode

MAX_BODY_CHARS = 1600  # Twilio's limit for one message, in as many segments as it takes


@dataclass(frozen=True)
class SmsNode(Node):
    body: str = ""  # a template
    to: str = "{{ call.from }}"  # a template; the caller's number by default
    sender: str | None = None  # `from:`, a template; None: IVR_SMS_FROM, else the number rung
    on_error: str | None = None  # where to go when no text can be sent (default: next)

    def edges(self):
        if self.next:
            yield ("next", self.next)
        if self.on_error:
            yield ("not sent", self.on_error)


def load(b, raw: RawNode) -> SmsNode:
    kp = raw.key_path
    v = {"body": raw.value} if isinstance(raw.value, str) else raw.value
    body_path = kp + (("body",) if isinstance(raw.value, dict) else ())
    body = b.template(body_path, v["body"])
    if "{" not in body and len(body) > MAX_BODY_CHARS:
        b.error(body_path, f"a text message holds at most {MAX_BODY_CHARS} characters; this one has "
                f"{len(body)}", code="sms-too-long")
    if "to" in v and "{" not in v["to"]:
        b.dialable(kp + ("to",), v["to"], "to", sip=False)
    sender = v.get("from")
    if sender and "{" not in sender:
        b.dialable(kp + ("from",), sender, "from", sip=False)
    return SmsNode(**raw.common, body=body, to=b.template(kp + ("to",), v.get("to", "{{ call.from }}")),
                   sender=b.template(kp + ("from",), sender) if sender else None,
                   on_error=raw.body.get("on_error"))


def resolve(b, flow: Flow, node: SmsNode) -> None:
    b.target(flow, ("nodes", node.id, "on_error"), node.on_error)


def check(c, node: SmsNode) -> None:
    if not node.next:
        c.at(node, f"the call would stop abruptly after '{node.id}' sends its text: add 'next'",
             code="dead-end")


def label(flow: Flow, node: SmsNode) -> str:
    return "to the caller" if node.to == "{{ call.from }}" else f"to {node.to}"


SCHEMA = {"anyOf": [
    {"type": "string", "description": "The text's body, a template."},
    {
        "type": "object",
        "properties": {
            "body": {"type": "string", "description": "The text, a template."},
            "to": {"type": "string", "description": "Who gets it, a template (default: the caller's "
                                                    "number, {{ call.from }})."},
            "from": {"type": "string", "description": "The sending number (default: IVR_SMS_FROM, else "
                                                      "the number the caller rang)."},
        },
        "required": ["body"],
        "additionalProperties": False,
    },
]}

KIND = NodeKind("sms", SmsNode, SCHEMA, load, keys={"on_error": NODE_ID}, resolve=resolve, check=check,
                mermaid=("[/", "/]"), dot="note", label=label)
