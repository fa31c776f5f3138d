"""`record:` the caller leaves a message; the call goes on when it is recorded."""

from __future__ import annotations

from ivr.flows.nodes.record import RecordNode

from .. import actions as A
from .. import events as E
from ..kind import STOP, NodeKind
from ..states import Outcome, Wait


def enter(run, node: RecordNode):
    said = run.speak(node.prompt)
    run.actions += said + [A.Record(node.max_length, node.finish_on_key, node.beep, node.timeout)]
    run.state["wait"] = Wait.RECORD
    run.step(node, "enter", said, action="record")
    return STOP


def on_recording(run, node: RecordNode, event: E.RecordingDone) -> None:
    run.state["outcome"] = Outcome.VOICEMAIL
    run.step(node, "recording", digits=event.digits, action="recorded",
             detail={"url": event.url, "duration": event.duration})
    run.goto(node.next)


KIND = NodeKind(enter, events={Wait.RECORD: {E.RecordingDone: on_recording}})
