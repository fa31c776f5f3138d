"""The recorder, against the real Redis and real databases."""

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
import sqlalchemy as sa
from redis.backoff import NoBackoff
from redis.retry import Retry

from ivr.calllog.recorder import Recorder, append
from ivr.calllog.store import Store, database_url
from tests.conftest import REDIS_HOST, REDIS_PORT

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DOWN_URL = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=1"
T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def r():
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    yield client
    client.close()


@pytest.fixture
def stream(r):
    name = f"test:{uuid.uuid4().hex}:log"
    yield name
    r.delete(name, f"{name}:dead")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path}/ivr.db")
        s.migrate()
        yield s
        s.close()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = database_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    s = Store(url.render_as_string(hide_password=False))
    try:
        s.migrate()
        yield s
    finally:
        s.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def call_records(sid: str, steps: int = 3) -> list[dict]:
    records = [
        {
            "type": "call_started",
            "call_sid": sid,
            "flow": "support",
            "from_number": "+14155550100",
            "to_number": "+14155550199",
            "caller_known": False,
            "customer_id": None,
            "started_at": T0,  # a datetime: append encodes it as ISO 8601
            "is_test": True,
            "parent_call_sid": None,
        }
    ]
    for seq in range(1, steps + 1):
        records.append(
            {
                "type": "step",
                "call_sid": sid,
                "seq": seq,
                "at": (T0 + timedelta(seconds=seq)).isoformat(),
                "flow": "support",
                "node": f"n{seq}",
                "kind": "say",
                "event": "enter",
                "said": "Hello",
                "detail": {"seq": seq},
            }
        )
    return records


def pending(r, stream, group="recorder") -> int:
    return r.xpending(stream, group)["pending"]


def test_records_appended_in_multi_arrive_in_sql(r, stream, store):
    pipe = r.pipeline(transaction=True)
    pipe.set(f"{stream}:state", "{}")
    append(pipe, call_records("CA1"), stream=stream)
    pipe.execute()
    r.delete(f"{stream}:state")

    recorder = Recorder(r, store, stream=stream, consumer="c1")
    assert recorder.flush() == 4
    call = store.call("CA1")
    assert call["steps_count"] == 3 and call["is_test"] is True
    assert call["started_at"] == T0
    assert [s["detail"] for s in store.steps("CA1")] == [{"seq": 1}, {"seq": 2}, {"seq": 3}]
    # Recorded entries are acknowledged and deleted, so the stream does not grow.
    assert r.xlen(stream) == 0
    assert pending(r, stream) == 0


def test_database_outage_leaves_entries_pending_then_records_once(r, stream, store):
    append(r, call_records("CA1", steps=5), stream=stream)
    down = Store(DOWN_URL)
    recorder = Recorder(r, down, stream=stream, consumer="c1")
    assert recorder.drain() == 0
    assert recorder.store_failed
    assert pending(r, stream) == 1 and r.xlen(stream) == 1  # one entry: the call's 6 records
    assert recorder.drain() == 0  # retried from its own pending list, still down
    assert pending(r, stream) == 1

    # More calls arrive while the database is down.
    append(r, call_records("CA2", steps=2), stream=stream)
    recorder.store = store
    assert recorder.flush() == 6 + 3
    assert store.call("CA1")["steps_count"] == 5
    assert len(store.steps("CA1")) == 5 and len(store.steps("CA2")) == 2
    assert r.xlen(stream) == 0 and pending(r, stream) == 0
    down.close()


def test_a_database_that_comes_back_empty_gets_its_tables_first(r, stream, tmp_path):
    """The server started while the database was down, so nothing made its tables: when it is
    back, the recorder brings the schema up to date before writing what waited in Redis."""
    append(r, call_records("CA1", steps=2), stream=stream)
    recorder = Recorder(r, Store(DOWN_URL), stream=stream, consumer="c1")
    assert recorder.drain() == 0 and pending(r, stream) == 1
    fresh = Store(f"sqlite:///{tmp_path}/new.db")  # never migrated
    recorder.store = fresh
    assert recorder.flush() == 3
    assert len(fresh.steps("CA1")) == 2 and r.xlen(stream) == 0
    fresh.close()


