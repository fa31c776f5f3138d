"""`sms:` a text message goes to the caller (or another number); the call goes straight on.

The engine decides who gets what and asks the shell to send it (actions.SendSms); a number
that cannot get texts (withheld, not a number, on the opt-out list) sends nothing and takes
the node's `on_error`, else `next`. Either way the step log says so.
"""

from __future__ import annotations

from ivr.flows import templates
from ivr.flows.nodes.sms import SmsNode
from ivr.phone import normalize

from .. import actions as A
from ..kind import NodeKind

# The GSM 03.38 characters a text can use and still count 160 per segment (153 when split);
# anything else (most accents, emoji) makes the whole text UCS-2: 70 per segment, 67 split.
GSM = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
          "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€")


def segments(body: str) -> int:
    """How many messages Twilio sends (and bills) for this text."""
    single, split = (160, 153) if set(body) <= GSM else (70, 67)
    n = len(body)
    return 1 if n <= single else -(-n // split)


def enter(run, node: SmsNode):
    ctx = run.context()
    raw = run.render(node.to)
    to = normalize(raw, run.ctx.region) if raw else None
    body = templates.render(node.body, ctx, squash=False).strip()
    why = None
    if not to:
        why = "no_number"  # withheld, or not a number
    elif not body:
        why = "empty"
    elif run.ctx.sms_opted_out is not None and run.ctx.sms_opted_out(to):
        why = "opted_out"
    if why:
        run.step(node, "enter", action="sms:not_sent", detail={"to": to or raw, "why": why})
        return node.on_error or node.next
    n = segments(body)
    step = run.step(node, "enter", action="sms", detail={"to": to, "chars": len(body), "segments": n})
    sender = normalize(run.render(node.sender), run.ctx.region) if node.sender else None
    run.actions.append(A.SendSms(str(step["seq"]), node.id, to, body, sender, run.state.get("to") or None, n))
    return node.next


KIND = NodeKind(enter)
