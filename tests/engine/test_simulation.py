"""Calls without a phone (the simulator, flow tests, test calls): a bug in the engine is
logged with its traceback, or raised when the caller of the simulation asks for it."""

from __future__ import annotations

import logging

import pytest

from ivr.engine import events as E
from ivr.engine.simulation import SimulatedCall
from ivr.flows.loader import load_flow
from tests.conftest import FLOWS
from tests.engine.test_runner import OPEN


def _broken_matcher(flow, text):
    raise ZeroDivisionError("a bug in the matcher")


def test_a_bug_is_logged_with_its_traceback_and_the_caller_hears_the_apology(caplog):
    call = SimulatedCall(load_flow(FLOWS / "support.yaml"), "+14155550100", now=OPEN,
                         match=_broken_matcher, call_sid="SIM1")
    call.start()
    with caplog.at_level(logging.ERROR, "ivr.simulation"):
        call.send(E.Speech("billing", 0.9))
    assert call.last_heard.startswith("We're sorry, something went wrong on our side.")
    assert call.over
    record, = caplog.records
    assert record.getMessage() == ("call SIM1: flow 'support' failed at node 'main_menu' and the caller "
                                   "was handed to a person: ZeroDivisionError: a bug in the matcher")
    assert "_broken_matcher" in caplog.text  # the traceback


def test_with_propagation_the_bug_is_raised():
    call = SimulatedCall(load_flow(FLOWS / "support.yaml"), "+14155550100", now=OPEN,
                         match=_broken_matcher, propagate=True)
    call.start()
    with pytest.raises(ZeroDivisionError):
        call.send(E.Speech("billing", 0.9))
