"""A realistic synthetic month of calls, so the dashboard has something to show on a first run.

Every call is driven through the real engine (`SimulatedCall` with the flow's caller directory
and the real intent matcher) and written through the real store (`Store.record`, which also
writes the per-call summaries), exactly as the recorder writes real calls. What is invented is
the callers and the queues:

- arrivals follow the support line's week: busy mornings and early afternoons, a quieter
  Friday afternoon and Saturday, almost nothing on Sunday (when the line is closed), and one
  bad day (an internet outage that floods the technical queue);
- callers are known (from the directory) or not, some withhold their number, and some call
  again within hours or days;
- at the menu they speak (in their own words, sometimes not understood), press keys, stay
  silent or hang up;
- each queue's wait grows with the load of the hour; callers hang up when their patience runs
  out, and when the wait is long they are offered a callback, which some take;
- callbacks are then kept, failed, expired or cancelled, and written as the callback
  machinery would write them;
- request nodes get the answers the flow's tests declare (now and then a timeout or a 500),
  and most callers told what they called for hang up there and then.

Call ids start with CADEMO and callback ids with CBDEMO, so `ivr demo-data --remove` can take
them out again. The same seed and period give the same calls; writing them twice stores them once.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ivr.calllog.metrics import speech_seconds
from ivr.engine import actions as A
from ivr.engine import events as E
from ivr.engine.runner import Estimate
from ivr.engine.simulation import SimulatedCall
from ivr.engine.states import Wait
from ivr.flows.model import Flow

CALL_PREFIX = "CADEMO"
CALLBACK_PREFIX = "CBDEMO"

WEEKDAY_VOLUME = (1.3, 1.1, 1.0, 1.0, 0.9, 0.45, 0.12)  # Monday first
HOUR_VOLUME = (0.04, 0.03, 0.02, 0.02, 0.03, 0.06, 0.15, 0.35, 0.9, 1.6, 1.8, 1.5, 1.0, 1.3,
               1.5, 1.3, 1.1, 0.9, 0.6, 0.45, 0.2, 0.12, 0.08, 0.05)
BASE_WAIT_S = {"billing": 6.5, "orders": 5.0, "technical": 7.0, "retention": 4.0, "general": 6.5}
LOAD_EXPONENT = 3.0  # waits grow steeply as the hour gets busier
TALK_S = (150, 600)

# Words callers use, beyond the flow's own phrases: natural, sometimes vague, sometimes odd.
EXTRA_SAYINGS = {
    "billing": ["there's a charge on my card I don't recognise", "my bill went up this month",
                "I need a copy of my invoice", "billing please", "question about a payment"],
    "orders": ["I ordered the faster plan last week", "when will the engineer come",
               "my new router still hasn't shipped", "orders", "I want to change my installation date"],
    "technical": ["the internet keeps cutting out", "my wifi is really slow tonight",
                  "no internet since this morning", "the router light is blinking red", "technical"],
    "cancellation": ["I'd like to end my contract", "I'm moving abroad and want to cancel",
                     "cancel", "how do I close my account"],
    "agent": ["can I talk to a real person", "agent", "representative please", "operator"],
}
NOT_UNDERSTOOD = ["uh hello", "yes", "I got a letter from you", "it's about my mother's account",
                  "purple elephants", "hmm", "I don't know", "it's complicated"]
VOICEMAILS = [
    "Hi, it's about my bill from last month, I was charged twice. Please call me back.",
    "Hello, my internet has been down since this evening. Thanks.",
    "I'd like to know when my installation is. Call me tomorrow please.",
    "Hi, I want to cancel my contract, please call me back.",
]


@dataclass
class DemoStats:
    calls: int = 0
    steps: int = 0
    callbacks: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class _Caller:
    def __init__(self, number: str | None, known: bool, patience: float, style: str):
        self.number, self.known, self.patience, self.style = number, known, patience, style


class DemoGenerator:
    """Writes `days` of calls to the flow ending at `end` into `store`."""

    def __init__(self, store: Any, flow: Flow, flows: dict[str, Flow], directory: Any,
                 match: Callable, *, days: int = 30, calls_per_day: int = 250, seed: int = 1,
                 end: datetime | None = None, region: str = "US", batch: int = 200,
                 progress: Callable[[int, int], None] | None = None):
        self.store, self.flow, self.flows, self.directory, self.match = store, flow, flows, directory, match
        self.days, self.calls_per_day, self.region, self.batch = days, calls_per_day, region, batch
        self.rng = random.Random(seed)
        self.seed = seed
        now = end or datetime.now(UTC)
        self.end = now.replace(minute=0, second=0, microsecond=0)
        self.start = self.end - timedelta(days=days)
        self.tz = _flow_zone(flow)
        self.progress = progress
        self.known_numbers = [c.phone for c in directory] if directory is not None and hasattr(
            directory, "__iter__") else []
        self.unknown_numbers = [f"+1{self.rng.choice([212, 312, 415, 503, 617, 646, 718, 773])}555"
                                f"{self.rng.randrange(1000, 9999):04d}" for _ in range(20000)]
        self.recent: list[tuple[datetime, _Caller]] = []  # callers of the last 7 days from _recent_start on
        self._recent_start = 0
        outage_day = self.start + timedelta(days=self.rng.randrange(max(1, days - 3)) + 1)
        self.outage = outage_day.astimezone(self.tz).date()
        self.intent_sayings = self._sayings()
        from ivr.engine.answers import declared_for

        self.answers = declared_for(flow)[0]

    def _answer(self, req: A.Request) -> E.RequestDone:
        """What the company's API answers a request: as the flow's tests declare, with the odd
        timeout and server error."""
        from ivr.engine.answers import Answer

        roll = self.rng.random()
        if roll < 0.03:
            return Answer(error="timeout").event(req)
        if roll < 0.05:
            return Answer(status=500, body="").event(req)
        found = self.answers.get(req.node)
        if found is None:
            return E.RequestDone(req.id, error="not_declared")
        return Answer(found.status, found.body, found.error, self.rng.uniform(0.05, 0.9)).event(req)

    def _sayings(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, intent in self.flow.intents.items():
            out[name] = list(intent.phrases) + list(intent.keywords)[:3] + EXTRA_SAYINGS.get(name, [])
        return out

    # -- arrivals -----------------------------------------------------------------------

    def arrivals(self) -> list[datetime]:
        """Call start times over the period, following the weekly pattern."""
        times: list[datetime] = []
        mean_hour = sum(HOUR_VOLUME) / 24
        day = self.start.astimezone(self.tz).replace(hour=0, minute=0, second=0, microsecond=0)
        while day < self.end:
            factor = WEEKDAY_VOLUME[day.weekday()] / (sum(WEEKDAY_VOLUME) / 7)
            if day.date() == self.outage:
                factor *= 1.8
            for hour in range(24):
                expected = self.calls_per_day * factor * HOUR_VOLUME[hour] / mean_hour / 24
                for _ in range(_poisson(self.rng, expected)):
                    local = day.replace(hour=hour) + timedelta(seconds=self.rng.uniform(0, 3600))
                    at = local.astimezone(UTC)
                    if self.start <= at < self.end:
                        times.append(at)
            day = (day + timedelta(days=1, hours=3)).replace(hour=0)
        return sorted(times)

    def load(self, at: datetime) -> float:
        local = at.astimezone(self.tz)
        load = HOUR_VOLUME[local.hour] * WEEKDAY_VOLUME[local.weekday()]
        return load * (1.8 if local.date() == self.outage else 1.0)

    # -- callers ------------------------------------------------------------------------

    def caller(self, at: datetime) -> _Caller:
        rng = self.rng
        week = timedelta(days=7)
        while self._recent_start < len(self.recent) and at - self.recent[self._recent_start][0] >= week:
            self._recent_start += 1
        # calling again about the same thing
        if self._recent_start < len(self.recent) and rng.random() < 0.08:
            return self.recent[rng.randrange(self._recent_start, len(self.recent))][1]
        roll = rng.random()
        if roll < 0.05:
            c = _Caller(None, False, rng.expovariate(1 / 180), "any")
        elif roll < 0.25 and self.known_numbers:
            c = _Caller(rng.choice(self.known_numbers), True, rng.expovariate(1 / 320), "any")
        else:
            c = _Caller(rng.choice(self.unknown_numbers), False, rng.expovariate(1 / 240), "any")
        c.style = rng.choices(["speak", "keys", "silent", "quitter"], [0.56, 0.34, 0.07, 0.03])[0]
        self.recent.append((at, c))
        return c

    # -- one call -----------------------------------------------------------------------

    def call(self, index: int, at: datetime) -> tuple[list[dict], dict | None, dict | None]:
        """Drive one call; returns its log records, a callback snapshot (or None) and a voicemail
        transcript to attach (or None)."""
        rng = self.rng
        person = self.caller(at)
        sid = CALL_PREFIX + hashlib.sha1(f"{self.seed}:{index}:{at.isoformat()}".encode()).hexdigest()[:26]
        load = self.load(at)
        outage = at.astimezone(self.tz).date() == self.outage
        wait_by_queue = {q: base * max(0.3, load) ** LOAD_EXPONENT
                         * (4.0 if q == "technical" and outage else 1.0) for q, base in BASE_WAIT_S.items()}

        def estimate(queue: str, position: int | None = None) -> Estimate:
            expected = wait_by_queue.get(queue, 40.0)
            # the IVR's estimate counts everyone ahead at the average handling time: pessimistic
            return Estimate(position=max(1, round(expected / 45)), wait_s=expected * 2, agents_available=2)

        sim = SimulatedCall(self.flow, person.number or "Anonymous", flows=self.flows, now=at,
                            directory=self.directory, match=self.match, call_sid=sid, region=self.region,
                            estimate=estimate, requester=self._answer)
        sim.start()
        t = at
        caller_wait = 0.0
        queue_entered: datetime | None = None
        tries = 0
        callback: dict | None = None
        voicemail: dict | None = None
        for _ in range(40):
            wait = sim.waiting_for
            if sim.over or wait is None:
                break
            heard = speech_seconds(sim.last_heard)
            if wait in (Wait.ASK, Wait.CONFIRM):
                tries += 1
                event, t = self._menu_answer(sim, person, tries, t, heard)
            elif wait is Wait.QUEUE:
                if queue_entered is None:
                    queue_entered = t + timedelta(seconds=heard)
                    queue = next((a for a in reversed(sim.steps) if (a.get("action") or "").startswith(
                        "enqueue:")), {}).get("action", "enqueue:general").split(":", 1)[1]
                    caller_wait = rng.expovariate(1 / wait_by_queue.get(queue, 40.0))
                event, t, callback = self._queue(sim, person, queue_entered, caller_wait, t, sid)
            elif wait is Wait.CALLBACK:
                event, t = self._callback_question(sim, person, t, heard)
            elif wait is Wait.RECORD:
                t += timedelta(seconds=heard + rng.uniform(8, 40))
                text = rng.choice(VOICEMAILS)
                url = f"https://api.twilio.com/2010-04-01/Accounts/ACdemo/Recordings/RE{sid[6:30]}"
                event = E.RecordingDone(url, int(len(text.split()) * 0.45) + 2)
                voicemail = {"seq": sim.state["seq"] + 1, "url": url, "transcript": text}
            elif wait == "dial":
                t += timedelta(seconds=rng.uniform(8, 30) + rng.uniform(*TALK_S))
                event = E.TransferEnded("completed", int(rng.uniform(*TALK_S)))
            elif wait == "pending_cb":
                t += timedelta(seconds=heard)
                event = E.Digits("1")
            else:
                break
            sim.now = t
            sim.send(event)
        t += timedelta(seconds=speech_seconds(sim.last_heard) + 1)
        sim.now = t
        duration = int((t - at).total_seconds())
        if not sim.ended:
            sim.send(E.HangUp("completed", duration))
        ended = sim.ended or {}
        caller = sim.caller or {}
        records: list[dict] = [{
            "type": "call_started", "call_sid": sid, "flow": self.flow.id, "from_number": sim.from_number,
            "to_number": sim.to_number, "caller_known": bool(caller.get("known")),
            "customer_id": caller.get("customer_id") or None, "started_at": at.isoformat(),
            "is_test": False, "parent_call_sid": None,
        }]
        records += [{"type": "step", "call_sid": sid, **s} for s in sim.steps]
        if voicemail:
            records.append({"type": "recording", "call_sid": sid, "seq": voicemail["seq"],
                            "url": voicemail["url"], "duration_s": 20, "at": t.isoformat()})
        records.append({"type": "call_ended", "call_sid": sid, "status": "completed", "duration_s": duration,
                        "ended_at": t.isoformat(), "outcome": ended.get("outcome"),
                        "last_node": ended.get("last_node")})
        if callback is not None:
            callback = self._callback_outcome(callback, sim, at)
        return records, callback, ({"call_sid": sid, **voicemail} if voicemail else None)

    def _menu_answer(self, sim: SimulatedCall, person: _Caller, tries: int, t: datetime,
                     heard: float) -> tuple[E.Event, datetime]:
        rng = self.rng
        if sim.waiting_for is Wait.CONFIRM:
            t += timedelta(seconds=heard + rng.uniform(0.5, 2))
            return (E.Speech("yes", 0.9) if rng.random() < 0.85 else E.Speech("no", 0.88)), t
        if sim.state.get("served") and rng.random() < 0.6:  # told what they called for: done
            t += timedelta(seconds=heard * rng.uniform(0.5, 1.0))
            return E.HangUp("completed", None), t
        if person.style == "quitter" or (tries > 2 and rng.random() < 0.3):
            t += timedelta(seconds=heard * rng.uniform(0.3, 1.0))
            return E.HangUp("completed", None), t
        menu = sim.flow.nodes.get(sim.node)
        choices = [c for c in getattr(menu, "choices", ()) if c.key]
        style = person.style
        if style == "silent" and tries == 1:
            t += timedelta(seconds=heard + 5)
            return E.NoInput(), t
        if style == "speak" and tries == 2 and rng.random() < 0.5:
            style = "keys"  # not understood: half of them turn to the keypad
        if style == "speak" and tries <= 2:
            t += timedelta(seconds=heard + rng.uniform(0.5, 2.5))
            if rng.random() < 0.14:
                return E.Speech(rng.choice(NOT_UNDERSTOOD), round(rng.uniform(0.3, 0.8), 2)), t
            intent = rng.choices(list(self.intent_sayings), self._intent_weights())[0]
            return E.Speech(rng.choice(self.intent_sayings[intent]), round(rng.uniform(0.62, 0.97), 2)), t
        if not choices:
            t += timedelta(seconds=heard + 5)
            return E.NoInput(), t
        if rng.random() < 0.03:
            t += timedelta(seconds=heard * 0.8)
            return E.Digits("7"), t
        weights = [{"1": 0.3, "2": 0.18, "3": 0.3, "4": 0.07, "0": 0.15}.get(c.key, 0.1) for c in choices]
        choice = rng.choices(choices, weights)[0]
        # a keypad caller presses as soon as they hear their option
        position = (choices.index(choice) + 1) / len(choices)
        t += timedelta(seconds=heard * (0.45 + 0.55 * position) + rng.uniform(0.3, 1.5))
        return E.Digits(choice.key), t

    def _intent_weights(self) -> list[float]:
        weights = {"billing": 0.3, "orders": 0.17, "technical": 0.3, "cancellation": 0.08, "agent": 0.15}
        return [weights.get(name, 0.1) for name in self.intent_sayings]

    def _queue(self, sim: SimulatedCall, person: _Caller, entered: datetime, wait: float, t: datetime,
               sid: str) -> tuple[E.Event, datetime, dict | None]:
        """The next thing that happens in the queue: a wait cycle, an offer taken, an answer, a hang-up."""
        rng = self.rng
        cycle = sum(1 for s in sim.steps if s["event"] == "queue_wait")
        elapsed = (t - entered).total_seconds()
        offered = any((s.get("detail") or {}).get("callback_offered") for s in sim.steps[-1:])
        if offered and rng.random() < 0.45:
            t += timedelta(seconds=rng.uniform(4, 12))
            booking = {"queue": self._queue_name(sim), "enqueued_at": entered, "requested_at": t,
                       "call_sid": sid}
            return E.Digits("1"), t, booking
        next_cycle = 1.0 if cycle == 0 else elapsed + rng.uniform(30, 45)
        end_of_wait = min(wait, person.patience)
        if next_cycle < end_of_wait and cycle < 25:
            t = entered + timedelta(seconds=next_cycle)
            return E.QueueWait(1 + int((end_of_wait - next_cycle) / 90), int(next_cycle), 60, 3), t, None
        if person.patience < wait:
            t = entered + timedelta(seconds=person.patience)
            return E.QueueLeft("hangup", int(person.patience)), t, None
        talk = rng.uniform(*TALK_S)
        t = entered + timedelta(seconds=wait + talk)  # Twilio reports the queue's end after the talk
        return E.QueueLeft("bridged", int(wait)), t, None

    @staticmethod
    def _queue_name(sim: SimulatedCall) -> str:
        for s in reversed(sim.steps):
            if (s.get("action") or "").startswith("enqueue:"):
                return s["action"].split(":", 1)[1]
        return "general"

    def _callback_question(self, sim: SimulatedCall, person: _Caller, t: datetime,
                           heard: float) -> tuple[E.Event, datetime]:
        rng = self.rng
        phase = (sim.state.get("cb") or {}).get("phase")
        t += timedelta(seconds=heard + rng.uniform(1, 3))
        if phase == "enter":
            return E.Digits(f"{rng.choice([212, 415, 617])}555{rng.randrange(1000, 9999):04d}"), t
        if phase == "reason":
            t += timedelta(seconds=rng.uniform(4, 15))
            url = f"https://api.twilio.com/demo/Recordings/RE{rng.getrandbits(64):016x}"
            return E.RecordingDone(url, 8), t
        return E.Digits("1"), t

    def _callback_outcome(self, booking: dict, sim: SimulatedCall, at: datetime) -> dict | None:
        """What became of a booked callback, as the callback machinery's snapshot."""
        requests = sim.actions(A.RequestCallback)
        if not requests:
            return None
        req = requests[-1]
        rng = self.rng
        cid = CALLBACK_PREFIX + booking["call_sid"][len(CALL_PREFIX):]
        requested = booking["requested_at"]
        expected = BASE_WAIT_S.get(req.queue, 40.0) * max(0.3, self.load(requested)) ** LOAD_EXPONENT
        status = rng.choices(["completed", "failed", "expired", "cancelled"], [0.8, 0.09, 0.05, 0.06])[0]
        connect = requested + timedelta(seconds=expected * rng.uniform(0.8, 2.0) + rng.uniform(20, 90))
        attempts = 1 if status == "completed" and rng.random() < 0.85 else rng.randint(2, 3)
        if status == "completed":
            connect += timedelta(seconds=(attempts - 1) * 300)
        ended = connect + timedelta(seconds=rng.uniform(*TALK_S))
        if status != "completed" and status != "cancelled":
            ended = requested + timedelta(seconds=300 * attempts + 60)
        if ended > self.end:
            status, ended, connect = "pending", None, None
        snap: dict[str, Any] = {
            "type": "callback", "id": cid, "status": status, "queue": req.queue, "number": req.number,
            "call_sid": booking["call_sid"], "flow": req.flow, "origin_flow": self.flow.id,
            "enqueued_at": _epoch(booking["enqueued_at"]), "requested_at": _epoch(requested),
            "expires_at": _epoch(requested + timedelta(seconds=req.expire_after)),
            "attempts": attempts if status != "pending" else 0, "max_attempts": req.max_attempts,
            "v": 5 if status != "pending" else 1, "updated_at": _epoch(ended or requested),
        }
        if status == "completed":
            snap.update(connected_at=_epoch(connect), ended_at=_epoch(ended), agent="demo-agent",
                        wait_s=f"{(connect - requested).total_seconds():.3f}", result="completed")
        elif status in ("failed", "expired", "cancelled"):
            snap.update(ended_at=_epoch(ended), result="no-answer" if status == "failed" else "",
                        closed_reason={"failed": "no answer after 3 attempts",
                                       "expired": "not reached within 4 hours",
                                       "cancelled": "cancelled by the caller"}[status])
        return snap

    # -- the whole period -----------------------------------------------------------------

    def run(self) -> DemoStats:
        stats = DemoStats()
        times = self.arrivals()
        pending: list[dict] = []
        transcripts: list[dict] = []
        for i, at in enumerate(times):
            records, callback, voicemail = self.call(i, at)
            pending += records
            if callback:
                pending.append(callback)
                stats.callbacks += 1
            if voicemail:
                transcripts.append(voicemail)
            stats.calls += 1
            stats.steps += sum(1 for r in records if r["type"] == "step")
            outcome = next(r for r in records if r["type"] == "call_ended")["outcome"] or "unknown"
            stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1
            if (i + 1) % self.batch == 0:
                self.store.record(pending)
                pending = []
                if self.progress:
                    self.progress(i + 1, len(times))
        if pending:
            self.store.record(pending)
        for v in transcripts:
            self.store.update_recording(v["call_sid"], v["seq"], v["url"], transcript=v["transcript"])
        if self.progress:
            self.progress(len(times), len(times))
        return stats


