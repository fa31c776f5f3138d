"""Callbacks in the pure parts: the engine's offer and questions, the flow language, the agents
file, the estimate and the calling window. No Redis, no HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from callbacks import window
from callbacks.agents import AgentsError, parse_agents
from callbacks.estimate import compute
from ivr.engine import actions as A
from ivr.engine import events as E
from ivr.engine.runner import Context, Estimate, run
from ivr.errors import FlowError
from ivr.flows.loader import load_flow, load_flow_text
from tests.conftest import FLOWS

OPEN = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 in New York
ADA = {"known": True, "first_name": "Ada", "last_name": "Lovelace", "full_name": "Ada Lovelace",
       "customer_id": "C-1001", "phone": "+14155550100"}


@pytest.fixture(scope="module")
def support():
    return load_flow(FLOWS / "support.yaml")


class Call:
    """Drive the engine like the web layer does, with a fixed estimate."""

    def __init__(self, flow, caller=None, wait=900.0, free=1, position=4, pending=None, opens=None):
        self.flow, self.state = flow, None
        self.opens = opens  # seconds until the caller may be called back (None: no hook)
        self.est = Estimate(position=position, wait_s=wait, agents_available=free)
        self.asked: list = []
        self.pending = pending
        self.caller = caller or {"known": False}

    def ctx(self):
        def estimate(queue, twilio_position=None):
            self.asked.append((queue, twilio_position))
            return self.est

        return Context(now=OPEN, estimate=estimate,
                       pending_callback=(lambda n: self.pending) if self.pending else None,
                       calling_opens=self.opens, propagate=True)

    def send(self, event):
        r = run(self.flow, self.state, event, self.ctx())
        self.state = r.state
        return r

    def start(self, number="+14155550100"):
        return self.send(E.CallStarted("CA1", number, "+15005550006", self.caller))


def to_queue(call, key="1"):
    call.start()
    r = call.send(E.Digits(key))
    assert isinstance(r.actions[-1], A.Enqueue)
    return r


def test_entering_a_queue_takes_a_place_in_line(support):
    call = Call(support, ADA)
    to_queue(call)
    assert call.state["line"] == {"queue": "billing", "since": "2026-11-24T15:00:00.000+00:00"}


def test_offer_on_each_wait_cycle_names_the_key_and_listens_for_words(support):
    call = Call(support, ADA, wait=720, position=6)
    to_queue(call)
    r = call.send(E.QueueWait(2, 20, 60, 2))
    offer = r.actions[-1]
    assert isinstance(offer, A.OfferCallback) and offer.key == "1"
    assert "call me back" in offer.phrases
    assert r.said.startswith("You are number 6 in line. Your estimated wait is about 12 minutes.")
    assert "press 1" in A.spoken_text(list(offer.prompts))
    assert call.asked[-1] == ("billing", 2)  # Twilio's position goes to the estimate
    again = call.send(E.QueueWait(1, 80, 60, 1))
    assert isinstance(again.actions[-1], A.OfferCallback)  # offered again during the wait
    detail = call.send(E.QueueWait(1, 90, 60, 1)).steps[-1]["detail"]
    assert detail["callback_offered"] is True and detail["estimated_wait"] == 720


def test_a_keypad_only_flow_offers_the_callback_on_the_keypad_only(support):
    from ivr.web.twiml import wait_music

    text = (FLOWS / "support.yaml").read_text()
    text = text.replace("  escape: agent_queue ", "  speech: off\n  escape: agent_queue ")
    call = Call(load_flow_text(text, "support.yaml"), ADA, wait=720)
    to_queue(call)
    offer = call.send(E.QueueWait(2, 20, 60, 2)).actions[-1]
    assert isinstance(offer, A.OfferCallback) and offer.input == ("dtmf",)
    assert 'input="dtmf"' in wait_music([offer], None, 2) and "hints" not in wait_music([offer], None, 2)
    spoken = Call(support, ADA, wait=720)
    to_queue(spoken)
    assert 'input="dtmf speech"' in wait_music([spoken.send(E.QueueWait(2, 20, 60, 2)).actions[-1]], None, 2)


def test_no_offer_when_the_wait_is_short_but_always_when_nobody_is_free(support):
    short = Call(support, ADA, wait=60)
    to_queue(short)
    assert not any(isinstance(a, A.OfferCallback) for a in short.send(E.QueueWait(1, 5, 60, 1)).actions)
    nobody = Call(support, ADA, wait=10, free=0)
    to_queue(nobody)
    assert isinstance(nobody.send(E.QueueWait(1, 5, 60, 1)).actions[-1], A.OfferCallback)


def test_wrong_key_during_the_music_keeps_the_caller_in_line(support):
    call = Call(support, ADA)
    to_queue(call)
    call.send(E.QueueWait(1, 5, 60, 1))
    r = call.send(E.Digits("7"))
    assert r.actions == [] and call.state["wait"] == "queue"
    assert r.steps[-1]["event"] == "callback_offer" and r.steps[-1]["detail"] == {"accepted": False}


def test_known_caller_books_on_the_number_on_file(support):
    call = Call(support, ADA, wait=720)
    to_queue(call)
    call.send(E.QueueWait(1, 5, 60, 1))
    r = call.send(E.Speech("Yes, call me back please", 0.8))
    assert r.actions == [A.LeaveQueue()]
    r = call.send(E.QueueLeft("leave", 40))
    assert r.said == ("We'll call you back at 4 1 5, 5 5 5, 0 1 0 0. To confirm, press 1. "
                      "To use a different number, press 2.")
    assert call.state["line"]["queue"] == "billing"  # still holding the place while answering
    r = call.send(E.Digits("1"))
    request, *rest = r.actions
    assert request == A.RequestCallback(number="+14155550100", queue="billing",
                                        enqueued_at="2026-11-24T15:00:00.000+00:00")
    assert r.said == ("Thank you. We'll call you back at 4 1 5, 5 5 5, 0 1 0 0 in about 12 minutes, "
                      "and you keep your place in line. Goodbye.")
    assert isinstance(rest[-1], A.Hangup)
    assert call.state["outcome"] == "callback" and call.state["line"] is None
    ended = call.send(E.HangUp("completed", 90))
    assert ended.ended["outcome"] == "callback"  # a callback is not an abandoned call


def test_no_promise_of_a_callback_that_the_calling_window_forbids(support):
    late = Call(support, ADA, wait=720, opens=lambda number, hours, expire_after: None)
    to_queue(late)
    late.send(E.QueueWait(1, 5, 60, 1))
    late.send(E.Digits("1"))
    late.send(E.QueueLeft("leave", 40))
    r = late.send(E.Digits("1"))
    assert not any(isinstance(a, A.RequestCallback) for a in r.actions)
    assert r.said.startswith("Sorry, we can't call you back at 4 1 5, 5 5 5, 0 1 0 0 before")
    assert r.actions[-1] == A.Enqueue("billing") and late.state["line"]["queue"] == "billing"
    again = late.send(E.QueueWait(1, 90, 60, 1))
    assert not any(isinstance(a, A.OfferCallback) for a in again.actions)  # not offered again
    # the window opens in 11 hours, long after their turn: they are told when, truthfully
    morning = Call(support, ADA, wait=720, opens=lambda number, hours, expire_after: 11 * 3600)
    to_queue(morning)
    morning.send(E.QueueWait(1, 5, 60, 1))
    morning.send(E.Digits("1"))
    morning.send(E.QueueLeft("leave", 40))
    assert "in about 11 hours" in morning.send(E.Digits("1")).said


def test_anonymous_caller_types_a_number_and_hears_it_back(support):
    call = Call(support, {"known": False})
    call.send(E.CallStarted("CA2", None, "+15005550006", {"known": False}))
    call.send(E.Digits("0"))
    call.send(E.QueueWait(1, 5, 60, 1))
    call.send(E.Digits("1"))
    r = call.send(E.QueueLeft("leave", 10))
    gather = r.actions[-1]
    assert "enter the number" in r.said and gather.input == ("dtmf",) and gather.finish_on_key == "#"
    r = call.send(E.Digits("12"))
    assert r.said.startswith("Sorry, that isn't a number we can call.")
    r = call.send(E.Digits("5550147"))  # no area code: Twilio could not call it
    assert r.said.startswith("Sorry, that isn't a number we can call.")
    r = call.send(E.Digits("(202) 555-0147"))
    assert "You entered 2 0 2, 5 5 5, 0 1 4 7" in r.said
    r = call.send(E.Digits("2"))  # no: enter it again
    assert "enter the number" in r.said
    call.send(E.Digits("+442079460104"))
    r = call.send(E.Digits("1"))
    assert r.actions[0].number == "+442079460104"
    assert "plus 4 4, 2 0, 7 9 4 6, 0 1 0 4" in r.said


def test_giving_up_on_the_questions_goes_back_in_line_with_the_same_place(support):
    call = Call(support, ADA)
    to_queue(call)
    since = call.state["line"]["since"]
    call.send(E.QueueWait(1, 5, 60, 1))
    call.send(E.Digits("1"))
    call.send(E.QueueLeft("leave", 10))
    for _ in range(2):
        assert "didn't hear" in call.send(E.NoInput()).said
    r = call.send(E.NoInput())
    assert "still in line" in r.said and isinstance(r.actions[-1], A.Enqueue)
    assert call.state["line"]["since"] == since and call.state["wait"] == "queue"


def test_hanging_up_while_answering_is_abandoned_but_after_the_number_it_is_booked(support):
    call = Call(support, ADA)
    to_queue(call)
    call.send(E.QueueWait(1, 5, 60, 1))
    call.send(E.Digits("1"))
    call.send(E.QueueLeft("leave", 10))
    assert call.send(E.HangUp("completed", 50)).ended["outcome"] == "abandoned"
    tech = Call(support, ADA)
    to_queue(tech, "3")  # technical asks for a reason after the number
    tech.send(E.QueueWait(1, 5, 60, 1))
    tech.send(E.Digits("1"))
    tech.send(E.QueueLeft("leave", 10))
    r = tech.send(E.Digits("1"))
    assert isinstance(r.actions[-1], A.Record) and "After the tone" in r.said
    r = tech.send(E.HangUp("completed", 70))
    assert isinstance(r.actions[0], A.RequestCallback) and r.ended["outcome"] == "callback"


def test_pending_callback_keep_or_cancel(support):
    pending = {"id": "CB1", "queue": "billing", "wait_s": 600}
    keep = Call(support, ADA, pending=pending)
    r = keep.start()
    assert r.said.startswith("Hi Ada. You already asked us to call you back about billing, and we'll "
                             "call you in about 10 minutes.")
    r = keep.send(E.Speech("keep it", 0.9))
    assert isinstance(r.actions[-1], A.Hangup) and keep.state["outcome"] == "callback"
    cancel = Call(support, ADA, pending=pending)
    cancel.start()
    r = cancel.send(E.Digits("2"))
    assert r.actions[0] == A.CancelCallback("CB1")
    assert cancel.state["node"] == "main_menu"
    silent = Call(support, ADA, pending=pending)
    silent.start()
    r = silent.send(E.NoInput())
    assert not any(isinstance(a, A.CancelCallback) for a in r.actions)
    assert silent.state["node"] == "main_menu"
    # ...then waits for technical support: no second callback is offered on top of the first
    silent.est = Estimate(position=4, wait_s=720, agents_available=1)
    silent.send(E.Digits("3"))
    r = silent.send(E.QueueWait(1, 5, 60, 1))
    assert not any(isinstance(a, A.OfferCallback) for a in r.actions)


def test_callback_call_carries_what_the_first_call_learned():
    flow = load_flow(FLOWS / "callback.yaml")
    callback = {"id": "CB1", "attempt": 1, "agent": "alice", "agent_contact": "+15005550021",
                "requested": "12 minutes ago", "reason": "my router blinks red", "intent": "technical",
                "vars": {"account": "1001"}, "number_spoken": "4 1 5, 5 5 5, 0 1 0 0"}
    r = run(flow, None, E.CallStarted("CA9", "+14155550100", "+15005550006", ADA, callback=callback,
                                      parent_call_sid="CA1"), Context(now=OPEN, propagate=True))
    assert r.said.startswith("Hi Ada, this is Northwind Fibre. This is the callback you asked for 12 "
                             "minutes ago")
    dial = r.actions[-1]
    assert dial.to == "+15005550021"
    assert dial.whisper == ("Callback for Ada Lovelace, customer C - 1 0 0 1 at 4 1 5, 5 5 5, 0 1 0 0. "
                            "Calling about technical. They said: my router blinks red")
    assert r.state["vars"] == {"account": "1001"} and r.state["intent"] == "technical"


def check(body: str) -> list[str]:
    text = f"""
