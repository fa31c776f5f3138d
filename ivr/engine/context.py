"""What the engine is given from the outside world for one event: `Context`.

The time, the other flows, the caller directory, the intent matcher, queue estimates and
pending callbacks all come in here, so the engine itself stays pure: the web server, the
simulator and the tests each build a Context of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ivr.flows.model import Flow


@dataclass(frozen=True)
class Match:
    """What an intent matcher returns (speech.intents.IntentMatch has the same fields)."""

    intent: str | None
    confidence: float = 1.0
    needs_confirmation: bool = False


@dataclass(frozen=True)
class Estimate:
    """A queue's estimated wait for this caller (callbacks.estimate computes it from live data)."""

    position: int = 1  # 1: next in line; callers and callbacks ahead both count
    wait_s: float | None = None  # None: nobody staffs the queue, so there is no estimate
    agents_available: int = 0

    def longer_than(self, seconds: float) -> bool:
        """With no agent available the wait counts as longer than any threshold."""
        return self.agents_available == 0 or self.wait_s is None or self.wait_s > seconds


@dataclass
class Context:
    now: datetime
    flows: Mapping[str, Flow] = field(default_factory=dict)
    lookup: Callable[[str, str], dict | None] | None = None  # (field, value) -> caller context
    match: Callable[[Flow, str], Any] | None = None  # (flow, text) -> Match-like
    fallback_number: str | None = None
    # (queue name, the caller's position in Twilio's queue if known) -> this caller's
    # Estimate-like place and wait, callbacks ahead included (None: not known)
    estimate: Callable[[str, int | None], Any] | None = None
    # caller's E.164 number -> their pending callback {"id", "queue", "wait_s"} or None
    pending_callback: Callable[[str], dict | None] | None = None
    region: str = "US"  # for numbers callers type without a country code
    # (number, calling_hours, expire_after s) -> seconds until that caller may first be called
    # back in their own time zone (0: now), or None when there is no such time before expiry
    calling_opens: Callable[[str, Any, int], float | None] | None = None
    # E.164 number -> whether it asked for no more text messages (the opt-out list)
    sms_opted_out: Callable[[str], bool] | None = None
    # (call id, share) -> whether the call falls within a survey's share; None: by a hash of
    # the call id (ivr.flows.survey.sampled). Flow tests and the simulator choose.
    survey_sampled: Callable[[str, float], bool] | None = None
    # Let a bug out of `run` instead of failing safe (IVR_PROPAGATE_EXCEPTIONS; the tests run
    # with it, as Flask's PROPAGATE_EXCEPTIONS). A flow's own failure (an IvrError: a
    # runaway loop, a flow not loaded) still fails safe: that is what the fail-safe is for.
    propagate: bool = False