def test_replay_after_commit_is_stored_once(r, stream, store):
    # A process that committed but died before acknowledging: the entries are
    # recorded again by the next consumer, and the store keeps one copy.
    records = call_records("CA1")
    append(r, records, stream=stream)
    store.record(records)
    assert Recorder(r, store, stream=stream).flush() == 4
    assert len(store.steps("CA1")) == 3 and store.call("CA1")["steps_count"] == 3


def test_entries_of_a_dead_consumer_are_claimed(r, stream, store):
    recorder = Recorder(r, store, stream=stream, consumer="alive", claim_idle_ms=100)
    recorder.ensure_group()
    append(r, call_records("CA1"), stream=stream)
    # "dead" reads the entries and never acknowledges them.
    got = r.xreadgroup("recorder", "dead", {stream: ">"}, count=100)
    assert len(got[0][1]) == 1
    assert recorder.drain() == 0  # not idle long enough yet
    assert pending(r, stream) == 1

    time.sleep(0.15)
    assert recorder.flush() == 4
    assert store.call("CA1")["steps_count"] == 3
    assert pending(r, stream) == 0 and r.xlen(stream) == 0


def test_consumers_of_exited_processes_are_pruned(r, stream, store):
    recorder = Recorder(r, store, stream=stream, consumer="alive")
    recorder.ensure_group()
    r.xreadgroup("recorder", "exited", {stream: ">"}, count=1)  # creates the consumer
    append(r, call_records("CA1", steps=0), stream=stream)
    r.xreadgroup("recorder", "busy", {stream: ">"}, count=1)  # holds one entry
    time.sleep(0.02)
    recorder.prune_idle_ms = 10
    recorder.drain()
    names = {c["name"].decode() for c in r.xinfo_consumers(stream, "recorder")}
    assert names == {"alive", "busy"}


def test_malformed_records_go_to_dead_letter_and_do_not_block(r, stream, store):
    append(r, call_records("CA1", steps=1), stream=stream)
    r.xadd(stream, {"r": "not json"})
    r.xadd(stream, {"other": "field"})
    append(r, [{"type": "mystery", "call_sid": "CA1"}], stream=stream)
    append(r, [{"type": "step", "call_sid": "CA1", "seq": 9, "event": "enter"}], stream=stream)
    append(r, call_records("CA2", steps=2), stream=stream)

    recorder = Recorder(r, store, stream=stream)
    assert recorder.flush() == 2 + 3
    assert store.call("CA1")["steps_count"] == 1
    assert store.call("CA2")["steps_count"] == 2
    assert r.xlen(stream) == 0 and pending(r, stream) == 0

    dead = r.xrange(f"{stream}:dead")
    assert len(dead) == 4
    fields = [{k.decode(): v.decode() for k, v in f.items()} for _, f in dead]
    assert fields[0]["r"] == "not json"
    assert "unknown log record type 'mystery'" in fields[2]["error"]
    assert "missing at" in fields[3]["error"]
    assert json.loads(fields[3]["r"])["seq"] == 9
    assert all(f["stream"] == stream and f["id"] for f in fields)


def test_a_refused_record_is_dead_lettered_alone_and_its_entry_mates_are_stored(r, stream, store):
    """One webhook's records share a stream entry: a record the database refuses goes to the
    dead-letter stream on its own, and the other records of its entry are stored."""
    records = call_records("CA1", steps=2)
    bad = {"type": "step", "call_sid": "CA1", "seq": -1, "event": "enter", "at": T0.isoformat()}
    append(r, records[:2] + [bad] + records[2:], stream=stream)
    append(r, call_records("CA2", steps=1), stream=stream)

    assert Recorder(r, store, stream=stream).flush() == 3 + 2
    assert [s["seq"] for s in store.steps("CA1")] == [1, 2]
    assert store.call("CA2")["steps_count"] == 1
    dead = r.xrange(f"{stream}:dead")
    assert len(dead) == 1
    fields = {k.decode(): v.decode() for k, v in dead[0][1].items()}
    assert json.loads(fields["r"]) == bad and "seq: must not be negative" in fields["error"]
    assert r.xlen(stream) == 0 and pending(r, stream) == 0