nodes:
  q:
    queue:
      name: billing
      callback:
{body}
    next: bye
  bye:
    hangup: "Bye."
"""
    try:
        flow = load_flow_text(text, "cb.yaml")
    except FlowError as err:
        return [str(p) for p in err.problems]
    return [str(p) for p in flow.problems]


def test_callback_fields_are_checked_with_lines():
    assert check('        ofer: "x"') == [
        "cb.yaml:7:9: error: unknown key 'ofer' in node 'q' (queue.callback) (did you mean 'offer'?); "
        "allowed here: offer_after, key, phrases, offer, confirm, enter_number, read_back, reason, "
        "reason_max_length, booked, flow, max_attempts, retry_after, expire_after, calling_hours"]
    assert check("        retry_after: 5") == [
        "cb.yaml:7:22: error: 5 is less than the minimum of 30 in node 'q' (queue.callback.retry_after)"]
    assert check("        key: 12") == [
        "cb.yaml:7:14: error: the callback key must be one key (0-9, * or #), got '12'"]
    assert check('        calling_hours: {mon-fir: "09:00-17:00"}') == [
        "cb.yaml:7:34: error: calling_hours: unknown day 'fir' (did you mean 'fri'?); use mon, tue, ... "
        "or ranges like mon-fri"]
    assert check('        offer: "Stay or go, your choice."') == [
        "cb.yaml:7:16: warning: the callback offer never names key 1: callers hear the offer but not "
        "what to press; say \"press 1\""]
    assert check('        offer: "Press {{ callback.key }} to be called back."') == []


def test_agents_file_errors_name_file_line_and_column():
    text = """agents:
  alice:
    queues: [billing]
    contact: "+15005550021"
  bob:
    queus: [technical]
    contact: "not a number"
  "carol smith":
    queues: billing
