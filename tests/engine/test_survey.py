"""The post-call survey in the engine and the flow language: which calls are asked, how
keys and words become a score in English and French, and what `ivr flows check` says."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ivr.engine import events as E
from ivr.engine.simulation import SimulatedCall
from ivr.engine.survey import score_of
from ivr.errors import FlowError
from ivr.flows.loader import load_flow, load_flow_text
from ivr.flows.survey import sampled
from ivr.i18n import language

FLOWS = Path(__file__).resolve().parents[2] / "flows"
NOW = datetime(2026, 11, 24, 15, tzinfo=UTC)

FLOW = """
id: line
settings: {escape: billing}
survey:
  queues: [billing]
  solved: true
nodes:
  menu:
    ask:
      prompt: "Press 1 for billing, 2 for sales."
      choices:
        - {key: 1, label: billing, goto: billing}
        - {key: 2, label: sales, goto: sales}
  billing:
    queue: billing
  sales:
    queue: sales
"""


@pytest.mark.parametrize("words, score", [
    ("five", 5), ("Five.", 5), ("4 out of 5", 4), ("four out of five", 4), ("very good", 5),
    ("not good", 2), ("good", 4), ("okay I guess", 3), ("terrible", 1), ("purple", None),
])
def test_english_words_are_scores(words, score):
    assert score_of(words, language("en-US")) == score


@pytest.mark.parametrize("words, score", [
    ("cinq", 5), ("Très bien !", 5), ("très bien", 5), ("pas très bien", 2), ("bien", 4),
    ("quatre sur cinq", 4), ("5 sur 5", 5), ("c'était nul", 1), ("pas mal", 4),
    ("un bon service", None),  # "un" and "bon" name two scores: asked again
])
def test_french_words_are_scores(words, score):
    assert score_of(words, language("fr-FR")) == score


def _call(flow, **kw) -> SimulatedCall:
    call = SimulatedCall(flow, "+14155550100", now=NOW, propagate=True, **kw)
    call.start()
    return call


def test_only_the_queues_the_survey_names_are_surveyed():
    flow = load_flow_text(FLOW, "line.yaml")
    billing = _call(flow)
    billing.send(E.Digits("1"))
    assert "On a scale of 1 to 5" in billing.send(E.TransferEnded("completed", 60)).said
    sales = _call(flow)
    sales.send(E.Digits("2"))
    ended = sales.send(E.TransferEnded("completed", 60))
    assert ended.said == "" and sales.over and sales.state["outcome"] == "queued"


def test_a_share_picks_calls_by_their_id_the_same_way_every_time():
    ids = [f"CA{i:04d}" for i in range(2000)]
    inside = [sid for sid in ids if sampled(sid, 0.2)]
    assert 300 < len(inside) < 500  # about a fifth
    assert inside == [sid for sid in ids if sampled(sid, 0.2)]
    assert all(sampled(sid, 1.0) for sid in ids[:50]) and not any(sampled(sid, 0) for sid in ids[:50])


def test_a_caller_who_hangs_up_mid_survey_keeps_the_answers_given():
    flow = load_flow_text(FLOW, "line.yaml")
    call = _call(flow)
    call.send(E.Digits("1"))
    call.send(E.TransferEnded("completed", 60))
    call.send(E.Digits("2"))
    call.send(E.HangUp("completed", 200))
    assert call.survey_answers() == {"score": 2, "solved": None, "comment": False, "queue": "billing",
                                     "agent": None, "hung_up": True, "phase": "solved"}
    assert call.state["outcome"] == "queued"


def test_a_key_outside_1_to_5_is_asked_again():
    flow = load_flow_text(FLOW, "line.yaml")
    call = _call(flow)
    call.send(E.Digits("1"))
    call.send(E.TransferEnded("completed", 60))
    assert call.send(E.Digits("9")).said == "Please press a key from 1 to 5, 5 being excellent."
    assert call.send(E.Digits("5")).said.startswith("Did we solve your problem today?")


def test_after_a_transfer_the_callback_flow_surveys_the_caller_for_the_callbacks_queue():
    flows = {f.id: f for f in (load_flow(FLOWS / "callback.yaml"), load_flow(FLOWS / "support.yaml"))}
    call = SimulatedCall(flows["callback"], "+14155550100", flows=flows, now=NOW, propagate=True)
    call.send(E.CallStarted(call.call_sid, "+14155550100", None, {"known": False},
                            callback={"queue": "billing", "agent": "ana", "agent_contact": "+15005550020"}))
    assert call.waiting_for == "dial"
    asked = call.send(E.TransferEnded("completed", 300))
    assert "On a scale of 1 to 5" in asked.said
    start = next(s for s in call.steps if s["event"] == "survey_start")
    assert start["detail"]["queue"] == "billing" and start["detail"]["agent"] == "ana"
    assert call.state["outcome"] == "transferred"


def test_flows_check_reports_a_bad_survey_at_its_line():
    bad = FLOW.replace("  queues: [billing]\n", "  share: 150%\n  queues: [biling]\n  solve: true\n")
    with pytest.raises(FlowError) as err:
        load_flow_text(bad, "line.yaml")
    messages = [(p.line, p.message) for p in err.value.problems]
    assert any(line == 5 and "share" in msg for line, msg in messages), messages
    assert any(line == 7 and "unknown key 'solve'" in msg and "solved" in msg for line, msg in messages)


def test_flows_check_warns_about_a_queue_no_node_uses():
    flow = load_flow_text(FLOW.replace("[billing]", "[biling]"), "line.yaml")
    warning = next(p for p in flow.problems if p.code == "survey-queue")
    assert warning.line == 5 and "'biling'" in warning.message and "billing" in warning.message


def test_a_french_flow_hears_the_survey_in_french_and_has_nothing_untranslated():
    flow = load_flow(FLOWS / "assistance.yaml")
    assert not [p for p in flow.problems if p.code == "untranslated"]
