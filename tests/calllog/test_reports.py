"""Wait-time reports: per-call measures and period figures, from calls run through the real engine
and written by the real store, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
import sqlalchemy as sa
from click.testing import CliRunner

from ivr.calllog import reports, retention
from ivr.calllog.recorder import Recorder, append
from ivr.calllog.store import Store, call_metrics, calls, menu_metrics, steps
from ivr.engine import events as E
from tests.reportutil import T0, drive, empty_store, scenario

NY = "America/New_York"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, tmp_path):
    yield from empty_store(request.param, tmp_path)


def metrics(store: Store, sid: str) -> dict:
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(call_metrics).where(call_metrics.c.call_sid == sid)).one()
    return dict(row._mapping)


def period(**kw) -> reports.Filters:
    return reports.filters("2026-11-24", "2026-11-30", tz=NY, **kw)


def test_each_call_gets_its_measures_when_it_ends(any_store):
    any_store.record(scenario())
    a = metrics(any_store, "CA_A")
    assert a["caller_known"] is True and a["outcome"] == "queued" and a["queue"] == "billing"
    assert a["answered"] is True and a["answer_wait_s"] == 12 and a["queue_wait_s"] == 12
    assert a["intent"] == "billing" and a["spoke"] is True and a["intent_recognised"] is True
    assert a["menu_steps"] == 1
    # "Hi Ada, thanks for calling Northwind Fibre." is 7 words at 160 a minute before the menu.
    assert a["first_prompt_s"] == pytest.approx(2.6, abs=0.05)
    # 8 s to answer the menu, then "Connecting you to our billing team." before the queue.
    assert a["time_to_destination_s"] == pytest.approx(10.25, abs=0.06)
    assert a["destination"] == "billing_queue" and a["destination_kind"] == "queue"
    assert a["repeat_24h"] is False and a["repeat_7d"] is False

    c = metrics(any_store, "CA_C")
    assert c["outcome"] == "abandoned" and c["last_node"] == "billing_queue" and c["last_kind"] == "queue"
    assert c["queue_wait_s"] == 70 and c["answered"] is False
    assert c["spoke"] is True and c["intent_recognised"] is False and c["menu_steps"] == 2
    assert c["repeat_24h"] is True and c["repeat_7d"] is True  # CA_B came from the same number 2 h before

    d = metrics(any_store, "CA_D")
    assert d["outcome"] == "abandoned" and d["last_node"] == "main_menu" and d["destination"] is None
    assert d["time_to_destination_s"] is None and d["from_number"] is None

    e = metrics(any_store, "CA_E")
    assert e["outcome"] == "callback" and e["callback"] is True and e["queue"] == "general"

    g = metrics(any_store, "CA_G")
    assert g["repeat_24h"] is False and g["repeat_7d"] is True
    assert metrics(any_store, "CA_F")["is_test"] is True


def test_repeat_calls_are_found_when_calls_arrive_one_batch_at_a_time(any_store):
    """The recorder writes a busy line in many small batches; a repeat is a repeat whichever
    batch its earlier call came in, and only real calls from the same number count."""
    d = timedelta
    hang = [(5, E.HangUp("completed", 5))]
    batches = [
        drive("CA_1", "+14155550199", hang, T0),
        drive("CA_T", "+14155550199", hang, T0 + d(days=2), is_test=True),  # a test call: no repeat
        drive("CA_2", "+14155550199", hang, T0 + d(days=2, hours=1)),  # 49 h after CA_1
        drive("CA_3", "+14155550199", hang, T0 + d(days=2, hours=3)) + drive(
            "CA_4", "+14155550199", hang, T0 + d(days=2, hours=5)),  # one batch of two
        drive("CA_5", "+14155550199", hang, T0 + d(days=20)),
    ]
    for records in batches:
        any_store.record(records)
    flags = {sid: (m["repeat_24h"], m["repeat_7d"]) for sid in ("CA_1", "CA_2", "CA_3", "CA_4", "CA_5")
             for m in [metrics(any_store, sid)]}
    assert flags == {"CA_1": (False, False), "CA_2": (False, True), "CA_3": (True, True),
                     "CA_4": (True, True), "CA_5": (False, False)}


def test_the_period_figures_a_supervisor_reads(any_store):
    any_store.record(scenario())
    r = reports.overview(any_store, period())
    assert r["calls"] == 6  # the test call is left out
    # Offered to an agent: A, B, C, G (E took a callback instead). Within 20 s: A (12 s), G (8 s).
    assert r["offered"] == 4 and r["service_level"] == 0.5
    assert r["average_speed_of_answer_s"] == pytest.approx((12 + 45 + 8) / 3, abs=0.05)
    # Abandoned: C (in the billing queue) and D (in the menu), out of 6 calls less 1 callback.
    assert r["abandoned"] == 2 and r["abandonment_rate"] == 0.4
    assert r["abandoned_by_node"] == {"billing_queue": 1, "main_menu": 1}
    assert r["known_caller_rate"] == pytest.approx(2 / 6, abs=1e-3)
    assert r["repeat_24h_rate"] == pytest.approx(1 / 6, abs=1e-3)
    assert r["repeat_7d_rate"] == pytest.approx(2 / 6, abs=1e-3)
    assert r["outcomes"] == {"queued": 3, "abandoned": 2, "callback": 1}

    menu = next(m for m in r["menus"] if m["node"] == "main_menu")
    assert menu["calls"] == 6 and menu["callers_who_spoke"] == 2
    assert menu["recognition_rate"] == 0.5  # "I was charged twice" yes, "purple elephants" no
    assert menu["keypad_fallback_rate"] == 0.5  # C pressed 1 after not being understood
    assert menu["no_input"] == 1

    cb = r["callbacks"]
    assert cb["requested"] == 1 and cb["kept"] == 1 and cb["kept_rate"] == 1.0
    assert cb["wait_s"]["median"] == 300

    billing = next(q for q in r["queues"] if q["queue"] == "billing")
    assert billing["offered"] == 2 and billing["answered"] == 1 and billing["service_level"] == 0.5
    assert billing["abandoned"] == 1

    hist = {b["label"]: b for b in r["wait_histogram"]}
    assert hist["10s–20s"]["answered"] == 1 and hist["0s–10s"]["answered"] == 1
    assert hist["1m–2m"]["abandoned"] == 1 and hist["30s–1m"]["answered"] == 1
    assert sum(b["callback"] for b in r["wait_histogram"]) == 1

    # Hours are shown in the display time zone: 15:00 UTC is 10:00 in New York.
    assert r["calls_by_hour"][10] == 3  # A and B on Tuesday, G on Friday
    assert r["heatmap"]["calls"][1][10] == 2 and r["heatmap"]["calls"][4][10] == 1
    funnel = r["funnel"]
    assert [s["calls"] for s in funnel] == [6, 5, 4]
    assert funnel[1]["lost"] == [{"node": "main_menu", "kind": "ask", "abandoned": 1}]


def test_failed_calls_are_shown_apart_and_leave_abandonment_alone(any_store, tmp_path, monkeypatch):
    """Calls Twilio reported as failed (CallStatus=failed: a TwiML document it refused, say)
    are neither abandoned nor counted in the abandonment rate, and the supervisor sees them."""
    from ivr.cli import cli

    records = scenario()
    d = timedelta
    for i in range(3):
        records += drive(f"CA_F{i}", "+14155550177", [(2 + i, E.HangUp("failed", 2 + i))],
                         T0 + d(hours=5, minutes=i), status="failed")
    any_store.record(records)
    r = reports.overview(any_store, period())
    assert r["calls"] == 9 and r["failed"] == 3
    assert r["outcomes"]["failed"] == 3 and metrics(any_store, "CA_F0")["outcome"] == "failed"
    # As in the scenario: C and D abandoned, out of 6 calls less 1 callback (the failed left out).
    assert r["abandoned"] == 2 and r["abandonment_rate"] == 0.4
    day = next(p for p in r["service_level_over_time"]["points"] if p["at"] == "2026-11-24")
    assert day["abandonment_rate"] == pytest.approx(2 / 4)  # A to E and the 3 failed that day

    if any_store.engine.dialect.name == "sqlite":
        monkeypatch.setenv("DATABASE_URL", str(any_store.engine.url))
        monkeypatch.setenv("IVR_DISPLAY_TIMEZONE", NY)
        out = CliRunner().invoke(cli, ["report", "--since", "2026-11-24", "--until", "2026-11-30"])
        assert out.exit_code == 0, out.output
        row = next(line for line in out.output.splitlines() if "Failed calls" in line)
        assert row.rstrip(" │").endswith(" 3")


def test_filters_by_queue_flow_and_test_calls(any_store):
    any_store.record(scenario())
    billing = reports.overview(any_store, period(queue="billing"))
    assert billing["calls"] == 2 and billing["abandoned_by_node"] == {"billing_queue": 1}
    with_tests = reports.overview(any_store, period(include_tests=True))
    assert with_tests["calls"] == 7
    assert reports.overview(any_store, period(flow="other"))["calls"] == 0
    rows, total = reports.call_list(any_store, period(), reports.CallQuery(outcome="abandoned"))
    assert total == 2 and {r["call_sid"] for r in rows} == {"CA_C", "CA_D"}
    rows, total = reports.call_list(any_store, period(), reports.CallQuery(number="555 0199"))
    assert {r["call_sid"] for r in rows} == {"CA_B", "CA_C"}
    rows, _ = reports.call_list(any_store, period(), reports.CallQuery(known=True))
    assert {r["call_sid"] for r in rows} == {"CA_A", "CA_G"}
    e = reports.call_list(any_store, period(), reports.CallQuery(outcome="callback"))[0][0]
    assert e["callback_status"] == "completed" and e["callback_wait_s"] == 300
    exported = list(reports.iter_calls(any_store, period(), chunk=2))
    assert [r["call_sid"] for r in exported] == ["CA_G", "CA_E", "CA_D", "CA_C", "CA_B", "CA_A"]


def test_a_late_step_or_start_recomputes_the_measures(any_store):
    records = drive("CA_L", "+14155550100", [(8, E.Digits("1")), (100, E.QueueLeft("bridged", 15))])
    started, step_rows, ended = records[0], [r for r in records if r["type"] == "step"], records[-1]
    any_store.record([ended] + step_rows[:3])  # the end, and the first steps only
    assert metrics(any_store, "CA_L")["destination"] is None
    any_store.record(step_rows[3:])
    m = metrics(any_store, "CA_L")
    assert m["destination"] == "billing_queue" and m["answer_wait_s"] == 15 and m["caller_known"] is False
    any_store.record([started])  # call_started last: now we know who called
    assert metrics(any_store, "CA_L")["caller_known"] is True


def test_rebuild_recomputes_every_call(any_store):
    any_store.record(scenario())
    with any_store.begin_write() as conn:
        conn.execute(call_metrics.delete())
    assert reports.overview(any_store, period())["calls"] == 0
    assert any_store.rebuild_metrics() == 7
    assert reports.overview(any_store, period())["service_level"] == 0.5


def _measures(store: Store) -> tuple[list[dict], list[dict]]:
    with store.engine.connect() as conn:
        metrics = conn.execute(sa.select(call_metrics).order_by(call_metrics.c.call_sid))
        menus = conn.execute(sa.select(menu_metrics).order_by(menu_metrics.c.call_sid, menu_metrics.c.node))
        return [dict(r._mapping) for r in metrics], [dict(r._mapping) for r in menus]


@pytest.mark.parametrize("batches", [1, 3])
def test_measures_from_the_batch_equal_those_read_back(any_store, batches):
    """The recorder summarises a call from the steps in its batch when they are all the call's
    steps, else from the database: both give the same measures (rebuild_metrics reads back)."""
    records = scenario()
    size = -(-len(records) // batches)
    for i in range(0, len(records), size):  # a call's steps may span batches
        any_store.record(records[i:i + size])
    from_batches = _measures(any_store)
    assert len(from_batches[0]) == 7 and from_batches[1]
    with any_store.begin_write() as conn:
        conn.execute(call_metrics.delete())
        conn.execute(menu_metrics.delete())
    assert any_store.rebuild_metrics() == 7
    assert _measures(any_store) == from_batches


def test_the_recorder_stores_values_as_sqlalchemy_would(any_store):
    """The recorder sends its rows straight to the driver: what lands in the tables (times as
    SQLite text, booleans, floats) is what SQLAlchemy itself would have written."""
    from ivr.calllog.store import parse_record

    records = [r for r in scenario() if r.get("call_sid") == "CA_C"]
    assert any(r["type"] == "call_started" for r in records)
    any_store.record(records)
    copies = [parse_record(dict(r, call_sid="CA_COPY")) for r in records]
    with any_store.begin_write() as conn:
        conn.execute(calls.insert(), [row for kind, row in copies if kind == "call_started"])
        conn.execute(steps.insert(), [row for kind, row in copies if kind == "step"])

    def raw(table: str, columns: str, sid: str) -> list[tuple]:
        order = " ORDER BY seq" if table == "steps" else ""
        with any_store.engine.connect() as conn:
            query = f"SELECT {columns} FROM {table} WHERE call_sid = '{sid}'{order}"
            return [tuple(r) for r in conn.exec_driver_sql(query)]

    step_columns = ("seq, at, flow, node, kind, event, digits, speech, confidence, intent, said, "
                    "action, detail")
    assert raw("steps", step_columns, "CA_C") == raw("steps", step_columns, "CA_COPY")
    call_columns = ("flow, from_number, to_number, caller_known, customer_id, started_at, "
                    "answered_at, is_test")
    assert raw("calls", call_columns, "CA_C") == raw("calls", call_columns, "CA_COPY")


def test_the_recorder_path_writes_the_measures(tmp_path, redis_url):
    """Records go through a real Redis stream and the recorder, as on the server."""
    client = redis.Redis.from_url(redis_url)
    stream = f"test:{uuid.uuid4().hex}:log"
    store = Store(f"sqlite:///{tmp_path}/ivr.db")
    store.migrate()
    try:
        append(client, scenario(), stream)
        written = Recorder(client, store, stream=stream).flush()
        assert written == len(scenario())
        assert reports.overview(store, period())["abandoned_by_node"] == {"billing_queue": 1, "main_menu": 1}
    finally:
        client.delete(stream, f"{stream}:dead")
        store.close()


def test_call_detail_gives_the_timeline(any_store):
    any_store.record(scenario())
    d = reports.call_detail(any_store, "CA_C")
    events = [s["event"] for s in d["steps"]]
    assert events[:5] == ["enter", "enter", "enter", "enter", "no_match"]
    speech = next(s for s in d["steps"] if s["speech"])
    assert speech["speech"] == "purple elephants" and speech["confidence"] == pytest.approx(0.42)
    left = next(s for s in d["steps"] if s["event"] == "queue_left")
    assert left["queue_time"] == 70 and left["detail"]["result"] == "hangup"
    assert d["metrics"]["queue_wait_s"] == 70
    assert reports.call_detail(any_store, "CA_E")["callbacks"][0]["status"] == "completed"
    assert reports.call_detail(any_store, "nope") is None


def test_periods_read_as_people_write_them():
    tz = reports.zone(NY)
    now = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    assert reports.parse_when("2026-11-01", tz) == datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
    # Daylight saving time ends that night: the next midnight is 05:00 UTC, not 04:00.
    assert reports.parse_when("2026-11-01", tz, end=True) == datetime(2026, 11, 2, 5, 0, tzinfo=UTC)
    assert reports.parse_when("7d", tz, now=now) == now - timedelta(days=7)
    assert reports.parse_when("today", tz, now=now) == datetime(2026, 11, 24, 5, 0, tzinfo=UTC)
    assert reports.parse_when("2026-10-20T08:30", tz) == datetime(2026, 10, 20, 12, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a date"):
        reports.parse_when("last tuesday", tz)
    with pytest.raises(ValueError, match="unknown time zone"):
        reports.zone("Mars/Olympus")
    with pytest.raises(ValueError, match="after its start"):
        reports.filters("2026-11-10", "2026-11-01")


def test_masked_numbers_keep_only_the_country_and_last_digits():
    assert reports.mask_number("+14155550100") == "+1 ********00"
    assert reports.mask_number("+442079460104") == "+44 ********04"
    assert reports.mask_number(None) == ""


def test_ivr_report_json_and_csv(tmp_path, monkeypatch):
    from ivr.cli import cli

    db = tmp_path / "ivr.db"
    store = Store(f"sqlite:///{db}")
    store.migrate()
    store.record(scenario())
    store.close()
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("IVR_DISPLAY_TIMEZONE", NY)
    runner = CliRunner()
    out = runner.invoke(cli, ["report", "--since", "2026-11-24", "--until", "2026-11-30", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["calls"] == 6 and data["service_level"] == 0.5 and data["abandonment_rate"] == 0.4
    assert data["average_speed_of_answer_s"] == pytest.approx(21.7, abs=0.05)
    assert data["abandoned_by_node"] == {"billing_queue": 1, "main_menu": 1}

    out = runner.invoke(cli, ["report", "--since", "2026-11-24", "--until", "2026-11-30", "--csv"])
    rows = list(csv.DictReader(io.StringIO(out.output)))
    assert rows[0]["queue"] == "(all calls)" and rows[0]["calls"] == "6"
    assert {r["queue"] for r in rows[1:]} == {"billing", "general", "orders", "technical"}

    week = ["--since", "2026-11-24", "--until", "2026-11-30"]
    out = runner.invoke(cli, ["report", *week, "--threshold", "60"])
    assert out.exit_code == 0 and "Service level (answered within 60 s)" in out.output
    assert "billing_queue" in out.output and "75.0%" in out.output  # 3 of 4 within 60 s
    bad = runner.invoke(cli, ["report", "--since", "someday"])
    assert bad.exit_code == 2 and "not a date" in bad.output


def test_users_command(tmp_path, monkeypatch):
    from ivr.cli import cli
    from ivr.web import users

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/ivr.db")
    runner = CliRunner()
    out = runner.invoke(cli, ["users", "add", "dana", "--password-stdin"], input="a long password\n")
    assert out.exit_code == 0, out.output
    again = runner.invoke(cli, ["users", "add", "dana", "--password-stdin"], input="another password\n")
    assert again.exit_code == 1 and "already exists" in again.output
    short = runner.invoke(cli, ["users", "add", "eve", "--password-stdin"], input="short\n")
    assert short.exit_code == 1 and "at least 10" in short.output
    store = Store(f"sqlite:///{tmp_path}/ivr.db")
    with store.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT password_hash FROM users WHERE username = 'dana'")).scalar()
    assert "a long password" not in stored and stored.startswith("scrypt:")
    assert users.authenticate(store, "dana", "a long password")
    assert not users.authenticate(store, "dana", "a wrong password")
    assert "dana" in runner.invoke(cli, ["users", "list"]).output
    runner.invoke(cli, ["users", "passwd", "dana", "--password-stdin"], input="a new long password\n")
    assert users.authenticate(store, "dana", "a new long password")
    assert runner.invoke(cli, ["users", "remove", "dana"]).exit_code == 0
    assert not users.authenticate(store, "dana", "a new long password")
    store.close()


def test_demo_data_runs_the_real_engine(tmp_path, monkeypatch):
    from ivr.cli import cli

    db = tmp_path / "ivr.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.setenv("IVR_FLOWS_DIR", str(reports.__file__).rsplit("/ivr/", 1)[0] + "/flows")
    runner = CliRunner()
    out = runner.invoke(cli, ["demo-data", "--days", "7", "--calls-per-day", "60", "--seed", "3"])
    assert out.exit_code == 0, out.output
    store = Store(f"sqlite:///{db}")
    with store.engine.connect() as conn:
        n_calls = conn.execute(sa.select(sa.func.count()).select_from(calls)).scalar()
        n_steps = conn.execute(sa.select(sa.func.count()).select_from(steps)).scalar()
        nodes = {r[0] for r in conn.execute(sa.select(steps.c.node).distinct())}
    assert n_calls > 150 and n_steps > 5 * n_calls
    assert {"main_menu", "billing_queue", "tech_queue", "voicemail"} <= nodes
    r = reports.overview(store, reports.filters("8d", tz=NY))
    assert r["calls"] == n_calls
    assert r["abandoned"] > 0 and r["service_level"] is not None and 0 < r["known_caller_rate"] < 1
    assert max(r["calls_by_hour"][9:12]) > 3 * max(r["calls_by_hour"][0:5] + [1])  # busy mornings
    # The same seed writes the same calls: running it again adds nothing.
    runner.invoke(cli, ["demo-data", "--days", "7", "--calls-per-day", "60", "--seed", "3"])
    assert reports.overview(store, reports.filters("8d", tz=NY))["calls"] == n_calls
    out = runner.invoke(cli, ["demo-data", "--remove"])
    assert f"removed {n_calls} demo calls" in out.output
    assert reports.overview(store, reports.filters("8d", tz=NY))["calls"] == 0
    store.close()


def test_retention_deletes_old_calls_and_recordings(any_store, tmp_path):
    now = datetime.now(UTC)
    old = drive("CA_OLD", "+14155550199", [(5, E.Digits("1")), (50, E.QueueLeft("bridged", 9))],
                now - timedelta(days=400))
    recent = drive("CA_NEW", "+14155550199", [(5, E.Digits("1")), (50, E.QueueLeft("bridged", 9))],
                   now - timedelta(days=10))
    audio_dir = tmp_path / "recordings"
    (audio_dir / "CA_NEW").mkdir(parents=True)
    (audio_dir / "CA_NEW" / "7.wav").write_bytes(b"RIFF")
    rec = {"type": "recording", "call_sid": "CA_NEW", "seq": 7, "url": "https://x/RE1",
           "at": (now - timedelta(days=10)).isoformat()}
    any_store.record(old + recent + [rec])
    any_store.update_recording("CA_NEW", 7, "https://x/RE1", path=str(audio_dir / "CA_NEW" / "7.wav"))

    events, recs = retention.cutoffs(365, 7, now=now)
    dry = retention.purge(any_store, events, recs, audio_dir, dry_run=True)
    assert dry.calls == 1 and dry.recordings == 1 and any_store.call("CA_OLD") is not None
    done = retention.purge(any_store, events, recs, audio_dir)
    assert done.calls == 1 and done.steps == len([r for r in old if r["type"] == "step"])
    assert done.recordings == 1 and done.files == 1 and not (audio_dir / "CA_NEW").exists()
    assert any_store.call("CA_OLD") is None and any_store.steps("CA_OLD") == []
    assert any_store.call("CA_NEW") is not None and any_store.recordings("CA_NEW") == []
    with any_store.engine.connect() as conn:
        assert {r[0] for r in conn.execute(sa.select(call_metrics.c.call_sid))} == {"CA_NEW"}


def test_retention_command_needs_an_age(tmp_path, monkeypatch):
    from ivr.cli import cli

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/ivr.db")
    monkeypatch.delenv("IVR_RETENTION_DAYS", raising=False)
    runner = CliRunner()
    assert runner.invoke(cli, ["retention"]).exit_code == 2
    out = runner.invoke(cli, ["retention", "--days", "30", "--dry-run"])
    assert out.exit_code == 0 and "would delete 0 calls" in out.output


def test_a_caller_who_keeps_a_pending_callback_is_served_not_a_new_request(any_store):
    """Phoning again and pressing 1 to keep the callback already booked: served in the IVR,
    no new callback request, and the funnel never goes backwards."""
    records = []
    for i in range(3):
        sid, t = f"CA_KEEP{i}", T0 + timedelta(minutes=i)
        records += [
            {"type": "call_started", "call_sid": sid, "flow": "support", "from_number": f"+1415555011{i}",
             "to_number": "+15005550006", "caller_known": False, "customer_id": None,
             "started_at": t.isoformat(), "is_test": False, "parent_call_sid": None},
            {"type": "step", "call_sid": sid, "seq": 1, "at": (t + timedelta(seconds=5)).isoformat(),
             "flow": "support", "node": None, "kind": None, "event": "callback_pending", "digits": "1",
             "detail": {"callback": "CBX", "choice": "keep"}},
            {"type": "call_ended", "call_sid": sid, "status": "completed", "duration_s": 9,
             "ended_at": (t + timedelta(seconds=9)).isoformat(), "outcome": "callback", "last_node": None}]
    records += drive("CA_MENU", "+14155550150", [(15, E.NoInput()), (4, E.HangUp("completed", 20))],
                     T0 + timedelta(hours=1))
    any_store.record(records)
    assert metrics(any_store, "CA_KEEP0")["destination_kind"] == "callback_kept"
    assert metrics(any_store, "CA_KEEP0")["callback"] is False
    r = reports.overview(any_store, period())
    assert r["callbacks_requested"] == 0
    assert r["abandonment_rate"] == 0.25  # the one caller who hung up in the menu, of four
    stages = [s["calls"] for s in r["funnel"] if "calls" in s]
    assert stages == sorted(stages, reverse=True) and stages[-1] == 3


def test_answers_to_free_text_questions_are_not_counted_as_not_understood():
    from ivr.calllog.metrics import summarise
    from ivr.engine.simulation import SimulatedCall, default_matcher
    from ivr.flows.loader import load_flow_text

    flow = load_flow_text("id: ft\nstart: acct\nsettings: {escape: q}\nnodes:\n"
                          "  acct: {ask: {prompt: Say your account number., save_as: account}, next: q}\n"
                          "  q: {queue: {name: billing}}\n", "ft.yaml")
    call = SimulatedCall(flow, "+14155550100", now=T0, match=default_matcher(), call_sid="CAX",
                         propagate=True)
    call.start()
    call.now = T0 + timedelta(seconds=5)
    call.send(E.Speech("one two three four", 0.9))
    call.now = T0 + timedelta(seconds=90)
    call.send(E.HangUp("completed", 90))
    steps = [dict(s, seq=i, at=datetime.fromisoformat(s["at"]) if isinstance(s["at"], str) else s["at"])
             for i, s in enumerate(call.steps)]
    row, _ = summarise({"call_sid": "CAX", "started_at": T0, "flow": "ft", "outcome": "abandoned"}, steps)
    assert row["spoke"] is False and row["intent_recognised"] is False


def test_calls_resolved_by_self_service_by_flow_and_node(any_store):
    """A caller told where their order is who hangs up is resolved in the IVR; one who then
    asks for a person, or whose order system is down, is not."""
    from ivr.engine.answers import Answer

    shipped = {"order_status": Answer(body=json.dumps({"status": "shipped", "eta": "Thursday"}))}
    ada, grace = "+14155550100", "+14155550101"
    r = drive("CA_S1", ada, [(7, E.Digits("2")), (12, E.HangUp("completed", 25))], answers=shipped)
    r += drive("CA_S2", ada, [(7, E.Digits("2")), (10, E.Digits("1")), (60, E.QueueLeft("bridged", 20))],
               T0 + timedelta(hours=1), answers=shipped)
    r += drive("CA_S3", grace, [(7, E.Digits("2")), (60, E.QueueLeft("bridged", 30))],
               T0 + timedelta(hours=2), answers={"order_status": Answer(status=500, body="")})
    r += drive("CA_S4", "+12025550199", [(7, E.Digits("2")), (60, E.QueueLeft("bridged", 5))],
               T0 + timedelta(hours=3))
    any_store.record(r)
    s1 = metrics(any_store, "CA_S1")
    assert s1["outcome"] == "completed" and s1["self_service"]
    assert metrics(any_store, "CA_S2")["self_service"] and not metrics(any_store, "CA_S3")["self_service"]
    report = reports.overview(any_store, period())
    ss = report["self_service"]
    assert (ss["calls_answered"], ss["resolved"], ss["resolved_rate"]) == (2, 1, 0.25)
    assert ss["by_node"] == [{
        "flow": "support", "node": "order_status", "calls": 3, "requests": 3, "answered": 2, "errors": 1,
        "error_rate": 0.3333, "average_ms": 50, "waited_rate": 0.0, "resolved": 1, "resolved_rate": 0.3333}]
    assert reports.overview(any_store, period(flow="other"))["self_service"]["by_node"] == []
