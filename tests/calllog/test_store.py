"""The SQL step log, against a SQLite file and the real PostgreSQL."""

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ivr.calllog.store import Store, calls, database_url, fit, metadata
from ivr.engine.states import Outcome

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_schema_url(schema: str) -> str:
    # A foreign session time zone proves timestamps come back as UTC regardless.
    options = f"-csearch_path={schema} -ctimezone=Asia/Kolkata"
    return database_url(PG_URL).update_query_dict({"options": options}).render_as_string(False)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A URL for an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/nested/dir/ivr.db"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield pg_schema_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    s.migrate()
    yield s
    s.close()


T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


def started(sid="CA1", **kw):
    return {
        "type": "call_started",
        "call_sid": sid,
        "flow": "support",
        "from_number": "+14155550100",
        "to_number": "+14155550199",
        "caller_known": True,
        "customer_id": "cus_1",
        "started_at": T0.isoformat(),
        "is_test": False,
        "parent_call_sid": None,
    } | kw


def step(sid="CA1", seq=1, node="welcome", **kw):
    return {
        "type": "step",
        "call_sid": sid,
        "seq": seq,
        "at": (T0 + timedelta(seconds=seq)).timestamp(),
        "flow": "support",
        "node": node,
        "kind": "say",
        "event": "enter",
        "digits": None,
        "speech": None,
        "confidence": None,
        "intent": None,
        "said": "Hello",
        "action": None,
        "detail": None,
    } | kw


def ended(sid="CA1", **kw):
    return {
        "type": "call_ended",
        "call_sid": sid,
        "status": "completed",
        "duration_s": 42,
        "ended_at": (T0 + timedelta(seconds=42)).isoformat(),
        "outcome": "transferred",
        "last_node": "agent",
    } | kw


def test_database_url_rewrites_postgres_to_psycopg():
    assert database_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert database_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert database_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert database_url("sqlite:///x.db").drivername == "sqlite"


def test_migrate_twice_is_a_noop(store, store_url):
    store.record([started(), step()])
    store.migrate()
    again = Store(store_url)
    again.migrate()
    assert again.call("CA1")["steps_count"] == 1
    with again.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0006"
        assert sorted(sa.inspect(conn).get_table_names()) == [
            "agent_states",
            "alembic_version",
            "call_metrics",
            "callback_attempts",
            "callbacks",
            "calls",
            "menu_metrics",
            "messages",
            "recordings",
            "service_metrics",
            "steps",
            "users",
        ]
    again.close()


def test_concurrent_migrate_from_many_processes(store_url):
    stores = [Store(store_url) for _ in range(4)]
    errors = []

    def migrate(s):
        try:
            s.migrate()
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stores[0].record([started()])
    assert stores[1].call("CA1") is not None
    for s in stores:
        s.close()


