"""`hangup:` goodbye, and the call ends; served in the IVR unless it ended otherwise."""

from __future__ import annotations

from ivr.flows.nodes.hangup import HangupNode

from .. import actions as A
from ..kind import STOP, NodeKind
from ..states import Outcome, Wait


def enter(run, node: HangupNode):
    said = run.speak(node.prompt)
    run.actions += said + [A.Hangup()]
    run.state["wait"] = Wait.ENDED
    run.state["outcome"] = run.state.get("outcome") or Outcome.COMPLETED
    run.step(node, "enter", said, action="hangup")
    return STOP


KIND = NodeKind(enter)
