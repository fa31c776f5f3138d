"""The pure engine: (flow, state, event) -> (actions, new state, step records)."""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime

import pytest

from ivr.engine import actions as A
from ivr.engine import events as E
from ivr.engine.runner import MAX_HOPS, Context, Match, run
from ivr.errors import FlowRuntimeError
from ivr.flows.loader import load_flow, load_flow_text
from speech.intents import IntentSpec, KeywordMatcher
from tests.conftest import FIXTURES, FLOWS

OPEN = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 in New York
CLOSED = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)  # Monday 22:00 in New York
ADA = {"known": True, "first_name": "Ada", "last_name": "Lovelace", "full_name": "Ada Lovelace",
       "customer_id": "C-1001", "plan": "premium", "phone": "+14155550100"}


@pytest.fixture(scope="module")
def support():
    return load_flow(FLOWS / "support.yaml")


@pytest.fixture(scope="module")
def all_kinds():
    return load_flow(FIXTURES / "flows" / "good" / "all_kinds.yaml")


def keyword_match(flow, text):
    specs = {n: IntentSpec(phrases=tuple(i.phrases), keywords=tuple(i.keywords))
             for n, i in flow.intents.items()}
    return KeywordMatcher(specs).match(text)


def ctx(now=OPEN, **kw):
    kw.setdefault("match", keyword_match)
    kw.setdefault("propagate", True)  # a bug fails the test; the fail-safe tests turn it off
    return Context(now=now, **kw)


def start(flow, caller=None, now=OPEN, sid="CA1", **kw):
    event = E.CallStarted(sid, (caller or {}).get("phone", "+12025550199"), "+15005550006",
                          caller or {"known": False})
    return run(flow, None, event, ctx(now, **kw))


def test_known_caller_is_greeted_by_name_and_asked_what_they_need(support):
    r = start(support, ADA)
    assert r.said.startswith("Hi Ada, thanks for calling Northwind Fibre.")
    gather = r.actions[-1]
    assert isinstance(gather, A.Gather) and set(gather.input) == {"dtmf", "speech"}
    assert "For billing, press 1." in r.said and "For anything else, press 0." in r.said
    assert gather.num_digits == 1  # single-key menu: no wait for the timeout after a press
    assert "billing" in gather.hints
    assert r.state["node"] == "main_menu" and r.state["wait"] == "ask"


def test_unknown_caller_is_not_greeted_by_name(support):
    r = start(support)
    assert r.said.startswith("Thanks for calling Northwind Fibre.")


def test_after_hours_goes_to_voicemail_with_next_opening(support):
    r = start(support, now=CLOSED)
    assert "We're closed right now. We open again tomorrow at 8 AM." in r.said
    assert isinstance(r.actions[-1], A.Record)


def test_keypad_routes_to_queue(support):
    r = start(support)
    r2 = run(support, r.state, E.Digits("3"), ctx())
    assert r2.actions[-1] == A.Enqueue("technical")
    assert r2.state["node"] == "tech_queue" and r2.state["wait"] == "queue"
    step = r2.steps[0]
    assert step["event"] == "digits" and step["digits"] == "3" and step["node"] == "main_menu"


def test_speech_skips_the_menu(support):
    r = start(support, ADA)
    r2 = run(support, r.state, E.Speech("um I think I was charged twice", 0.82), ctx())
    assert r2.actions[-1] == A.Enqueue("billing")
    assert r2.state["intent"] == "billing"
    logged = r2.steps[0]
    assert logged["speech"] == "um I think I was charged twice" and logged["confidence"] == 0.82
    assert logged["intent"] == "billing"


def test_silence_reprompts_then_reaches_a_person(support):
    r = start(support)
    r = run(support, r.state, E.NoInput(), ctx())
    assert r.said.startswith("Sorry, I didn't hear anything.") and isinstance(r.actions[-1], A.Gather)
    r = run(support, r.state, E.NoInput(), ctx())
    assert r.actions[-1] == A.Enqueue("general")  # settings.escape


def test_no_match_apologises_with_the_flow_text_then_escapes(support):
    r = start(support)
    r = run(support, r.state, E.Speech("bananas", 0.9), ctx())
    assert "You can also use the keypad" in r.said and r.steps[0]["event"] == "no_match"
    r = run(support, r.state, E.Digits("9"), ctx())
    assert r.steps[0]["event"] == "no_match"
    r = run(support, r.state, E.Speech("bananas", 0.9), ctx())
    assert r.actions[-1] == A.Enqueue("general")


