"""The `sms:` node in the pure engine and the checker: who gets what, what is logged, and
the numbers that cannot get a text. Sending is the shell's (tests/web/test_sms.py)."""

from __future__ import annotations

import pytest

from ivr.engine import actions as A
from ivr.engine import events as E
from ivr.engine.nodes.sms import segments
from ivr.engine.runner import Context, run
from ivr.errors import FlowError
from ivr.flows.loader import load_flow_text
from tests.engine.test_runner import OPEN

FLOW = """
id: texts
numbers: ["+15005550006"]
nodes:
  text:
    sms: "Hi {{ caller.first_name }}, your code is {{ vars.code | default('1234') }}."
    next: bye
    on_error: sorry
  bye:
    hangup: "Sent. Goodbye."
  sorry:
    hangup: "Sorry, no text. Goodbye."
"""


def call(flow_text: str = FLOW, number: str | None = "+14155550100", opted_out=None):
    flow = load_flow_text(flow_text, "texts.yaml")
    ctx = Context(now=OPEN, sms_opted_out=opted_out)
    return run(flow, None, E.CallStarted("CA1", number, "+15005550006", {"first_name": "Ada"}), ctx)


def test_a_text_goes_to_the_caller_and_the_call_goes_straight_on():
    r = call()
    text = r.actions[0]
    assert text == A.SendSms("1", "text", "+14155550100", "Hi Ada, your code is 1234.", None,
                             "+15005550006", 1)
    assert r.said == "Sent. Goodbye."
    assert r.steps[0]["action"] == "sms" and r.steps[0]["detail"] == {"to": "+14155550100", "chars": 26,
                                                                     "segments": 1}


@pytest.mark.parametrize(("number", "opted_out", "why"), [
    (None, None, "no_number"),  # a withheld number
    ("+14155550100", lambda n: n == "+14155550100", "opted_out"),
])
def test_no_text_for_a_number_that_cannot_have_one(number, opted_out, why):
    r = call(number=number, opted_out=opted_out)
    assert not [a for a in r.actions if isinstance(a, A.SendSms)]
    assert r.said == "Sorry, no text. Goodbye."
    assert r.steps[0]["action"] == "sms:not_sent" and r.steps[0]["detail"]["why"] == why


def test_to_and_from_can_be_given():
    flow = load_flow_text("""
nodes:
  start:
    set: {mobile: "(415) 555-0177"}
    next: text
  text:
    sms:
      to: "{{ vars.mobile }}"
      from: "+15005550009"
      body: "Your code is 1234."
    next: bye
  bye:
    hangup: "Goodbye."
""", "texts.yaml")
    r = run(flow, None, E.CallStarted("CA1", None, "+15005550006", {}), Context(now=OPEN))
    [sent] = [a for a in r.actions if isinstance(a, A.SendSms)]
    assert sent.to == "+14155550177" and sent.sender == "+15005550009"


def test_segments_count_as_twilio_bills_them():
    assert segments("a" * 160) == 1 and segments("a" * 161) == 2 and segments("a" * 306) == 2
    assert segments("é" * 160) == 1  # é is in the GSM alphabet
    assert segments("ê" * 70) == 1 and segments("ê" * 71) == 2  # ê is not: 70 per text


def test_the_checker_knows_a_text_needs_next_a_number_and_a_limit():
    with pytest.raises(FlowError) as info:
        load_flow_text(FLOW.replace("    next: bye\n", ""), "texts.yaml")
    assert "the call would stop abruptly after 'text' sends its text: add 'next'" in str(info.value)
    with pytest.raises(FlowError) as info:
        load_flow_text(FLOW.replace('    sms: "Hi', '    sms:\n      to: "0800 TEXT ME"\n      body: "Hi'),
                       "texts.yaml")
    assert "to '0800 TEXT ME' is not a phone number" in str(info.value)
    with pytest.raises(FlowError) as info:
        load_flow_text(FLOW.replace('    sms: "Hi {{ caller.first_name }}, your code is {{ vars.code | '
                                    "default('1234') }}.\"", f'    sms: "{"x" * 1601}"'), "texts.yaml")
    assert "a text message holds at most 1600 characters; this one has 1601" in str(info.value)