class _GoesAwayOnce:
    """The real store, except that the database "goes away" the first time one given record
    is written on its own. A stand-in: no real database can be made to fail at that moment."""

    def __init__(self, store: Store, seq: int):
        self.store, self.seq = store, seq

    def record(self, records: list[dict]) -> None:
        if self.seq is not None and len(records) == 1 and records[0].get("seq") == self.seq:
            self.seq = None
            raise sa.exc.OperationalError("INSERT INTO steps", {}, Exception("server closed the connection"))
        self.store.record(records)

    def migrate(self) -> None:
        self.store.migrate()


def test_a_database_failure_while_an_entry_is_sorted_out_loses_none_of_it(r, stream, store):
    """The database goes away while an entry with a refused record is written record by record:
    the entry stays pending whole, and once the database is back every good record is stored
    and the refused one dead-lettered once."""
    records = call_records("CA1", steps=3)
    records[2] = dict(records[2], event=None)  # step 2 has no event: the database refuses it
    append(r, records, stream=stream)
    recorder = Recorder(r, _GoesAwayOnce(store, seq=3), stream=stream)
    assert recorder.drain() == 2  # call_started and step 1, then the database went away
    assert recorder.store_failed and pending(r, stream) == 1 and r.xlen(f"{stream}:dead") == 0
    recorder.flush()
    assert [s["seq"] for s in store.steps("CA1")] == [1, 3]
    assert r.xlen(stream) == 0 and pending(r, stream) == 0
    dead = r.xrange(f"{stream}:dead")
    assert len(dead) == 1 and json.loads(dead[0][1][b"r"])["seq"] == 2


def test_entries_of_one_record_each_are_recorded_too(r, stream, store):
    """The layout of older versions (and of callback snapshots): one JSON object per entry."""
    for record in call_records("CA1", steps=2):
        r.xadd(stream, {"r": json.dumps(record, default=str)})
    assert Recorder(r, store, stream=stream).flush() == 3
    assert store.call("CA1")["steps_count"] == 2


def test_stream_lost_with_redis_restart_is_recreated(r, stream, store):
    recorder = Recorder(r, store, stream=stream)
    recorder.ensure_group()
    r.delete(stream)  # what a Redis restart without persistence looks like
    append(r, call_records("CA1", steps=1), stream=stream)
    assert recorder.flush() == 2


def test_decoded_responses_client(stream, store):
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, decode_responses=True)
    append(client, call_records("CA1"), stream=stream)
    assert Recorder(client, store, stream=stream).flush() == 4
    client.close()


def test_background_thread_records_and_stops(r, stream, store):
    recorder = Recorder(r, store, stream=stream)
    thread = recorder.start_thread(block_ms=50)
    append(r, call_records("CA1"), stream=stream)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        call = store.call("CA1")
        if call and call["steps_count"] == 3:
            break
        time.sleep(0.02)
    assert store.call("CA1")["steps_count"] == 3
    recorder.stop_event.set()
    thread.join(timeout=2)
    assert not thread.is_alive()


def test_thread_survives_redis_outage(tmp_path, caplog):
    store = Store(f"sqlite:///{tmp_path}/ivr.db")
    # No retries: redis-py's default three, with jittered backoff, take 3 to 7 s to give up.
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2,
                              retry=Retry(NoBackoff(), 0))
    recorder = Recorder(unreachable, store, stream="test:never")
    stop = threading.Event()
    thread = recorder.start_thread(stop=stop, block_ms=50)
    deadline = time.monotonic() + 5
    while "cannot read the log stream" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "cannot read the log stream" in caplog.text
    assert thread.is_alive()
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive()
    store.close()
