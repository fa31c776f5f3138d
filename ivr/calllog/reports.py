"""Wait-time reports for supervisors: SQL over the per-call summaries.

Every measure here is an aggregate of `call_metrics` (one row per ended call, see
ivr/metrics.py), `menu_metrics` (one row per menu a call went through) and `callbacks`, so a
report never scans the step log. Times are UTC in the store; grouping by hour happens in SQL
on UTC hours and is turned into the display time zone here, which is exact for every zone
whose offset is a whole number of hours.

The definitions are written out for supervisors in docs/supervisor-guide.md; keep the two in
step.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import sqlalchemy as sa

from ivr.engine import states
from ivr.engine.states import CALLBACK_FINAL, CallbackStatus, Outcome

from .store import Store, call_metrics, callbacks, calls, menu_metrics, service_metrics

cm = call_metrics

# Wait-time distribution buckets (seconds): [0, 10), [10, 20) ... [600, inf)
WAIT_EDGES = (0, 10, 20, 30, 60, 120, 180, 300, 600)
OUTCOME_LABELS = {
    Outcome.COMPLETED: "resolved in the IVR", Outcome.QUEUED: "answered from a queue",
    Outcome.TRANSFERRED: "transferred", Outcome.VOICEMAIL: "left a message",
    Outcome.CALLBACK: "took a callback", Outcome.ABANDONED: "abandoned", Outcome.FAILED: "failed",
    None: "unknown",
}
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def zone(name: str) -> ZoneInfo:
    """The display time zone; ValueError with a readable message when the name is unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Europe/London") from None


@dataclass(frozen=True)
class Filters:
    """Which calls a report covers. `since`/`until` are aware datetimes (until excluded)."""

    since: datetime | None = None
    until: datetime | None = None
    flow: str | None = None
    queue: str | None = None
    include_tests: bool = False
    threshold_s: int = 20
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))

    def where(self, table: sa.Table = cm, queue: bool = True) -> list:
        """SQL conditions for a summary table (`call_metrics` or `menu_metrics`)."""
        out = [table.c.direction == "inbound"]
        if self.since is not None:
            out.append(table.c.started_at >= self.since)
        if self.until is not None:
            out.append(table.c.started_at < self.until)
        if not self.include_tests:
            out.append(table.c.is_test.is_(False))
        if self.flow:
            out.append(table.c.flow == self.flow)
        if queue and self.queue:
            out.append(table.c.queue == self.queue)
        return out

    def describe(self) -> dict:
        return {"since": _iso(self.since), "until": _iso(self.until), "timezone": self.tz.key,
                "flow": self.flow, "queue": self.queue, "include_tests": self.include_tests,
                "service_level_threshold_s": self.threshold_s}


_RELATIVE = re.compile(r"^(\d+)\s*([dhw])$")


def parse_when(text: str | None, tz: ZoneInfo, end: bool = False,
               now: datetime | None = None) -> datetime | None:
    """A point in time from what a person types, in the display time zone.

    `2026-11-01` is that day's midnight (for an end: the next midnight, so the day is
    included); `2026-11-01T08:30` and ISO times with an offset are taken as written; `7d`,
    `24h`, `2w` count back from now; `today` and `yesterday` are local midnights.
    """
    if text is None or not text.strip():
        return None
    text = text.strip()
    now = now or datetime.now(UTC)
    local_today = now.astimezone(tz).date()
    lowered = text.lower()
    if lowered in ("now",):
        return now
    if lowered in ("today", "yesterday"):
        day = local_today - timedelta(days=1 if lowered == "yesterday" else 0)
        return _midnight(day + timedelta(days=1) if end else day, tz)
    try:
        m = _RELATIVE.match(lowered)
        if m:
            amount, unit = int(m.group(1)), m.group(2)
            return now - {"d": timedelta(days=amount), "h": timedelta(hours=amount),
                          "w": timedelta(weeks=amount)}[unit]
        if len(text) == 10:
            day = date.fromisoformat(text)
            return _midnight(day + timedelta(days=1) if end else day, tz)
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except OverflowError:  # 99999999d, 9999-12-31 as an end: beyond what a date can hold
        raise ValueError(f"'{text}' is too far from today: write a period between the years 1 and "
                         "9999") from None
    except ValueError:
        raise ValueError(f"'{text}' is not a date or time: write 2026-11-01, 2026-11-01T08:30, "
                         "7d, 24h, today or yesterday") from None
    return value.replace(tzinfo=tz) if value.tzinfo is None else value


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def filters(since: str | None = None, until: str | None = None, *, tz: str = "UTC", flow: str | None = None,
            queue: str | None = None, include_tests: bool = False, threshold_s: int = 20,
            default_days: int = 7, now: datetime | None = None) -> Filters:
    """Filters from text, as typed on the command line or in the dashboard's form."""
    zone_info = zone(tz)
    now = now or datetime.now(UTC)
    start = parse_when(since, zone_info, now=now)
    end = parse_when(until, zone_info, end=True, now=now)
    if start is None:
        try:
            start = (end or now) - timedelta(days=default_days)
        except OverflowError:
            raise ValueError("the period must end after the first week of the year 1") from None
    if end is not None and end <= start:
        raise ValueError("the end of the period must come after its start")
    return Filters(since=start, until=end, flow=flow or None, queue=queue or None,
                   include_tests=include_tests, threshold_s=threshold_s, tz=zone_info)


