"""Helpers for the report and dashboard tests: databases, and calls driven through the engine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from ivr.calllog.store import Store, database_url
from ivr.engine import events as E
from ivr.engine.runner import Estimate
from ivr.engine.simulation import SimulatedCall, default_matcher, directory_for
from ivr.flows.loader import load_flow

ROOT = Path(__file__).resolve().parent.parent
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # a Tuesday, 10:00 in New York: the line is open


def empty_store(kind: str, tmp_path: Path) -> Iterator[Store]:
    """A migrated, empty store: a SQLite file, or a private PostgreSQL schema dropped afterwards.
    A generator, for a fixture to `yield from`."""
    if kind == "sqlite":
        store = Store(f"sqlite:///{tmp_path}/ivr.db")
        store.migrate()
        yield store
        store.close()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    # A foreign session time zone proves the reports never depend on it.
    options = f"-csearch_path={schema} -ctimezone=Asia/Kolkata"
    url = database_url(PG_URL).update_query_dict({"options": options})
    store = Store(url.render_as_string(hide_password=False))
    try:
        store.migrate()
        yield store
    finally:
        store.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


_FLOW = None
_MATCH = None


def support_flow():
    global _FLOW, _MATCH
    if _FLOW is None:
        _FLOW = load_flow(ROOT / "flows" / "support.yaml")
        _MATCH = default_matcher()
    return _FLOW, _MATCH


def drive(sid: str, from_number: str | None, script: list[tuple[float, E.Event]], start: datetime = T0,
          *, is_test: bool = False, estimate_s: float | None = None, status: str = "completed",
          answers: dict | None = None) -> list[dict]:
    """Run one call of the support flow through the real engine and return its log records, shaped
    as the webhooks write them: `script` is (seconds after the previous event, event); `answers`
    what request nodes' APIs answer (ivr.engine.answers.Answer by node id; none: they fail)."""
    from ivr.engine.answers import answering

    flow, match = support_flow()

    def estimate(queue: str, position: int | None = None):
        return None if estimate_s is None else Estimate(position=3, wait_s=estimate_s, agents_available=2)

    call = SimulatedCall(flow, from_number or "Anonymous", now=start, directory=directory_for(flow),
                         match=match, call_sid=sid, estimate=estimate, propagate=True,
                         requester=answering(answers) if answers is not None else None)
    call.start()
    t = start
    for delay, event in script:
        t += timedelta(seconds=delay)
        call.now = t
        call.send(event)
        if isinstance(event, E.HangUp):
            break
    if not call.ended:
        call.now = t + timedelta(seconds=1)
        call.send(E.HangUp(status, int((call.now - start).total_seconds())))
    caller = call.caller or {}
    ended = call.ended or {}
    records = [{
        "type": "call_started", "call_sid": sid, "flow": flow.id, "from_number": call.from_number,
        "to_number": call.to_number, "caller_known": bool(caller.get("known")),
        "customer_id": caller.get("customer_id") or None, "started_at": start.isoformat(), "is_test": is_test,
        "parent_call_sid": None,
    }]
    records += [{"type": "step", "call_sid": sid, **s} for s in call.steps]
    records.append({"type": "call_ended", "call_sid": sid, "status": status,
                    "duration_s": int((t - start).total_seconds()),
                    "ended_at": (t + timedelta(seconds=1)).isoformat(),
                    "outcome": ended.get("outcome"), "last_node": ended.get("last_node")})
    return records


def callback_snapshot(cid: str, call_sid: str, status: str, requested: datetime, wait_s: float | None = None,
                      queue: str = "general", number: str = "+16175550123") -> dict:
    """A callback record as callbacks/store.py appends it to the log stream."""
    snap = {"type": "callback", "id": cid, "status": status, "queue": queue, "number": number,
            "call_sid": call_sid, "flow": "callback", "origin_flow": "support",
            "enqueued_at": f"{requested.timestamp() - 60:.3f}",
            "requested_at": f"{requested.timestamp():.3f}",
            "attempts": "1", "max_attempts": "3", "v": "4"}
    if wait_s is not None:
        connected = requested + timedelta(seconds=wait_s)
        snap.update(connected_at=f"{connected.timestamp():.3f}", wait_s=f"{wait_s:.3f}",
                    ended_at=f"{connected.timestamp() + 200:.3f}")
    return snap


def scenario() -> list[dict]:
    """Seven calls whose measures are worked out by hand in test_reports.py."""
    d = timedelta
    r: list[dict] = []
    # A: Ada (known) says what she wants, answered after 12 s in billing.
    r += drive("CA_A", "+14155550100", [(8, E.Speech("I was charged twice", 0.91)),
                                        (3, E.QueueWait(1, 5, 60, 1)),
                                        (300, E.QueueLeft("bridged", 12))])
    # B: an unknown caller presses 3, answered after 45 s in technical.
    r += drive("CA_B", "+14155550199", [(12, E.Digits("3")), (350, E.QueueLeft("bridged", 45))],
               T0 + d(minutes=10))
    # C: the same number 2 hours later (a repeat), not understood, presses 1, hangs up after 70 s.
    r += drive("CA_C", "+14155550199", [(6, E.Speech("purple elephants", 0.42)), (9, E.Digits("1")),
                                        (30, E.QueueWait(2, 30, 60, 3)), (40, E.QueueLeft("hangup", 70)),
                                        (1, E.HangUp("completed", 90))], T0 + d(hours=2))
    # D: a withheld number, silent, then hangs up in the menu.
    r += drive("CA_D", None, [(15, E.NoInput()), (4, E.HangUp("completed", 20))], T0 + d(hours=3))
    # E: asks for an agent, the wait is long, takes a callback (kept: agent reached them after 300 s).
    r += drive("CA_E", "+16175550123", [(10, E.Digits("0")), (2, E.QueueWait(3, 20, 60, 5)),
                                        (6, E.Digits("1")), (5, E.Digits("1"))], T0 + d(hours=4),
               estimate_s=600)
    r.append(callback_snapshot("CB_E", "CA_E", "completed", T0 + d(hours=4, seconds=25), wait_s=300))
    # F: a test call, answered at once: never counted unless asked for.
    r += drive("CA_F", "+14155550101", [(5, E.Digits("2")), (60, E.QueueLeft("bridged", 1))], T0 + d(hours=5),
               is_test=True)
    # G: Ada again three days later (a repeat within 7 days, not 24 hours), orders, answered after 8 s.
    r += drive("CA_G", "+14155550100", [(7, E.Digits("2")), (200, E.QueueLeft("bridged", 8))], T0 + d(days=3))
    return r