def test_a_menu_plays_three_times_in_all_then_sends_the_caller_on(support):
    """Two wrong keys and a silence are three prompts heard: the fourth is a person, not the
    menu again (silence and wrong answers share one budget)."""
    r = start(support)
    prompts = 1
    for event in (E.Digits("9"), E.Digits("8")):
        r = run(support, r.state, event, ctx())
        assert isinstance(r.actions[-1], A.Gather)
        prompts += 1
    r = run(support, r.state, E.NoInput(), ctx())
    assert prompts == 3 and r.actions[-1] == A.Enqueue("general")  # settings.escape
    assert r.steps[0]["event"] == "no_input" and r.steps[0]["detail"]["gave_up"] is True


BUDGET = """
settings: {escape: person%s}
nodes:
  menu:
    ask:
      prompt: Press 1 for sales.
      choices: [{key: 1, label: sales, goto: person}]%s
  person: {transfer: "+15005550011", next: bye}
  bye: {hangup: Goodbye.}
"""


@pytest.mark.parametrize("settings,node,prompts", [
    ("", "", 3),
    (", menu_attempts: 2", "", 2),
    (", menu_attempts: 2", "\n      attempts: 5", 5),
    ("", "\n      no_input: {retries: 0}", 1),  # a kind's own retries still send on sooner
])
def test_a_menus_attempts_are_set_in_the_flow(settings, node, prompts):
    flow = load_flow_text(BUDGET % (settings, node), "budget.yaml")
    r = start(flow)
    heard = 1
    while True:
        r = run(flow, r.state, E.NoInput(), ctx())
        if not isinstance(r.actions[-1], A.Gather):
            break
        heard += 1
    assert heard == prompts and r.state["node"] == "person"


def test_a_wrong_key_is_not_answered_with_advice_to_use_the_keypad(support):
    r = start(support)
    r = run(support, r.state, E.Digits("9"), ctx())
    assert r.said.startswith("Sorry, 9 isn't one of the choices.")
    assert "keypad" not in r.said and isinstance(r.actions[-1], A.Gather)


SORRY = """
settings: {escape: person}
nodes:
  menu:
    ask:
      prompt: What can we do for you?
      choices:
        - {key: 1, label: sales, intent: sales, goto: person}
      no_match: {goto: person}
  person: {transfer: "+15005550011", next: bye}
  bye: {hangup: Goodbye.}
intents:
  sales: [buy something]
"""


@pytest.mark.parametrize("language,pressed,spoken", [
    ("en-US", "Sorry, 7 isn't one of the choices.", "Sorry, I didn't understand that."),
    ("fr-FR", "Désolé, la touche 7 ne correspond à aucun choix.", "Désolé, je n'ai pas compris."),
])
def test_the_default_no_match_apology_fits_how_the_caller_answered(language, pressed, spoken):
    flow = load_flow_text(f"language: {language}\n" + SORRY, "sorry.yaml")
    r = start(flow)
    key = run(flow, r.state, E.Digits("7"), ctx())
    assert key.said.startswith(pressed)
    words = run(flow, r.state, E.Speech("the weather", 0.9), ctx())
    assert words.said.startswith(spoken)


def test_a_flow_gives_its_own_words_for_a_wrong_key_and_for_speech_not_understood():
    flow = load_flow_text(SORRY.replace(
        "no_match: {goto: person}",
        "no_match: {goto: person, say: Sorry., pressed: No such key., "
        "spoken: \"Sorry, I missed that. You can also press a key.\"}"), "sorry.yaml")
    r = start(flow)
    assert run(flow, r.state, E.Digits("7"), ctx()).said.startswith("No such key.")
    spoken = run(flow, r.state, E.Speech("the weather", 0.9), ctx())
    assert spoken.said.startswith("Sorry, I missed that. You can also press a key.")


def test_low_confidence_is_confirmed_before_routing(all_kinds):
    r = run(all_kinds, None, E.CallStarted("CA9", "+14155550100", None, ADA), ctx())
    assert r.state["node"] == "menu"

    def unsure(flow, text):
        return Match("billing", 0.3)

    r2 = run(all_kinds, r.state, E.Speech("something about bills", 0.7), ctx(match=unsure))
    assert "I think you're calling about billing. Is that right?" in r2.said
    assert r2.state["wait"] == "confirm"
    yes = run(all_kinds, r2.state, E.Speech("yes please", 0.9), ctx(match=unsure))
    assert yes.actions[-1] == A.Enqueue("billing")
    no = run(all_kinds, r2.state, E.Digits("2"), ctx(match=unsure))
    assert isinstance(no.actions[-1], A.Gather) and no.state["node"] == "menu"