# -- SQL helpers ----------------------------------------------------------------------------


def _count_if(cond: Any) -> Any:
    return sa.func.sum(sa.case((cond, 1), else_=0))


def _avg_if(cond: Any, value: Any) -> Any:
    return sa.func.avg(sa.case((cond, value), else_=None))


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int:
    return int(value or 0)


def _rate(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _round(value: Any, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# Calls offered to a person: they reached a queue or a transfer. Callers who took a
# callback instead of holding are counted by the callback measures, not here.
OFFERED = sa.and_(cm.c.destination_kind.in_(("queue", "transfer")), cm.c.callback.is_(False))
ABANDONED = cm.c.outcome == Outcome.ABANDONED
# The call could not be served (Twilio failed it, or the flow did): not the caller's choice, so
# neither abandoned nor counted in the abandonment rate's calls.
FAILED = cm.c.outcome == Outcome.FAILED
SERVED = sa.or_(cm.c.answered.is_(True), cm.c.outcome.in_(sorted(states.SERVED)))


def _answered_within(threshold_s: int) -> Any:
    return sa.and_(cm.c.answered.is_(True), cm.c.answer_wait_s <= threshold_s)


def _measure_columns(threshold_s: int) -> list:
    """The aggregates shared by the whole period, each queue and each hour."""
    return [
        sa.func.count().label("calls"),
        _count_if(OFFERED).label("offered"),
        _count_if(sa.and_(OFFERED, cm.c.answered.is_(True))).label("answered"),
        _count_if(sa.and_(OFFERED, _answered_within(threshold_s))).label("answered_within"),
        _avg_if(sa.and_(OFFERED, cm.c.answered.is_(True)), cm.c.answer_wait_s).label("asa"),
        _count_if(ABANDONED).label("abandoned"),
        _count_if(sa.and_(OFFERED, ABANDONED)).label("abandoned_waiting"),
        _count_if(FAILED).label("failed"),
        _count_if(cm.c.callback.is_(True)).label("callbacks"),
        _count_if(cm.c.caller_known.is_(True)).label("known"),
    ]


def _measures(row: Any) -> dict:
    calls_n = _int(row.calls)
    offered = _int(row.offered)
    callbacks_n = _int(row.callbacks)
    return {
        "calls": calls_n,
        "offered": offered,
        "answered": _int(row.answered),
        "answered_within_threshold": _int(row.answered_within),
        "service_level": _rate(_int(row.answered_within), offered),
        "average_speed_of_answer_s": _round(row.asa),
        "abandoned": _int(row.abandoned),
        "abandonment_rate": _rate(_int(row.abandoned), calls_n - callbacks_n - _int(row.failed)),
        "abandoned_while_waiting": _int(row.abandoned_waiting),
        "failed": _int(row.failed),
        "callbacks_requested": callbacks_n,
        "known_caller_rate": _rate(_int(row.known), calls_n),
    }


# -- the overview ---------------------------------------------------------------------------


def overview(store: Store, f: Filters) -> dict:
    """Every period measure the dashboard and `ivr report` show, as one JSON-able dict."""
    where = f.where()
    with store.engine.connect() as conn:
        totals = conn.execute(sa.select(
            *_measure_columns(f.threshold_s),
            _count_if(cm.c.spoke.is_(True)).label("spoke"),
            _count_if(sa.and_(cm.c.spoke.is_(True), cm.c.intent_recognised.is_(True))).label("recognised"),
            _count_if(cm.c.repeat_24h.is_(True)).label("repeat_24h"),
            _count_if(cm.c.repeat_7d.is_(True)).label("repeat_7d"),
            _count_if(cm.c.destination.is_not(None)).label("reached"),
            sa.func.avg(cm.c.first_prompt_s).label("first_prompt"),
            sa.func.avg(cm.c.time_to_destination_s).label("to_destination"),
            sa.func.avg(cm.c.menu_steps).label("menu_steps"),
            sa.func.avg(cm.c.prompt_s).label("prompt_s"),
            _avg_if(cm.c.destination_kind == "queue", cm.c.queue_wait_s).label("queue_wait"),
            sa.func.max(cm.c.queue_wait_s).label("longest_wait"),
            _count_if(sa.and_(cm.c.destination.is_not(None), SERVED)).label("served"),  # a funnel stage
        ).where(*where)).one()
        outcomes = conn.execute(sa.select(cm.c.outcome, sa.func.count()).where(*where)
                                .group_by(cm.c.outcome)).all()
        by_node = conn.execute(
            sa.select(cm.c.last_node, cm.c.last_kind, (cm.c.destination.is_(None)).label("before"),
                      sa.func.count())
            .where(*where, ABANDONED)
            .group_by(cm.c.last_node, cm.c.last_kind, cm.c.destination.is_(None))).all()
        queues = conn.execute(
            sa.select(cm.c.queue, *_measure_columns(f.threshold_s),
                      _avg_if(cm.c.destination_kind == "queue", cm.c.queue_wait_s).label("wait"),
                      sa.func.max(cm.c.queue_wait_s).label("longest"))
            .where(*where, cm.c.queue.is_not(None)).group_by(cm.c.queue).order_by(cm.c.queue)).all()
        hours = conn.execute(sa.select(cm.c.start_hour, *_measure_columns(f.threshold_s))
                             .where(*where).group_by(cm.c.start_hour)).all()
        histogram = _wait_histogram(conn, where)
        menus = _menus(conn, f)
        self_service = _self_service(conn, f)
        flows = [r[0] for r in conn.execute(sa.select(cm.c.flow).where(*f.where(queue=False))
                                            .group_by(cm.c.flow)) if r[0]]
        callback_stats = _callbacks(conn, f)

    report: dict[str, Any] = {"period": f.describe(), **_measures(totals)}
    calls_n = report["calls"]
    report.update({
        "abandoned_by_node": {},
        "outcomes": {(k or "unknown"): _int(v) for k, v in sorted(outcomes, key=lambda r: -r[1])},
        "spoke": _int(totals.spoke),
        "intent_recognised_rate": _rate(_int(totals.recognised), _int(totals.spoke)),
        "repeat_24h_rate": _rate(_int(totals.repeat_24h), calls_n),
        "repeat_7d_rate": _rate(_int(totals.repeat_7d), calls_n),
        "averages": {
            "first_prompt_s": _round(totals.first_prompt),
            "time_to_destination_s": _round(totals.to_destination),
            "menu_steps": _round(totals.menu_steps, 2),
            "prompt_s": _round(totals.prompt_s),
            "queue_wait_s": _round(totals.queue_wait),
            "longest_queue_wait_s": _round(totals.longest_wait),
        },
        "queues": [{"queue": q.queue, **_measures(q), "average_wait_s": _round(q.wait),
                    "longest_wait_s": _round(q.longest),
                    "callbacks": callback_stats["by_queue"].get(q.queue, _callback_summary({}, [], []))}
                   for q in queues],
        "menus": menus,
        "self_service": self_service,
        "callbacks": callback_stats,
        "wait_histogram": histogram,
        "flows": flows,
    })
    abandoned_nodes: dict[str, dict] = {}
    for node, kind, before, n in by_node:
        entry = abandoned_nodes.setdefault(node or "(unknown)", {"node": node or "(unknown)", "kind": kind,
                                                                 "abandoned": 0, "before_destination": 0})
        entry["abandoned"] += _int(n)
        entry["before_destination"] += _int(n) if before else 0
    ordered = sorted(abandoned_nodes.values(), key=lambda e: -e["abandoned"])
    report["abandoned_by_node"] = {e["node"]: e["abandoned"] for e in ordered}
    report["funnel"] = _funnel(calls_n, _int(totals.reached), _int(totals.served), ordered)
    report.update(_time_series(hours, f))
    return report


def _wait_histogram(conn: sa.Connection, where: list) -> list[dict]:
    """How long queue callers waited: answered (wait until answered), abandoned (until they
    hung up), callback (until they chose one) and other (left unanswered, e.g. to voicemail)."""
    wait = sa.func.coalesce(cm.c.answer_wait_s, cm.c.queue_wait_s, 0)
    bucket = sa.case(*[(wait < hi, i) for i, hi in enumerate(WAIT_EDGES[1:])], else_=len(WAIT_EDGES) - 1)
    series = sa.case((cm.c.answered.is_(True), "answered"), (cm.c.callback.is_(True), "callback"),
                     (ABANDONED, "abandoned"), else_="other")
    rows = conn.execute(sa.select(bucket.label("b"), series.label("s"), sa.func.count())
                        .where(*where, cm.c.destination_kind == "queue").group_by(bucket, series)).all()
    out = []
    for i, lo in enumerate(WAIT_EDGES):
        hi = WAIT_EDGES[i + 1] if i + 1 < len(WAIT_EDGES) else None
        label = f"{_short(lo)}–{_short(hi)}" if hi is not None else f"{_short(lo)}+"
        out.append({"label": label, "from_s": lo, "to_s": hi, "answered": 0, "abandoned": 0,
                    "callback": 0, "other": 0})
    for b, s, n in rows:
        out[int(b)][s] += _int(n)
    return out


def _short(seconds: int | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds // 60}m" if seconds >= 60 and seconds % 60 == 0 else f"{seconds}s"


def _funnel(calls_n: int, reached: int, served: int, nodes: list[dict]) -> list[dict]:
    """Calls -> reached a destination -> served, with the nodes where callers hung up."""
    before = [{"node": e["node"], "kind": e["kind"], "abandoned": e["before_destination"]}
              for e in nodes if e["before_destination"]]
    after = [{"node": e["node"], "kind": e["kind"], "abandoned": e["abandoned"] - e["before_destination"]}
             for e in nodes if e["abandoned"] > e["before_destination"]]
    return [
        {"stage": "Calls answered by the IVR", "calls": calls_n, "lost": []},
        {"stage": "Reached a destination", "calls": reached, "lost": before},
        {"stage": "Served", "calls": served, "lost": after},
    ]


def _menus(conn: sa.Connection, f: Filters) -> list[dict]:
    mm = menu_metrics
    spoke = _count_if(mm.c.speech_inputs > 0)
    rows = conn.execute(sa.select(
        mm.c.flow, mm.c.node, sa.func.count().label("calls"), sa.func.sum(mm.c.visits).label("visits"),
        sa.func.sum(mm.c.speech_inputs).label("speech"),
        sa.func.sum(mm.c.speech_recognised).label("recognised"),
        sa.func.sum(mm.c.keypad_inputs).label("keypad"), spoke.label("spoke"),
        _count_if(mm.c.keypad_after_speech > 0).label("fell_back"),
        sa.func.sum(mm.c.no_input).label("no_input"), sa.func.sum(mm.c.no_match).label("no_match"),
        sa.func.sum(mm.c.confirmations).label("confirmations"),
        sa.func.sum(mm.c.confirm_rejected).label("rejected"), sa.func.sum(mm.c.escaped).label("escaped"),
    ).where(*f.where(mm)).group_by(mm.c.flow, mm.c.node).order_by(sa.func.count().desc())).all()
    return [{
        "flow": r.flow, "node": r.node, "calls": _int(r.calls), "visits": _int(r.visits),
        "speech_inputs": _int(r.speech), "keypad_inputs": _int(r.keypad), "callers_who_spoke": _int(r.spoke),
        "speech_share": _rate(_int(r.spoke), _int(r.calls)),
        "recognition_rate": _rate(_int(r.recognised), _int(r.speech)),
        "keypad_fallback_rate": _rate(_int(r.fell_back), _int(r.spoke)),
        "no_input": _int(r.no_input), "no_match": _int(r.no_match),
        "confirmations": _int(r.confirmations), "confirmations_rejected": _int(r.rejected),
        "escaped": _int(r.escaped), "escape_rate": _rate(_int(r.escaped), _int(r.calls)),
    } for r in rows]


def _self_service(conn: sa.Connection, f: Filters) -> dict:
    """Calls the IVR resolved with an answer from the company's systems: overall, and for each
    self-service node (`request`)."""
    totals = conn.execute(sa.select(
        sa.func.count().label("calls"),
        _count_if(cm.c.self_service.is_(True)).label("answered"),
        _count_if(sa.and_(cm.c.self_service.is_(True), cm.c.outcome == Outcome.COMPLETED)).label("resolved"),
    ).where(*f.where())).one()
    sm = service_metrics
    rows = conn.execute(sa.select(
        sm.c.flow, sm.c.node, sa.func.count().label("calls"), sa.func.sum(sm.c.requests).label("requests"),
        sa.func.sum(sm.c.answered).label("answered"), sa.func.sum(sm.c.errors).label("errors"),
        sa.func.sum(sm.c.waited).label("waited"), sa.func.sum(sm.c.ms_total).label("ms"),
        _count_if(sm.c.resolved.is_(True)).label("resolved"),
    ).where(*f.where(sm)).group_by(sm.c.flow, sm.c.node).order_by(sa.func.count().desc(), sm.c.node)).all()
    calls_n = _int(totals.calls)
    return {
        "calls_answered": _int(totals.answered),
        "resolved": _int(totals.resolved),
        "resolved_rate": _rate(_int(totals.resolved), calls_n),
        "by_node": [{
            "flow": r.flow, "node": r.node, "calls": _int(r.calls), "requests": _int(r.requests),
            "answered": _int(r.answered), "errors": _int(r.errors),
            "error_rate": _rate(_int(r.errors), _int(r.requests)),
            "average_ms": _round(_int(r.ms) / _int(r.requests), 0) if _int(r.requests) else None,
            "waited_rate": _rate(_int(r.waited), _int(r.requests)),
            "resolved": _int(r.resolved), "resolved_rate": _rate(_int(r.resolved), _int(r.calls)),
        } for r in rows],
    }


def _callbacks(conn: sa.Connection, f: Filters) -> dict:
    cb = callbacks
    query = (sa.select(cb.c.status, cb.c.wait_s, cb.c.attempts, cb.c.queue)
             .select_from(cb.outerjoin(calls, calls.c.call_sid == cb.c.call_sid)))
    if f.since is not None:
        query = query.where(cb.c.requested_at >= f.since)
    if f.until is not None:
        query = query.where(cb.c.requested_at < f.until)
    if f.flow:
        query = query.where(sa.func.coalesce(cb.c.origin_flow, calls.c.flow) == f.flow)
    if f.queue:
        query = query.where(cb.c.queue == f.queue)
    if not f.include_tests:
        query = query.where(sa.func.coalesce(calls.c.is_test, sa.false()).is_(False))
    by_status: dict[str, int] = {}
    waits: list[float] = []
    attempts: list[int] = []
    queues: dict[str, tuple[dict, list, list]] = {}
    for status, wait, tries, queue in conn.execute(query):
        for counts, w, a in ((by_status, waits, attempts), queues.setdefault(queue, ({}, [], []))):
            counts[status] = counts.get(status, 0) + 1
            if status == CallbackStatus.COMPLETED:
                a.append(int(tries or 0))
                if wait is not None:
                    w.append(float(wait))
    summary = _callback_summary(by_status, waits, attempts)
    summary["by_queue"] = {q: _callback_summary(*v) for q, v in sorted(queues.items())}
    return summary


def _callback_summary(by_status: dict[str, int], waits: list[float], attempts: list[int]) -> dict:
    """Requested, kept (the agent reached the caller) and the wait of the kept ones."""
    finished = sum(by_status.get(s, 0) for s in CALLBACK_FINAL)
    kept = by_status.get(CallbackStatus.COMPLETED, 0)
    waits.sort()
    return {
        "requested": sum(by_status.values()),
        "by_status": dict(sorted(by_status.items(), key=lambda kv: -kv[1])),
        "kept": kept,
        "finished": finished,
        "kept_rate": _rate(kept, finished),
        "wait_s": {
            "average": _round(statistics.fmean(waits)) if waits else None,
            "median": _round(statistics.median(waits)) if waits else None,
            "p90": _round(waits[min(len(waits) - 1, int(round(0.9 * (len(waits) - 1))))]) if waits else None,
        },
        "attempts_per_kept": _round(statistics.fmean(attempts), 2) if attempts else None,
    }


def _time_series(hours: list, f: Filters) -> dict:
    """Calls by local hour of day and weekday, and the service level over time."""
    by_hour = [0] * 24
    heatmap = [[0] * 24 for _ in range(7)]
    buckets: dict[str, dict] = {}
    span = (f.until or datetime.now(UTC)) - (f.since or datetime.now(UTC))
    hourly = span <= timedelta(days=3)
    for row in hours:
        local = datetime.fromtimestamp(int(row.start_hour) * 3600, UTC).astimezone(f.tz)
        m = _measures(row)
        by_hour[local.hour] += m["calls"]
        heatmap[local.weekday()][local.hour] += m["calls"]
        key = local.strftime("%Y-%m-%d %H:00") if hourly else local.strftime("%Y-%m-%d")
        b = buckets.setdefault(key, {"at": key, "calls": 0, "offered": 0, "answered_within_threshold": 0,
                                     "answered": 0, "abandoned": 0, "failed": 0, "callbacks": 0})
        for k in ("calls", "offered", "answered_within_threshold", "answered", "abandoned", "failed"):
            b[k] += m[k]
        b["callbacks"] += m["callbacks_requested"]
    series = []
    for key in sorted(buckets):
        b = buckets[key]
        b["service_level"] = _rate(b["answered_within_threshold"], b["offered"])
        b["abandonment_rate"] = _rate(b["abandoned"], b["calls"] - b["callbacks"] - b["failed"])
        series.append(b)
    return {"calls_by_hour": by_hour, "heatmap": {"weekdays": list(WEEKDAYS), "calls": heatmap},
            "service_level_over_time": {"step": "hour" if hourly else "day", "points": series}}


# -- calls ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallQuery:
    """Filters of the call list on top of the period ones."""

    outcome: str | None = None
    known: bool | None = None
    number: str | None = None
    node: str | None = None  # calls that ended at this node


def _call_conditions(f: Filters, q: CallQuery) -> list:
    where = f.where()
    if q.outcome:
        where.append(cm.c.outcome == q.outcome if q.outcome != "unknown" else cm.c.outcome.is_(None))
    if q.known is not None:
        where.append(cm.c.caller_known.is_(q.known))
    if q.number:
        digits = re.sub(r"[^0-9]", "", q.number)
        if digits:
            where.append(cm.c.from_number.like(f"%{digits}%"))
    if q.node:
        where.append(cm.c.last_node == q.node)
    return where


def call_list(store: Store, f: Filters, q: CallQuery = CallQuery(), limit: int | None = 50,
              offset: int = 0) -> tuple[list[dict], int]:
    """A page of calls (newest first) with their measures and callback, and the total count."""
    where = _call_conditions(f, q)
    query = sa.select(cm).where(*where).order_by(cm.c.started_at.desc(), cm.c.call_sid)
    if limit is not None:
        query = query.limit(limit).offset(offset)
    with store.engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(cm).where(*where)).scalar() or 0
        rows = [dict(r._mapping) for r in conn.execute(query)]
        _attach_callbacks(conn, rows)
    return rows, int(total)


def iter_calls(store: Store, f: Filters, q: CallQuery = CallQuery(), chunk: int = 2000) -> Iterator[dict]:
    """Every call of the filters, newest first, in chunks (for exports)."""
    where = _call_conditions(f, q)
    last: tuple[datetime, str] | None = None
    while True:
        query = (sa.select(cm).where(*where).order_by(cm.c.started_at.desc(), cm.c.call_sid.desc())
                 .limit(chunk))
        if last is not None:
            query = query.where(sa.or_(cm.c.started_at < last[0],
                                       sa.and_(cm.c.started_at == last[0], cm.c.call_sid < last[1])))
        with store.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
            _attach_callbacks(conn, rows)
        if not rows:
            return
        yield from rows
        last = (rows[-1]["started_at"], rows[-1]["call_sid"])


def _attach_callbacks(conn: sa.Connection, rows: list[dict]) -> None:
    sids = [r["call_sid"] for r in rows if r.get("callback")]
    found: dict[str, dict] = {}
    if sids:
        for cb in conn.execute(sa.select(callbacks).where(callbacks.c.call_sid.in_(sids))
                               .order_by(callbacks.c.requested_at)):
            found[cb.call_sid] = dict(cb._mapping)
    for r in rows:
        cb = found.get(r["call_sid"])
        r["callback_status"] = cb["status"] if cb else None
        r["callback_wait_s"] = _round(cb["wait_s"]) if cb and cb["wait_s"] is not None else None
        r["callback_id"] = cb["id"] if cb else None


def call_detail(store: Store, call_sid: str) -> dict | None:
    """One call: its row, measures, steps, recordings, callbacks, callback calls and texts."""
    call = store.call(call_sid)
    if call is None:
        return None
    with store.engine.connect() as conn:
        metrics = conn.execute(sa.select(cm).where(cm.c.call_sid == call_sid)).first()
        cbs = [dict(r._mapping) for r in conn.execute(
            sa.select(callbacks).where(callbacks.c.call_sid == call_sid).order_by(callbacks.c.requested_at))]
        legs = [dict(r._mapping) for r in conn.execute(
            sa.select(calls).where(calls.c.parent_call_sid == call_sid).order_by(calls.c.started_at))]
    steps = store.steps(call_sid)
    started = call["started_at"]
    queue_enter: datetime | None = None
    for s in steps:
        s["offset_s"] = max(0.0, round((s["at"] - started).total_seconds(), 1))
        detail = s.get("detail") or {}
        if s["event"] == "enter" and (s.get("action") or "").startswith("enqueue:"):
            queue_enter = s["at"]
        qt = detail.get("queue_time") if isinstance(detail, dict) else None
        if qt is None and queue_enter is not None and s["event"] in ("queue_wait", "queue_left", "hangup") \
                and s.get("kind") == "queue":
            qt = round((s["at"] - queue_enter).total_seconds())
        s["queue_time"] = qt if s.get("kind") == "queue" and s["event"] != "enter" else None
        if s["event"] == "queue_left":
            queue_enter = None
    return {"call": call, "metrics": dict(metrics._mapping) if metrics else None, "steps": steps,
            "recordings": store.recordings(call_sid), "callbacks": cbs, "callback_calls": legs,
            "messages": store.messages(call_sid)}


# -- presentation helpers (CLI, dashboard, CSV) -----------------------------------------------


def mask_number(number: str | None) -> str:
    """A caller's number with all but the country code and last two digits hidden."""
    if not number:
        return ""
    digits = re.sub(r"[^0-9]", "", number)
    if len(digits) <= 4:
        return "*" * len(digits)
    prefix = ""
    try:
        parsed = phonenumbers.parse(number if number.startswith("+") else "+" + digits, None)
        prefix = f"+{parsed.country_code} "
        digits = str(parsed.national_number)
    except phonenumbers.NumberParseException:
        prefix = "+" if number.startswith("+") else ""
    return prefix + "*" * (len(digits) - 2) + digits[-2:]


CSV_COLUMNS = (
    "call_sid", "started_at", "flow", "from_number", "caller_known", "outcome", "last_node",
    "destination", "destination_kind", "queue", "first_prompt_s", "time_to_destination_s",
    "menu_steps", "prompt_s", "queue_wait_s", "answered", "answer_wait_s", "callback",
    "callback_status", "callback_wait_s", "intent", "intent_recognised", "repeat_24h", "repeat_7d",
    "duration_s", "is_test",
)


def csv_row(row: dict, tz: ZoneInfo, mask: bool) -> list:
    """One call as CSV cells: times in the display zone, booleans as 0/1."""
    out = []
    for col in CSV_COLUMNS:
        value = row.get(col)
        if col == "started_at" and value is not None:
            value = value.astimezone(tz).isoformat(timespec="seconds")
        elif col == "from_number":
            value = mask_number(value) if mask else (value or "")
        elif isinstance(value, bool):
            value = int(value)
        out.append("" if value is None else value)
    return out


def queue_table(report: dict) -> list[dict]:
    """Per-queue rows plus an "all" row, the shape `ivr report --csv` prints."""
    keys = ("calls", "offered", "answered", "answered_within_threshold", "service_level",
            "average_speed_of_answer_s", "abandoned", "abandonment_rate", "callbacks_requested")
    rows = [{"queue": "(all calls)", **{k: report[k] for k in keys},
             "average_wait_s": report["averages"]["queue_wait_s"],
             "longest_wait_s": report["averages"]["longest_queue_wait_s"]}]
    rows += [{"queue": q["queue"], **{k: q[k] for k in keys}, "average_wait_s": q["average_wait_s"],
              "longest_wait_s": q["longest_wait_s"]} for q in report["queues"]]
    return rows


def with_threshold(f: Filters, threshold_s: int) -> Filters:
    return replace(f, threshold_s=threshold_s)