def test_migrations_match_the_table_definitions(store):
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_sqlite_uses_wal(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/a/b/ivr.db")
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
    assert (tmp_path / "a" / "b" / "ivr.db").exists()
    s.close()


def test_call_and_steps_are_recorded(store):
    store.record(
        [
            started(),
            step(seq=1, node="welcome"),
            step(seq=2, node="menu", kind="ask", event="digits", digits="2", action="gather"),
            step(seq=3, node="billing", detail={"queue": "billing", "position": 3}),
            ended(),
        ]
    )
    call = store.call("CA1")
    assert call["flow"] == "support"
    assert call["caller_known"] is True and call["is_test"] is False
    assert call["steps_count"] == 3
    assert call["status"] == "completed" and call["outcome"] == "transferred"
    assert call["duration_s"] == 42
    assert call["last_node"] == "agent"
    rows = store.steps("CA1")
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert rows[1]["digits"] == "2" and rows[1]["kind"] == "ask"
    assert rows[2]["detail"] == {"queue": "billing", "position": 3}
    assert store.call("nope") is None


def test_step_details_keep_what_json_keeps(store):
    """Details go through orjson, and through json where orjson refuses (keys that are not
    strings, integers past 64 bits): either way they read back as json would have kept them."""
    details = [{"said": "Grüße, señor 👋", "nested": {"ok": [1, 2.5, None, True]}},
               {1: "int key", "x": 2**70 + 1}, {"big": -(2**65) - 1, "in_range": 2**64 - 1}]
    store.record([started()] + [step(seq=i + 1, detail=d) for i, d in enumerate(details)] + [ended()])
    got = [r["detail"] for r in store.steps("CA1")]
    assert got == [json.loads(json.dumps(d)) for d in details]
    assert got[1] == {"1": "int key", "x": 2**70 + 1}  # not a float: no digit lost
    assert got[2] == {"big": -(2**65) - 1, "in_range": 2**64 - 1}
    assert store.call("CA1")["steps_count"] == 3


def test_step_insert_is_idempotent(store):
    store.record([started(), step(seq=1), step(seq=2), step(seq=1)])
    store.record([step(seq=2), step(seq=1, node="changed")])
    rows = store.steps("CA1")
    assert [(r["seq"], r["node"]) for r in rows] == [(1, "welcome"), (2, "welcome")]
    assert store.call("CA1")["steps_count"] == 2


def test_step_before_call_started(store):
    store.record([step(seq=2, node="menu"), step(seq=1)])
    stub = store.call("CA1")
    assert stub["steps_count"] == 2
    assert stub["last_node"] == "menu"
    assert stub["flow"] == "support"
    assert stub["from_number"] is None
    assert stub["started_at"] == T0 + timedelta(seconds=1)

    store.record([started()])
    call = store.call("CA1")
    assert call["from_number"] == "+14155550100"
    assert call["customer_id"] == "cus_1"
    assert call["started_at"] == T0 and call["answered_at"] == T0
    assert call["steps_count"] == 2 and call["last_node"] == "menu"


def test_call_ended_before_call_started(store):
    store.record([ended()])
    store.record([started()])
    call = store.call("CA1")
    assert call["status"] == "completed" and call["started_at"] == T0 == call["answered_at"]
    assert call["outcome"] == "transferred"


def test_duplicate_call_ended_does_not_clobber(store):
    store.record([started(), step(), ended()])
    store.record([ended(duration_s=None, ended_at=None, outcome=None, last_node=None)])
    store.record([{"type": "call_ended", "call_sid": "CA1", "status": "completed"}])
    call = store.call("CA1")
    assert call["duration_s"] == 42
    assert call["ended_at"] == T0 + timedelta(seconds=42)
    assert call["outcome"] == "transferred"
    assert call["last_node"] == "agent"
    # A replayed call_started keeps what call_ended wrote.
    store.record([started()])
    assert store.call("CA1")["outcome"] == "transferred"


def test_outcomes_are_stored_and_queried_as_their_plain_values(store):
    """The same SQL values as the strings the enum replaced, in both databases: a row written
    with a member reads back as the plain string, and a query by member finds plain rows."""
    store.record([started("CA1"), ended("CA1", outcome=Outcome.ABANDONED),
                  started("CA2"), ended("CA2", outcome="queued")])
    with store.engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT call_sid, outcome FROM calls")).all())
        found = conn.execute(sa.select(calls.c.call_sid).where(
            calls.c.outcome.in_([Outcome.QUEUED, Outcome.ABANDONED])).order_by(calls.c.call_sid)).all()
    assert stored == {"CA1": "abandoned", "CA2": "queued"} and type(stored["CA1"]) is str
    assert [r.call_sid for r in found] == ["CA1", "CA2"]


def test_timestamps_round_trip_as_aware_utc(store):
    plus_two = timezone(timedelta(hours=2))
    store.record(
        [
            started(started_at=T0.astimezone(plus_two).isoformat()),
            step(seq=1, at="2024-05-01T09:30:01"),  # naive: taken as UTC
            step(seq=2, at="2024-05-01T09:30:02Z"),
            step(seq=3, at=(T0 + timedelta(seconds=3, microseconds=250)).timestamp()),
        ]
    )
    call = store.call("CA1")
    assert call["started_at"] == T0
    assert call["started_at"].utcoffset() == timedelta(0)
    ats = [r["at"] for r in store.steps("CA1")]
    assert ats == [T0 + timedelta(seconds=s) for s in (1, 2)] + [T0 + timedelta(seconds=3, microseconds=250)]
    assert all(a.tzinfo is not None and a.utcoffset() == timedelta(0) for a in ats)


def test_calls_between_times(store):
    store.record(
        [
            started("CA1", started_at=T0.isoformat()),
            started("CA2", started_at=(T0 + timedelta(hours=1)).isoformat()),
            started("CA3", started_at=(T0 + timedelta(hours=2)).isoformat()),
        ]
    )
    assert [c["call_sid"] for c in store.calls()] == ["CA3", "CA2", "CA1"]
    plus_two = timezone(timedelta(hours=2))
    since = (T0 + timedelta(minutes=30)).astimezone(plus_two)
    until = T0 + timedelta(hours=2)
    assert [c["call_sid"] for c in store.calls(since=since, until=until)] == ["CA2"]
    assert [c["call_sid"] for c in store.calls(limit=1)] == ["CA3"]


def test_recordings_are_idempotent(store):
    rec = {"type": "recording", "call_sid": "CA1", "seq": 4, "url": "https://x/RE1"}
    store.record([started(), rec | {"duration_s": "12"}, rec])
    store.record([rec])
    rows = store.recordings("CA1")
    assert len(rows) == 1
    assert rows[0]["duration_s"] == 12 and rows[0]["created_at"].tzinfo is not None


def test_parent_call_and_test_flag(store):
    store.record([started("CA2", parent_call_sid="CA1", is_test=True, caller_known=False)])
    call = store.call("CA2")
    assert call["parent_call_sid"] == "CA1" and call["is_test"] is True


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "nope", "call_sid": "CA1"},
        {"call_sid": "CA1"},
        ["not", "a", "dict"],
        step() | {"seq": None},
        step(seq=-1),
        step(at="yesterday"),
        step(event=None),
        step(call_sid=""),
        step(confidence="high"),
        step(seq=2**31),
        step(detail={1, 2}),
        started(started_at=None),
        started(caller_known="yes"),
        ended(outcome="exploded"),
        ended(duration_s="forty"),
    ],
)
def test_invalid_record_raises_and_writes_nothing(store, bad):
    with pytest.raises(ValueError):
        store.record([started("CA9"), bad])
    assert store.call("CA9") is None


def test_values_too_long_or_with_nul_are_stored_with_a_note(store):
    """A name past 200 characters is cut, ending with a note of its length and a digest (two
    call ids alike up to the cut stay two calls); a NUL becomes U+FFFD. The record is stored."""
    long_a, long_b = "CA" + "a" * 300, "CA" + "a" * 299 + "b"
    store.record([started(long_a), step(long_a, node="n" * 201, speech="nul\x00byte"),
                  started(long_b), step("CA\x001", digits="1\x00")])
    stored = {c["call_sid"] for c in store.calls(limit=10) if c["call_sid"].startswith("CA" + "a" * 100)}
    a, b = fit(long_a), fit(long_b)
    assert stored == {a, b} and len(a) == len(b) == 200 and "302 characters, cut; sha1 " in a
    [s] = store.steps(a)
    assert s["node"].startswith("n" * 150) and s["node"].endswith("]") and "201 characters" in s["node"]
    assert s["speech"] == "nul\ufffdbyte"
    assert store.steps("CA\ufffd1")[0]["digits"] == "1\ufffd"


def test_unsupported_database():
    with pytest.raises(ValueError, match="unsupported"):
        Store("mysql://u@h/db")