def remove(store: Any) -> int:
    """Delete every demo call and callback; returns how many calls."""
    from ivr.calllog.store import (
        call_metrics,
        callback_attempts,
        callbacks,
        calls,
        menu_metrics,
        recordings,
        steps,
    )

    like = CALL_PREFIX + "%"
    with store.begin_write() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(calls)
                         .where(calls.c.call_sid.like(like))).scalar()
        for table in (steps, recordings, call_metrics, menu_metrics, calls):
            conn.execute(table.delete().where(table.c.call_sid.like(like)))
        conn.execute(callback_attempts.delete()
                     .where(callback_attempts.c.callback_id.like(CALLBACK_PREFIX + "%")))
        conn.execute(callbacks.delete().where(callbacks.c.id.like(CALLBACK_PREFIX + "%")))
    return int(n or 0)


def _epoch(value: datetime) -> str:
    return f"{value.timestamp():.3f}"


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal for large ones)."""
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _flow_zone(flow: Flow) -> ZoneInfo:
    """The time zone of the flow's business hours (the callers' local time), else UTC."""
    for hours in flow.hours.values():
        zone = getattr(hours, "timezone", None) or getattr(hours, "tz", None)
        if isinstance(zone, ZoneInfo):
            return zone
        if isinstance(zone, str):
            return ZoneInfo(zone)
    return ZoneInfo("UTC")
