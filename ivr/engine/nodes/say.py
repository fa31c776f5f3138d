"""`say:` the prompt is heard, and the call goes on."""

from __future__ import annotations

from ivr.flows.nodes.say import SayNode

from ..kind import NodeKind


def enter(run, node: SayNode):
    said = run.speak(node.prompt)
    run.actions += said
    run.step(node, "enter", said)
    return node.next


KIND = NodeKind(enter)
