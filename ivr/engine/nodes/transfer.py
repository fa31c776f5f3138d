"""`transfer:` a person is dialled, and hears who is calling and why before the caller."""

from __future__ import annotations

from ivr.errors import FlowRuntimeError
from ivr.flows.nodes.transfer import TransferNode
from ivr.i18n import sentences as S
from ivr.phone import normalize

from .. import actions as A
from .. import events as E
from .. import survey
from ..kind import STOP, NodeKind
from ..states import Outcome, Wait


def enter(run, node: TransferNode):
    said = run.speak(node.say)
    spoken = whisper(run, node)
    to = dial_target(run, node)
    run.actions += said + [A.Dial(to, node.timeout, node.caller_id, spoken)]
    run.state["wait"] = Wait.DIAL
    run.state["whisper"] = spoken
    run.step(node, "enter", said, action=f"dial:{to}", detail={"whisper": spoken})
    return STOP


def dial_target(run, node: TransferNode) -> str:
    """The number or SIP address a transfer dials, from its template. A value that is
    neither (`{{ caller.account_manager }}` for a caller without one) fails the step
    safely: Twilio would dial nothing and drop the caller."""
    to = run.render(node.to).strip()
    if to.lower().startswith("sip:"):
        return "sip:" + to[4:]
    number = normalize(to, run.ctx.region)
    if number is None:
        raise FlowRuntimeError(f"node '{node.id}' transfers to {to!r}, which is not a phone "
                               "number or a sip: address")
    return number


def whisper(run, node: TransferNode) -> str:
    """What the agent hears before the caller is connected, so nobody repeats themselves."""
    template = node.whisper or run.flow.whisper
    if template:
        return run.render(template)
    s = run.state
    c = s["caller"]
    lang = run.lang
    name = c.get("full_name") or c.get("first_name")
    if c.get("known") and name and c.get("customer_id"):
        who = lang.say(S.WHISPER_CUSTOMER, name=name, customer=" ".join(str(c["customer_id"])))
    elif c.get("known"):
        who = name or lang.say(S.WHISPER_KNOWN)
    elif s["from"]:
        who = lang.say(S.WHISPER_UNKNOWN, number=lang.phone(s["from"], run.region) or s["from"])
    else:
        who = lang.say(S.WHISPER_WITHHELD)
    parts = [lang.say(S.WHISPER_FROM, caller=who)]
    if s.get("intent"):
        parts.append(lang.say(S.WHISPER_ABOUT, intent=s["intent"].replace("_", " ")))
    for k, v in s["vars"].items():
        if v not in (None, "") and not isinstance(v, (dict, list)):  # an API's whole answer is not read out
            parts.append(lang.say(S.WHISPER_VALUE, name=k.replace("_", " "), value=v))
    return " ".join(parts)


def on_ended(run, node: TransferNode, event: E.TransferEnded) -> None:
    run.step(node, "transfer_ended", detail={"status": event.status, "duration": event.duration})
    if survey.answered(event.status):
        # the person hung up and the caller is still on the line: the survey, or goodbye
        survey.after_person(run, node, Outcome.TRANSFERRED)
    elif node.next:
        run.goto(node.next)
    else:
        run.actions += [run.say(S.NOBODY_AVAILABLE), A.Hangup()]
        run.state["wait"] = Wait.ENDED
        run.state["outcome"] = Outcome.FAILED


def repeat(run, node: TransferNode, wait: Wait) -> None:
    run.actions.append(A.Dial(run.render(node.to), node.timeout, node.caller_id,
                              run.state.get("whisper")))


KIND = NodeKind(enter, events={Wait.DIAL: {E.TransferEnded: on_ended}}, repeat=repeat)