"""
    with pytest.raises(AgentsError) as err:
        parse_agents(text, "agents.yaml")
    assert [str(p) for p in err.value.problems] == [
        "agents.yaml:5:3: error: agent 'bob' needs 'queues': the queues they take, e.g. [billing, general]",
        "agents.yaml:6:5: error: unknown key 'queus' in agent 'bob' (did you mean 'queues'?); allowed "
        "here: queues, contact, description, priority",
        "agents.yaml:7:14: error: contact 'not a number' of agent 'bob' is not a phone number, a sip: "
        "address or a client: name",
        "agents.yaml:8:3: error: 'carol smith' is not a usable agent name: letters, digits, '_', '.', "
        "'@' and '-', up to 64 characters",
        "agents.yaml:8:3: error: agent 'carol smith' needs 'contact': how to reach them (a phone "
        "number, sip:user@host or client:name)",
    ]
    good = parse_agents(text.split("  bob:")[0], "agents.yaml")
    assert good["alice"].queues == ("billing",) and good["alice"].contact == "+15005550021"


def test_estimate_counts_calls_that_must_finish_first():
    assert compute(ahead=0, available=1, staffed=3, handle_time=300).wait_s == 0
    assert compute(ahead=4, available=0, staffed=2, handle_time=300).wait_s == 750
    assert compute(ahead=4, available=2, staffed=2, handle_time=300).wait_s == 450
    est = compute(ahead=4, available=0, staffed=0, handle_time=300)
    assert est.wait_s is None and est.position == 5
    assert est.longer_than(10**9)  # nobody available: longer than any threshold
    assert compute(ahead=0, available=0, staffed=1, handle_time=30).longer_than(3600)
    assert not compute(ahead=0, available=1, staffed=1, handle_time=30).longer_than(120)


def test_calling_window_is_the_callers_local_time():
    zones = window.zones_for("+442079460104")
    assert zones == ["Europe/London"]
    hours = {"mon-fri": "09:00-17:00"}
    # 08:30 in London: not yet; the window opens at 09:00 London time
    at = datetime(2026, 11, 24, 8, 30, tzinfo=UTC)
    assert not window.is_open(hours, zones, at)
    assert window.next_open(hours, zones, at) == datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    # a North American non-geographic number (Guam to Newfoundland) falls back to the line's zone
    assert window.zones_for("+18005550100", "America/New_York") == ["America/New_York"]
    # a UK mobile may be in London, Jersey, Guernsey or the Isle of Man: one clock
    assert len(window.zones_for("+447911123456", "America/New_York")) == 1
    assert not window.is_open(None, window.zones_for("+447911123456", "America/New_York"),
                              datetime(2026, 6, 10, 0, 30, tzinfo=UTC))  # 01:30 in London
    # an Australian mobile: inside the window on every Australian clock, never the line's
    au = window.zones_for("+61412345678", "America/New_York")
    assert "America/New_York" not in au and "Australia/Sydney" in au and "Australia/Perth" in au
    assert not window.is_open(None, au, datetime(2026, 6, 10, 15, 0, tzinfo=UTC))  # 01:00 in Sydney
    assert window.is_open(None, au, datetime(2026, 6, 10, 5, 0, tzinfo=UTC))  # 15:00 Sydney, 13:00 Perth
    # Friday 17:00 London: next chance is Monday 09:00, unless the callback expires first
    friday = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
    assert window.next_open(hours, zones, friday) == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert window.next_open(hours, zones, friday, until=datetime(2026, 11, 28, tzinfo=UTC)) is None
    # default: 08:00-21:00 every day
    assert window.is_open(None, ["America/Los_Angeles"], datetime(2026, 11, 24, 17, 0, tzinfo=UTC))
    assert not window.is_open(None, ["America/Los_Angeles"], datetime(2026, 11, 24, 14, 0, tzinfo=UTC))


def test_hanging_up_after_the_reason_when_no_callback_is_possible_ends_the_call_there(support):
    call = Call(support, ADA, wait=720, opens=lambda number, hours, expire_after: None)
    call.send(E.CallStarted("CA1", "+14155550100", "+15005550006", ADA))
    call.send(E.Digits("3"))  # technical support asks for a reason
    call.send(E.QueueWait(1, 5, 60, 1))
    call.send(E.Digits("1"))
    call.send(E.QueueLeft("leave", 40))
    r = call.send(E.Digits("1"))  # confirms the number; now the reason
    assert isinstance(r.actions[-1], A.Record)
    ended = call.send(E.HangUp("completed", 80))
    events = [s["event"] for s in ended.steps]
    assert "callback_refused" in events and "enter" not in events  # not put back in line
    assert ended.ended["outcome"] == "abandoned"


# -- what a caller on hold hears, cycle after cycle -------------------------------------------


def test_first_in_line_with_nobody_free_hears_that_the_agents_are_busy_not_next_in_line(support):
    """Nobody is free, so the wait is long and a callback is offered: "you are next in line"
    would promise what the offer contradicts."""
    call = Call(support, ADA, wait=600, free=0, position=1)
    to_queue(call)
    r = call.send(E.QueueWait(1, 20, 60, 1))
    assert "next in line" not in r.said
    assert r.said.startswith("All our agents are busy right now. You'll be the first to be "
                             "answered. Your estimated wait is about 10 minutes.")
    offer = r.actions[-1]
    assert isinstance(offer, A.OfferCallback)
    assert isinstance(offer.prompts[0], A.Silence)  # a breath between the news and the offer
    free = Call(support, ADA, wait=30, free=1, position=1)
    to_queue(free)
    assert free.send(E.QueueWait(1, 20, 60, 1)).said.startswith("You are next in line.")


def test_later_hold_cycles_say_what_changed_and_are_shorter(support):
    call = Call(support, ADA, wait=720, position=6)
    to_queue(call)
    first = call.send(E.QueueWait(2, 20, 60, 2))
    assert first.said.startswith("You are number 6 in line. Your estimated wait is about 12 minutes. "
                                 "Thanks for waiting. Your call matters to us")
    same = call.send(E.QueueWait(2, 50, 60, 2))  # nothing moved
    assert same.said.startswith("Thanks for holding.")
    assert "in line." not in same.said.split("To be called back")[0] and "Your call matters" not in same.said
    assert "To be called back instead, press 1, or say call me back." in same.said  # the offer, shorter
    assert len(same.said) < len(first.said) / 2
    call.est = Estimate(position=4, wait_s=480, agents_available=1)
    moved = call.send(E.QueueWait(2, 80, 60, 2))
    assert moved.said.startswith("You are number 4 in line. Your estimated wait is about 8 minutes.")
    assert "Your call matters" not in moved.said


def test_back_in_line_after_the_callback_questions_the_entry_prompt_is_not_replayed(support):
    call = Call(support, ADA, wait=720)
    to_queue(call, "3")  # technical: "Connecting you to technical support..."
    call.send(E.QueueWait(2, 20, 60, 2))
    call.send(E.Digits("1"))  # a callback, please
    call.send(E.QueueLeft("leave", 30))
    for _ in range(3):  # the number question, never answered
        r = call.send(E.NoInput())
    assert r.said.startswith("No problem. You're still in line.")
    assert "Connecting you" not in r.said and r.actions[-1] == A.Enqueue("technical")
    assert call.state["line"]["since"] == "2026-11-24T15:00:00.000+00:00"  # the same place
