"""States and outcomes: plain strings on the wire, predicates in the code, and live calls
stored by the previous version still read right."""

import json

import orjson
import pytest

from ivr.engine import events as E
from ivr.engine.runner import STATE_VERSION, Context, run
from ivr.engine.states import (
    CallbackStatus,
    Outcome,
    Wait,
    callback_is_final,
    callback_is_live,
    hung_up,
    is_listening,
    is_over,
    is_served,
    is_with_a_person,
    records_a_message,
)
from ivr.flows.loader import load_flow_text
from tests.engine.test_runner import OPEN


def test_members_serialise_to_the_strings_they_replace():
    state = {"wait": Wait.PENDING_CALLBACK, "outcome": Outcome.ABANDONED,
             "callback": {"status": CallbackStatus.CANCELLED}}
    plain = {"wait": "pending_cb", "outcome": "abandoned", "callback": {"status": "cancelled"}}
    assert orjson.dumps(state) == orjson.dumps(plain)
    assert json.dumps(state) == json.dumps(plain)
    assert f"{Wait.QUEUE}" == str(Wait.QUEUE) == "queue"
    # read back, a plain string compares equal to the member and finds the same dict entry
    assert orjson.loads(orjson.dumps(state))["wait"] == Wait.PENDING_CALLBACK
    assert {Outcome.QUEUED: "answered from a queue"}.get("queued") == "answered from a queue"


@pytest.mark.parametrize("wait, listening, with_a_person, over", [
    ("ask", True, False, False), ("confirm", True, False, False),
    ("pending_cb", True, False, False), ("callback", True, False, False),
    ("queue", False, True, False), ("dial", False, True, False),
    ("record", False, False, False), (None, False, False, False),
    ("failsafe", False, False, True), ("ended", False, False, True),
    ("end", False, False, True),  # written by state version 1
    ("no such wait", False, False, False),
])
def test_wait_predicates(wait, listening, with_a_person, over):
    assert (is_listening(wait), is_with_a_person(wait), is_over(wait)) == (listening, with_a_person, over)


def test_the_callback_reason_is_a_recording_though_the_call_waits_for_the_callback_dialogue():
    assert records_a_message({"wait": "record"})
    assert records_a_message({"wait": "callback", "cb": {"phase": "reason"}})
    assert not records_a_message({"wait": "callback", "cb": {"phase": "confirm"}})
    assert not records_a_message({"wait": "ask"}) and not records_a_message(None)


def test_outcome_and_callback_predicates():
    assert [o for o in Outcome if is_served(o)] == ["completed", "transferred", "queued", "callback",
                                                     "voicemail"]
    assert not is_served("abandoned") and not is_served(None) and is_served("queued")
    assert [s.value for s in CallbackStatus if callback_is_final(s)] == [
        "completed", "failed", "expired", "cancelled"]
    assert [s.value for s in CallbackStatus if callback_is_live(s)] == ["dialing", "answered", "connected"]
    assert not callback_is_final("pending") and not callback_is_live("gone")


FLOW = load_flow_text("""
id: s
nodes:
  menu:
    ask:
      prompt: "Press 1."
      choices: [{key: "1", label: one, goto: bye}]
      no_input: {goto: bye}
  bye:
    hangup: "Goodbye."
""", "s.yaml")


def test_a_finished_flow_and_its_hang_up_are_one_wait_and_a_flag():
    ctx = Context(now=OPEN, propagate=True)
    r = run(FLOW, None, E.CallStarted("CA1", "+14155550100", "+15005550006"), ctx)
    r = run(FLOW, r.state, E.Digits("1"), ctx)
    assert r.state["wait"] is Wait.ENDED and r.state["v"] == STATE_VERSION == 2
    assert is_over(r.state["wait"]) and not hung_up(r.state)
    r = run(FLOW, orjson.loads(orjson.dumps(r.state)), E.HangUp("completed", 12), ctx)
    assert r.state["wait"] is Wait.ENDED and hung_up(r.state)
    assert r.ended["outcome"] == "completed"


def test_live_calls_stored_by_state_version_1_are_read():
    ctx = Context(now=OPEN, propagate=True)
    started = run(FLOW, None, E.CallStarted("CA1", "+14155550100", "+15005550006"), ctx).state
    v1 = {**orjson.loads(orjson.dumps(started)), "v": 1}
    # "end": the flow had hung up; Twilio's hang-up is still to come and closes the call
    over = {**v1, "wait": "end", "node": "bye", "outcome": "completed"}
    assert is_over(over["wait"]) and not hung_up(over)
    r = run(FLOW, over, E.HangUp("completed", 12), ctx)
    assert r.ended == {"outcome": "completed", "last_node": "bye", "status": "completed", "duration_s": 12}
    assert r.state["v"] == 2 and hung_up(r.state)
    # "ended": the hang-up was applied already
    assert hung_up({**v1, "wait": "ended"})
    # a call still in its menu carries on where it was
    r = run(FLOW, v1, E.Digits("1"), ctx)
    assert r.said == "Goodbye." and r.state["wait"] is Wait.ENDED and r.state["outcome"] == "completed"
