"""What a call is waiting for, and how it ended: `str` enums with predicates.

The call state stored in Redis, the step log and the SQL tables hold the plain values
("queue", "abandoned"): members are `str`, so they serialise to the same JSON and the same
SQL values as the strings they replace, and compare equal to them. Code that reads a state
written elsewhere asks the predicates (`is_over(state["wait"])`) rather than listing values
by hand, so a new state is added here once.

    Wait            what the call waits for after a step (`state["wait"]`)
    Outcome         how the call ended for the caller (`state["outcome"]`, calls.outcome)
    CallbackStatus  where a booked callback is (`ivr:cb:<id>` status, callbacks.status)

The engine books callbacks and callbacks/ dials them, but the step log reports on them
from a lower layer, so their status lives here with the call's.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Wait(StrEnum):
    """What the call waits for after a step (`state["wait"]`; None before the first node)."""

    ASK = "ask"  # a menu or question listens for keys or speech
    CONFIRM = "confirm"  # "I think you want billing. Is that right?"
    QUEUE = "queue"  # on hold in a Twilio queue
    CALLBACK = "callback"  # out of the queue, answering the callback questions
    PENDING_CALLBACK = "pending_cb"  # a caller with a callback booked: keep it or cancel it?
    DIAL = "dial"  # a transfer rings a person
    RECORD = "record"  # a message is being recorded
    REQUEST = "request"  # the flow asked an API and waits for its answer
    SURVEY = "survey"  # the agent hung up: the caller answers the post-call survey
    FAILSAFE = "failsafe"  # after an error: handed to a person or to voicemail
    ENDED = "ended"  # the flow is done with the caller

    @classmethod
    def _missing_(cls, value: object) -> Wait | None:
        # State version 1 said "end" when the flow hung up and "ended" once Twilio reported
        # the hang-up; one value now, the hang-up is `state["hung_up"]` (see `upgrade`).
        return cls.ENDED if value == "end" else None

    @classmethod
    def of(cls, value: Any) -> Wait | None:
        """The member for a stored value (None, or a value no version wrote, is None)."""
        if value is None or isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            return None


# The caller is asked something and may press keys or speak.
LISTENING = frozenset({Wait.ASK, Wait.CONFIRM, Wait.PENDING_CALLBACK, Wait.CALLBACK, Wait.SURVEY})
# The caller waits for a person (an agent in the queue, or the one a transfer rings).
WITH_A_PERSON = frozenset({Wait.QUEUE, Wait.DIAL})
# The flow has nothing more to run for the caller (it ended, or an error handed them over).
OVER = frozenset({Wait.ENDED, Wait.FAILSAFE})
# Hanging up while waiting here is abandoning the call (before the first node too: None).
ABANDONING = frozenset({Wait.ASK, Wait.CONFIRM, Wait.QUEUE, Wait.CALLBACK, Wait.REQUEST, None})


def is_listening(wait: Any) -> bool:
    return Wait.of(wait) in LISTENING


def is_with_a_person(wait: Any) -> bool:
    return Wait.of(wait) in WITH_A_PERSON


def is_over(wait: Any) -> bool:
    return Wait.of(wait) in OVER


def records_a_message(state: Mapping | None) -> bool:
    """Whether the caller is being recorded: a message, the reason for their callback, or a
    comment in the post-call survey."""
    state = state or {}
    wait = Wait.of(state.get("wait"))
    return (wait is Wait.RECORD
            or (wait is Wait.CALLBACK and (state.get("cb") or {}).get("phase") == "reason")
            or (wait is Wait.SURVEY and (state.get("survey") or {}).get("phase") == "comment"))


def hung_up(state: Mapping | None) -> bool:
    """Whether the call's hang-up was already applied (a repeated status callback is not)."""
    if not state:
        return False
    if state.get("v", 1) < 2:
        return state.get("wait") == "ended"
    return bool(state.get("hung_up"))


def upgrade(state: dict) -> dict:
    """A state written by an earlier version, in today's form (in place; returns it).

    Live calls outlast a deploy: their state in Redis was written by the version that ran
    before, and is read by this one."""
    if state.get("v", 1) < 2:
        if state.get("wait") == "ended":
            state["hung_up"] = True
        if state.get("wait") in ("end", "ended"):
            state["wait"] = Wait.ENDED
        state["v"] = 2
    return state


class Outcome(StrEnum):
    """How a call ended, from the caller's side (`state["outcome"]`, calls.outcome)."""

    COMPLETED = "completed"  # the flow served them and hung up (resolved in the IVR)
    TRANSFERRED = "transferred"  # a person answered a transfer
    QUEUED = "queued"  # an agent answered them from a queue
    CALLBACK = "callback"  # they took a callback instead of holding
    VOICEMAIL = "voicemail"  # they left a message
    ABANDONED = "abandoned"  # they hung up before being served
    FAILED = "failed"  # the call could not be served (nobody answered, an error)

    @classmethod
    def of(cls, value: Any) -> Outcome | None:
        if value is None or isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            return None


# The caller got what they called for, from the IVR or a person, or chose to be called back.
SERVED = frozenset({Outcome.COMPLETED, Outcome.VOICEMAIL, Outcome.CALLBACK, Outcome.QUEUED,
                    Outcome.TRANSFERRED})


def is_served(outcome: Any) -> bool:
    return Outcome.of(outcome) in SERVED


class CallbackStatus(StrEnum):
    """Where a booked callback is. pending -> dialing -> answered -> connected -> completed,
    with pending again after an attempt nobody answered (the Lua scripts of
    callbacks.store write the same values)."""

    PENDING = "pending"  # waiting for its turn and a free agent
    DIALING = "dialing"  # an agent is reserved and the caller's phone rings
    ANSWERED = "answered"  # the caller picked up; the agent is being connected
    CONNECTED = "connected"  # caller and agent are talking
    COMPLETED = "completed"  # the agent reached the caller: the callback was kept
    FAILED = "failed"  # every attempt was used up
    EXPIRED = "expired"  # not reached before it expired
    CANCELLED = "cancelled"  # by the caller, or by a supervisor

    @classmethod
    def of(cls, value: Any) -> CallbackStatus | None:
        if value is None or isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            return None


# Closed for good; a final callback is never dialled again.
CALLBACK_FINAL = (CallbackStatus.COMPLETED, CallbackStatus.FAILED, CallbackStatus.EXPIRED,
         CallbackStatus.CANCELLED)
# An attempt is under way: a call to the caller exists at Twilio.
CALLBACK_LIVE = (CallbackStatus.DIALING, CallbackStatus.ANSWERED, CallbackStatus.CONNECTED)


def callback_is_final(status: Any) -> bool:
    return CallbackStatus.of(status) in CALLBACK_FINAL


def callback_is_live(status: Any) -> bool:
    return CallbackStatus.of(status) in CALLBACK_LIVE