def test_state_is_small_json_and_input_state_is_not_mutated(support):
    r = start(support, ADA)
    before = copy.deepcopy(r.state)
    run(support, r.state, E.Digits("1"), ctx())
    assert r.state == before
    assert len(json.dumps(r.state)) < 1500


def test_free_answer_is_saved_and_lookup_finds_the_caller(all_kinds):
    r = run(all_kinds, None, E.CallStarted("CA2", None, None, {"known": False}), ctx())
    assert r.state["node"] == "account"
    found = {"known": True, "first_name": "Grace", "customer_id": "C-1002", "full_name": "Grace Hopper"}
    calls = []

    def lookup(field, value):
        calls.append((field, value))
        return found if value == "C-1002" else None

    r2 = run(all_kinds, r.state, E.Digits("1002"), ctx(lookup=lookup))
    assert calls == [("customer_id", "C-1002")]
    assert r2.state["vars"]["account"] == "1002"
    assert r2.state["caller"]["first_name"] == "Grace"
    assert "Hello Grace. What can I do for you?" in r2.said


def test_branch_on_caller_field_expression(all_kinds):
    r = run(all_kinds, None, E.CallStarted("CA3", "+14155550100", None, ADA), ctx())
    assert "Hello Ada. Welcome back, valued customer." in r.said  # a variable set earlier
    assert A.Play("https://example.com/chime.mp3") in r.actions


def test_transfer_whispers_who_is_calling_and_why(support, all_kinds):
    r = run(all_kinds, None, E.CallStarted("CA4", "+14155550100", None, ADA), ctx())
    r = run(all_kinds, r.state, E.Speech("agent", 0.9), ctx())
    dial = r.actions[-1]
    assert isinstance(dial, A.Dial) and dial.to == "+15005550011"
    assert dial.whisper == "Ada about person"  # the flow's whisper template
    # the built-in whisper names the caller, the customer id, the intent and what was learned
    flow = load_flow_text("""
nodes:
  ask_order:
    ask: {prompt: Order number?, save_as: order_number, no_input: {goto: agent}}
    next: agent
  agent:
    transfer: "+15005550011"
""", "w.yaml")
    r = run(flow, None, E.CallStarted("CA5", "+14155550100", None, ADA), ctx())
    r = run(flow, r.state, E.Digits("4417"), ctx())
    assert r.actions[-1].whisper == "Call from Ada Lovelace, customer C - 1 0 0 1. order number: 4417."


def test_a_transfer_target_from_a_template_is_dialled_only_when_it_is_a_number():
    """`transfer: "{{ caller.account_manager }}"` dials the column's number in E.164 whatever
    its format; for a caller without one, the step fails safe to the fallback number rather
    than sending Twilio an empty <Number> (which drops the caller)."""
    flow = load_flow_text("""
settings: {fallback_number: "+15005550010"}
nodes:
  manager:
    transfer: "{{ caller.account_manager }}"
""", "manager.yaml")
    with_manager = {**ADA, "account_manager": "(415) 555-0177"}
    r = run(flow, None, E.CallStarted("CA5", "+14155550100", None, with_manager), ctx())
    assert r.actions[-1].to == "+14155550177"
    sip = {**ADA, "account_manager": "SIP:grace@pbx.example.com"}
    r = run(flow, None, E.CallStarted("CA5", "+14155550100", None, sip), ctx())
    assert r.actions[-1].to == "sip:grace@pbx.example.com"
    r = run(flow, None, E.CallStarted("CA5", "+14155550100", None, ADA), ctx())
    assert r.said.startswith("We're sorry, something went wrong on our side.")
    assert r.actions[-1].to == "+15005550010" and r.state["outcome"] == "failed"
    assert "node 'manager' transfers to '', which is not a phone number" in r.steps[-1]["detail"]["error"]


def test_transfer_not_answered_goes_to_next(all_kinds):
    r = run(all_kinds, None, E.CallStarted("CA6", "+14155550100", None, ADA), ctx())
    r = run(all_kinds, r.state, E.Digits("0"), ctx())
    r = run(all_kinds, r.state, E.TransferEnded("no-answer"), ctx())
    assert isinstance(r.actions[-1], A.Record)
    done = run(all_kinds, r.state, E.TransferEnded("completed", 30), ctx())
    assert done.steps[0]["event"] == "unexpected"  # a late duplicate does not move the call


