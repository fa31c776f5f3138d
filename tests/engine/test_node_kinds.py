"""Node kinds come from two tables, the flow language's and the engine's: a kind registered
in both is loaded, checked, drawn and run with no other change."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ivr.engine import actions as A
from ivr.engine import events as E
from ivr.engine import kind as engine_kind
from ivr.engine import nodes as engine_nodes
from ivr.engine.runner import Context, run
from ivr.engine.states import Outcome, Wait
from ivr.errors import FlowError
from ivr.flows import diagram
from ivr.flows import nodes as flow_nodes
from ivr.flows.loader import load_flow_text, schema
from ivr.flows.model import Node, Prompt
from ivr.flows.nodes.kind import PROMPT, NodeKind
from tests.engine.test_runner import OPEN


def test_both_layers_know_the_same_kinds_in_the_same_order():
    assert list(flow_nodes.KINDS) == list(engine_nodes.KINDS)
    assert all(name == kind.name for name, kind in flow_nodes.KINDS.items())


# A kind of node neither table has: "rate us from 1 to 5", kept in vars.rating.


@dataclass(frozen=True)
class RatingNode(Node):
    prompt: Prompt = ()


def _load(b, raw):
    return RatingNode(**raw.common, prompt=b.prompt(raw.key_path, raw.value))


def _check(c, node):
    if not node.next:
        c.at(node, f"'{node.id}' asks for a rating but has no 'next'", code="dead-end")


RATING = NodeKind("rating", RatingNode, PROMPT, _load, check=_check, waits=True,
                  mermaid=("[/", "\\]"), dot="trapezium", label=lambda flow, node: "1 to 5")


def _enter(run, node):
    run.actions.append(A.Gather(prompts=tuple(run.speak(node.prompt)), input=("dtmf",), num_digits=1))
    run.state["wait"] = Wait.ASK
    run.step(node, "enter", action="gather")
    return engine_kind.STOP


def _rated(run, node, event):
    run.state["vars"]["rating"] = event.digits if isinstance(event, E.Digits) else None
    run.step(node, "rated", digits=getattr(event, "digits", None))
    run.goto(node.next)


def _repeat(run, node, wait):
    run.actions.append(A.Gather(prompts=tuple(run.speak(node.prompt)), input=("dtmf",), num_digits=1))


RATING_RUN = engine_kind.NodeKind(_enter, events={Wait.ASK: {E.Digits: _rated, E.NoInput: _rated}},
                                  repeat=_repeat)

FLOW = """\
nodes:
  rate:
    rating: "How did we do? Press 1 to 5."
    next: bye
  bye:
    hangup: "Thank you."
"""


@pytest.fixture
def rating_kind(monkeypatch):
    monkeypatch.setitem(flow_nodes.KINDS, "rating", RATING)
    monkeypatch.setitem(engine_nodes.KINDS, "rating", RATING_RUN)


def test_a_new_kind_is_loaded_checked_drawn_and_run(rating_kind):
    flow = load_flow_text(FLOW, "rate.yaml")
    node = flow.nodes["rate"]
    assert isinstance(node, RatingNode) and node.line == 2 and node.next == "bye"
    assert "node_rating" in schema()["$defs"]

    assert 'rate[/"rate<br/>rating: 1 to 5"\\]' in diagram.mermaid(flow)
    assert '"rate" [shape=trapezium, label="rate\\nrating: 1 to 5"];' in diagram.dot(flow)

    ctx = Context(now=OPEN, propagate=True)
    r = run(flow, None, E.CallStarted("CA1", "+14155550100", "+15005550006"), ctx)
    asked = A.Say("How did we do? Press 1 to 5.", "Polly.Joanna-Neural", "en-US")  # en-US's voice
    assert r.actions == [A.Gather(prompts=(asked,), input=("dtmf",), num_digits=1)]
    late = run(flow, r.state, E.QueueWait(1, 30), ctx)  # an event out of place: asked again
    assert late.actions == r.actions and late.steps[0]["event"] == "unexpected"
    r = run(flow, late.state, E.Digits("4"), ctx)
    assert r.state["vars"]["rating"] == "4" and r.said == "Thank you."
    assert r.state["wait"] is Wait.ENDED and r.state["outcome"] is Outcome.COMPLETED
    assert [s["event"] for s in r.steps] == ["rated", "enter"]


def test_a_new_kind_is_held_to_its_schema_and_its_checks(rating_kind):
    with pytest.raises(FlowError) as bad_shape:
        load_flow_text(FLOW.replace('"How did we do? Press 1 to 5."', "{say: Hello, colour: red}"),
                       "rate.yaml")
    assert [str(p) for p in bad_shape.value.errors] == [
        "rate.yaml:3:26: error: unknown key 'colour' in node 'rate' (rating); allowed here: say"]
    with pytest.raises(FlowError) as dead_end:
        load_flow_text(FLOW.replace("    next: bye\n", ""), "rate.yaml")
    errors = [str(p) for p in dead_end.value.errors]
    assert "rate.yaml:2:3: error: 'rate' asks for a rating but has no 'next'" in errors


def test_a_kind_in_no_table_is_not_a_kind():
    with pytest.raises(FlowError) as info:
        load_flow_text(FLOW, "rate.yaml")
    assert "node 'rate' does not say what it does: give it one of say, ask, branch, lookup, request, set, " \
           "sms, queue, transfer, record, hangup, goto_flow" in str(info.value)