def test_queue_wait_announces_position_and_leaves_after_max_wait(all_kinds):
    r = run(all_kinds, None, E.CallStarted("CA7", "+14155550100", None, ADA), ctx())
    r = run(all_kinds, r.state, E.Digits("1"), ctx())
    w = run(all_kinds, r.state, E.QueueWait(2, 40, 90, 4), ctx())
    assert w.said.startswith("You are number 2 in line. Please hold.")
    assert w.steps[0]["detail"]["queue_time"] == 40
    late = run(all_kinds, w.state, E.QueueWait(1, 301, 90, 4), ctx())
    assert late.actions == [A.LeaveQueue()]
    left = run(all_kinds, late.state, E.QueueLeft("leave", 301), ctx())
    assert isinstance(left.actions[-1], A.Record)


@pytest.mark.parametrize("events,outcome,node", [
    ([E.Digits("1"), E.HangUp("completed", 80)], "abandoned", "billing_queue"),
    ([E.Digits("1"), E.QueueLeft("bridged", 50), E.HangUp("completed", 300)], "queued", "billing_queue"),
    ([E.HangUp("completed", 9)], "abandoned", "main_menu"),
])
def test_hang_up_records_how_the_call_ended(support, events, outcome, node):
    r = start(support)
    for ev in events:
        r = run(support, r.state, ev, ctx())
    assert r.ended == {"outcome": outcome, "last_node": node, "status": "completed",
                       "duration_s": events[-1].duration}


@pytest.mark.parametrize("events,node", [
    ([E.HangUp("failed", 0)], "main_menu"),
    ([E.Digits("1"), E.HangUp("failed", 3)], "billing_queue"),
])
def test_a_call_twilio_could_not_run_failed_it_was_not_abandoned(support, events, node):
    """CallStatus=failed (Twilio could not run our TwiML, say): the caller did not choose to
    hang up, so the call must not count against abandonment."""
    r = start(support)
    for ev in events:
        r = run(support, r.state, ev, ctx())
    assert r.ended["outcome"] == "failed" and r.ended["last_node"] == node
    assert r.state["outcome"] == "failed"
    assert r.steps[-1]["event"] == "hangup" and r.steps[-1]["detail"]["status"] == "failed"


def test_a_failed_status_does_not_undo_a_call_that_was_served(support):
    r = start(support)
    for ev in (E.Digits("1"), E.QueueLeft("bridged", 50), E.HangUp("failed", 300)):
        r = run(support, r.state, ev, ctx())
    assert r.ended["outcome"] == "queued"


def test_voicemail_outcome_and_goodbye(support):
    r = start(support, now=CLOSED)
    r = run(support, r.state, E.RecordingDone("https://api.twilio.com/rec/RE1", 12), ctx(now=CLOSED))
    assert r.said == "Thank you. Goodbye." and r.actions[-1] == A.Hangup()
    assert r.state["outcome"] == "voicemail"
    assert r.steps[0]["detail"] == {"url": "https://api.twilio.com/rec/RE1", "duration": 12}


def test_goto_flow_continues_in_the_other_flow(all_kinds):
    minimal = load_flow(FIXTURES / "flows" / "good" / "minimal.yaml")
    flows = {"all_kinds": all_kinds, "minimal": minimal}
    r = run(all_kinds, None, E.CallStarted("CA8", "+14155550100", None, ADA), ctx(flows=flows))
    r = run(all_kinds, r.state, E.Digits("2"), ctx(flows=flows))
    assert r.state["flow"] == "minimal"
    assert r.said == "Hello. Goodbye." and r.actions[-1] == A.Hangup()


LOOKUP = load_flow_text("""
id: lookup
settings: {fallback_number: "+15005550010"}
nodes:
  find:
    lookup: {by: customer_id, value: "{{ call.from }}", found: bye, not_found: bye}
  bye:
    hangup: Bye.
""", "lookup.yaml")


def _broken_lookup(field, value):
    return {"known": True}["first_name"]  # a bug: KeyError


def test_a_bug_fails_safe_and_the_result_carries_the_exception():
    r = run(LOOKUP, None, E.CallStarted("CA20", "+14155550100", None, {}),
            ctx(lookup=_broken_lookup, propagate=False))
    assert r.said.startswith("We're sorry, something went wrong on our side.")
    assert r.actions[-1] == A.Dial("+15005550010", 30, None, "Transferred after an error in the phone menu.")
    assert isinstance(r.error, KeyError) and r.error.__traceback__ is not None
    assert r.steps[-1]["event"] == "error" and r.steps[-1]["detail"] == {"error": "KeyError: 'first_name'"}
    assert run(LOOKUP, None, E.CallStarted("CA21", "+14155550100", None, {}), ctx()).error is None


def test_propagation_lets_a_bug_out_but_a_flows_own_failure_still_fails_safe():
    with pytest.raises(KeyError, match="first_name"):
        run(LOOKUP, None, E.CallStarted("CA22", "+14155550100", None, {}),
            ctx(lookup=_broken_lookup, propagate=True))
    missing = load_flow_text("id: goto\nnodes:\n  elsewhere:\n    goto_flow: nowhere\n", "goto.yaml")
    r = run(missing, None, E.CallStarted("CA23", None, None, {}), ctx(propagate=True))
    assert isinstance(r.error, FlowRuntimeError) and r.state["wait"] == "failsafe"
    assert r.steps[-1]["detail"] == {"error": "FlowRuntimeError: flow 'nowhere' is not loaded"}


def test_a_failure_is_logged_in_one_line_and_a_bug_with_its_traceback(caplog):
    log = logging.getLogger("test.engine")
    bug = run(LOOKUP, None, E.CallStarted("CA24", "+14155550100", None, {}),
              ctx(lookup=_broken_lookup, propagate=False))
    missing = load_flow_text("id: goto\nnodes:\n  elsewhere:\n    goto_flow: nowhere\n", "goto.yaml")
    flow_failure = run(missing, None, E.CallStarted("CA25", None, None, {}), ctx())
    with caplog.at_level(logging.ERROR, "test.engine"):
        bug.log_error(log, "CA24")
        flow_failure.log_error(log, "CA25")
        run(LOOKUP, None, E.CallStarted("CA26", None, None, {}), ctx()).log_error(log, "CA26")
    first, second = caplog.records
    assert first.getMessage() == ("call CA24: flow 'lookup' failed at node 'find' and the caller was "
                                  "handed to a person: KeyError: 'first_name'")
    assert first.exc_info[1] is bug.error and "_broken_lookup" in caplog.text  # the traceback
    assert second.getMessage() == ("call CA25: flow 'goto' failed at node 'elsewhere' and the caller "
                                   "was handed to a person: FlowRuntimeError: flow 'nowhere' is not loaded")
    assert second.exc_info is None


def test_runaway_loop_fails_safe_to_a_person():
    flow = load_flow_text("""
settings: {fallback_number: "+15005550010"}
nodes:
  spin:
    set: {n: "{{ (vars.n or 0) | int + 1 }}"}
    next: check
  check:
    branch:
      - {if: "vars.n | int > -1", goto: spin}
    else: bye
  bye:
    hangup: Bye.
""", "loop.yaml")
    r = run(flow, None, E.CallStarted("CA10", None, None, {}), ctx())
    assert r.said.startswith("We're sorry, something went wrong on our side.")
    assert r.actions[-1] == A.Dial("+15005550010", 30, None, "Transferred after an error in the phone menu.")
    assert r.state["outcome"] == "failed"
    error = r.steps[-1]
    assert error["event"] == "error" and f"more than {MAX_HOPS} nodes" in error["detail"]["error"]
    # nobody answers the fallback number: the caller can still leave a message, then hears goodbye
    missed = run(flow, r.state, E.TransferEnded("no-answer", 0), ctx())
    assert missed.said.startswith("Sorry, nobody could take your call. Please leave a message")
    assert isinstance(missed.actions[-1], A.Record)
    left = run(flow, missed.state, E.RecordingDone("https://api.twilio.com/rec/RE1", 12), ctx())
    assert left.said == "Thank you, we have your message. Goodbye." and left.actions[-1] == A.Hangup()
    assert left.state["outcome"] == "voicemail" and left.steps[0]["event"] == "recording"
    answered = run(flow, r.state, E.TransferEnded("completed", 95), ctx())
    assert answered.actions == [A.Hangup()] and answered.state["outcome"] == "transferred"


def test_every_step_is_numbered_in_order(support):
    r = start(support, ADA)
    r2 = run(support, r.state, E.Digits("1"), ctx())
    seqs = [s["seq"] for s in r.steps + r2.steps]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [s["node"] for s in r.steps] == ["check_hours", "greet", "greet_known", "main_menu"]
    assert r.steps[2]["said"] == "Hi Ada, thanks for calling Northwind Fibre."
    assert r.steps[3]["action"] == "gather"


def test_speech_off_makes_menus_keypad_only():
    flow = load_flow_text("""
settings: {speech: "off", escape: person}
nodes:
  menu:
    ask:
      prompt: Press 1 for a person.
      choices: [{key: 1, label: a person, goto: person}]
  person: {transfer: "+15005550011"}
""", "off.yaml")
    r = run(flow, None, E.CallStarted("CA11", None, None, {}), ctx())
    assert r.actions[-1].input == ("dtmf",)


def test_silence_and_confusion_have_their_own_retry_counts(support):
    r = start(support)
    r = run(support, r.state, E.Digits("9"), ctx())  # not understood once
    r = run(support, r.state, E.NoInput(), ctx())  # silent once: no_input.retries is 1
    assert isinstance(r.actions[-1], A.Gather) and r.state["node"] == "main_menu"
    r = run(support, r.state, E.NoInput(), ctx())
    assert r.actions[-1] == A.Enqueue("general")


def test_confirmed_choice_plays_its_words_and_keeps_the_answer():
    flow = load_flow_text("""
intents:
  refund: [I want my money back]
settings: {escape: person, confirm_below: 0.8}
nodes:
  menu:
    ask:
      prompt: How can I help?
      save_as: reason
      choices:
        - {intent: refund, say: "Refunds, one moment.", goto: person}
  person: {transfer: "+15005550011"}
""", "c.yaml")
    r = run(flow, None, E.CallStarted("CA12", None, None, {}), ctx())
    m = ctx(match=lambda f, t: Match("refund", 0.6))
    r = run(flow, r.state, E.Speech("money back please", 0.7), m)
    assert "I think you're calling about refund" in r.said
    no = run(flow, r.state, E.Speech("no", 0.9), m)
    assert no.steps[-1]["event"] == "reprompt" and no.state["tries"] == {"no_match": 1}
    yes = run(flow, r.state, E.Digits("1"), m)
    assert yes.said.startswith("Refunds, one moment.")
    assert yes.state["vars"]["reason"] == "money back please"
    assert isinstance(yes.actions[-1], A.Dial)


def test_variables_from_templates_compare_as_numbers_and_missing_ones_are_false():
    flow = load_flow_text("""
nodes:
  first:
    branch: [{if: "vars.tries > 2", goto: many}]
    else: count
  count:
    set: {tries: "{{ 3 }}", account: "0042"}
    next: check
  check:
    branch: [{if: "vars.tries > 2", goto: many}]
    else: few
  many: {hangup: "Many tries, account {{ vars.account }}, intent {{ intent }}."}
  few: {hangup: Few.}
""", "n.yaml")
    r = run(flow, None, E.CallStarted("CA13", None, None, {}), ctx())
    assert r.said == "Many tries, account 0042, intent ."  # None is never read out as "None"
    assert r.state["vars"] == {"tries": 3, "account": "0042"}


def test_hash_key_choice_is_not_swallowed_by_finish_on_key():
    flow = load_flow_text("""
settings: {escape: person}
nodes:
  menu:
    ask:
      prompt: Press pound to repeat, or 0 for a person.
      choices: [{key: "#", label: repeat, goto: menu}, {key: 0, label: a person, goto: person}]
  person: {transfer: "+15005550011"}
""", "h.yaml")
    r = run(flow, None, E.CallStarted("CA14", None, None, {}), ctx())
    assert r.actions[-1].finish_on_key == ""
    again = run(flow, r.state, E.Digits("#"), ctx())
    assert isinstance(again.actions[-1], A.Gather) and again.steps[0]["event"] == "digits"


def test_twiml_keeps_numbers_and_words_that_look_like_its_placeholders():
    """Answers are built once per list of actions with stand-ins for the step and call id;
    a number to dial or digits read back that contain the stand-ins' digits stay as they are."""
    import xml.etree.ElementTree as ET

    from ivr.engine import actions as A
    from ivr.web.twiml import render

    for _ in range(2):  # the first render fills the cache, the second reads it
        root = ET.fromstring(render([A.Say("You entered 987654321."), A.Dial("+19876543210")], 5, "CA42"))
        assert root.find("Say").text == "You entered 987654321."
        assert root.find("Dial/Number").text == "+19876543210"
        assert "s=5" in root.find("Dial").get("action")
    plain = ET.fromstring(render([A.Dial("+15005550011")], 7, "CA43"))
    assert "s=7" in plain.find("Dial").get("action")
