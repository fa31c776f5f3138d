"""The supervisors' dashboard through Flask's test client: login, CSRF, pages, exports, test calls."""

from __future__ import annotations

import csv
import html
import io
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from ivr.calllog.recorder import Recorder
from ivr.web import users
from tests.reportutil import empty_store, scenario

PASSWORD = "correct horse battery"
PERIOD = "since=2026-11-24&until=2026-11-30"
PAGES = ["/dashboard/", "/dashboard/calls", "/dashboard/calls.csv", "/dashboard/calls/CA_A",
         "/dashboard/report.json", "/dashboard/test-call", "/dashboard/test-call/TC0123",
         "/dashboard/calls/CA_A/recordings/1"]


@pytest.fixture
def dash(make_app, tmp_path):
    app = make_app(public_url="http://localhost", display_timezone="America/New_York",
                   recordings_dir=tmp_path / "recordings")
    svc = app.extensions["ivr"]
    svc.migrate()
    users.add(svc.store, "sam", PASSWORD)
    return app


def token(response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True)).group(1)


def login(client, password: str = PASSWORD, next_url: str | None = None, **request):
    page = client.get("/dashboard/login")
    data = {"username": "sam", "password": password, "csrf_token": token(page)}
    if next_url:
        data["next"] = next_url
    return client.post("/dashboard/login", data=data, **request)


@pytest.fixture
def client(dash):
    c = dash.test_client()
    assert login(c).status_code == 302
    return c


def text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))))


def test_every_page_needs_a_login(dash):
    c = dash.test_client()
    for url in PAGES:
        r = c.get(url)
        assert r.status_code == 302, url
        assert r.headers["Location"].startswith("/dashboard/login?next=")
    r = c.post("/dashboard/test-call", data={"flow": "support"})
    assert r.status_code == 302 and "/dashboard/login" in r.headers["Location"]
    assert c.get("/dashboard/static/dashboard.css").status_code == 200


def test_login_logout_and_csrf(dash):
    c = dash.test_client()
    page = c.get("/dashboard/login")
    assert page.status_code == 200
    no_token = c.post("/dashboard/login", data={"username": "sam", "password": PASSWORD})
    assert no_token.status_code == 400
    wrong = login(c, "not the password")
    assert wrong.status_code == 401 and "Wrong user name or password" in text(wrong)
    ok = login(c, next_url="/dashboard/calls")
    assert ok.status_code == 302 and ok.headers["Location"] == "/dashboard/calls"
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    home = c.get("/dashboard/")
    assert home.status_code == 200 and "sam" in text(home)
    assert c.post("/dashboard/logout").status_code == 400  # no token: refused
    assert c.post("/dashboard/logout", data={"csrf_token": token(home)}).status_code == 302
    assert c.get("/dashboard/").status_code == 302


def test_no_open_redirect_after_login(dash):
    r = login(dash.test_client(), next_url="https://evil.example/steal")
    assert r.headers["Location"] == "/dashboard/"


def _from(address: str) -> dict:
    """A request that nginx on this machine (a trusted proxy) passed on from `address`."""
    return {"headers": {"X-Forwarded-For": address}}


def test_parallel_guesses_are_checked_no_more_often_than_the_throttle_allows(dash):
    """The count is taken atomically before the password is checked: 60 guesses at once
    from one address at one name get at most FREE checks, the rest wait."""
    from ivr.web.dashboard import throttle

    clients = [dash.test_client() for _ in range(60)]
    tokens = [token(c.get("/dashboard/login")) for c in clients]
    start = threading.Barrier(len(clients))

    def guess(i: int):
        start.wait()
        data = {"username": "sam", "password": f"guess {i:04d} guess", "csrf_token": tokens[i]}
        return clients[i].post("/dashboard/login", data=data, **_from("198.51.100.7"))

    with ThreadPoolExecutor(len(clients)) as pool:
        answers = list(pool.map(guess, range(len(clients))))
    checked = [r for r in answers if r.status_code == 401]
    held = [r for r in answers if r.status_code == 429]
    assert 1 <= len(checked) <= throttle.PAIR.free and len(checked) + len(held) == 60
    assert all(int(r.headers["Retry-After"]) >= 1 and "Try again in" in text(r) for r in held)
    # the supervisor, from their own address, is not locked out by it
    assert login(dash.test_client(), **_from("203.0.113.50")).status_code == 302


def test_failures_slow_an_address_and_name_down_and_the_right_password_still_gets_in(dash, monkeypatch):
    from ivr.web.dashboard import throttle

    now = [1_800_000_000_000]
    monkeypatch.setattr(throttle, "now_ms", lambda: now[0])
    c = dash.test_client()
    for _ in range(throttle.PAIR.free):
        assert login(c, "guess guess guess", **_from("198.51.100.8")).status_code == 401
    held = login(c, **_from("198.51.100.8"))  # even the right password waits its turn
    assert held.status_code == 429 and held.headers["Retry-After"] == "1"
    now[0] += 1000
    assert login(c, "guess guess guess", **_from("198.51.100.8")).status_code == 401
    assert login(c, **_from("198.51.100.8")).headers["Retry-After"] == "2"  # the wait doubles
    now[0] += 2000
    assert login(c, **_from("198.51.100.8")).status_code == 302  # not a lockout


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(dash):
    """From a client that is not a trusted proxy, X-Forwarded-For is its own say-so: the
    throttle counts the peer's address, however the header changes."""
    from ivr.web.dashboard import throttle

    c = dash.test_client()
    peer = {"REMOTE_ADDR": "203.0.113.9"}
    for i in range(throttle.PAIR.free):
        assert login(c, "guess guess guess", environ_base=peer, **_from(f"10.0.0.{i}")).status_code == 401
    assert login(c, environ_base=peer, **_from("10.0.0.99")).status_code == 429
    # the same from the trusted proxy on loopback: each address is its own
    assert login(c, **_from("10.0.0.99")).status_code == 302


def test_logging_out_ends_the_session_on_the_server(dash):
    """A copy of the cookie taken before logging out no longer opens anything."""
    c = dash.test_client()
    assert login(c).status_code == 302
    saved = c.get_cookie("ivr_session").value
    elsewhere = dash.test_client()  # the same user's other session stays open
    assert login(elsewhere).status_code == 302
    home = c.get("/dashboard/")
    assert c.post("/dashboard/logout", data={"csrf_token": token(home)}).status_code == 302
    replay = dash.test_client()
    replay.set_cookie("ivr_session", saved)
    r = replay.get("/dashboard/calls")
    assert r.status_code == 302 and "/dashboard/login" in r.headers["Location"]
    assert elsewhere.get("/dashboard/calls").status_code == 200


def test_the_overview_shows_failed_calls_apart_from_abandoned_ones(dash, client):
    from datetime import timedelta

    from ivr.engine import events as E
    from tests.reportutil import T0, drive

    failed = [r for i in range(2) for r in drive(f"CA_F{i}", "+14155550177", [(3, E.HangUp("failed", 3))],
                                                 T0 + timedelta(hours=5, minutes=i), status="failed")]
    dash.extensions["ivr"].store.record(scenario() + failed)
    body = client.get(f"/dashboard/?{PERIOD}").get_data(as_text=True)
    tiles = dict(re.findall(r'data-measure="([a-z_]+)"><span class="v">([^<]+)<', body))
    assert tiles["calls"] == "8" and tiles["abandonment_rate"] == "40.0%"
    tile = body.split('data-measure="abandonment_rate"')[1].split("</div>")[0]
    link = re.search(r'<a href="([^"]+)">2 failed calls</a> excluded', tile)
    assert link, tile
    listed = text(client.get(html.unescape(link.group(1))))
    assert "2 calls." in listed
    assert len(re.findall(r"\+14155550177 (repeat )?support failed main_menu", listed)) == 2


def test_session_cookie_is_secure_behind_https(make_app):
    app = make_app(display_timezone="UTC")  # PUBLIC_URL is https
    svc = app.extensions["ivr"]
    svc.migrate()
    users.add(svc.store, "sam", PASSWORD)
    c = app.test_client()
    page = c.get("/dashboard/login", base_url="https://ivr.example.test")
    r = c.post("/dashboard/login", base_url="https://ivr.example.test",
               data={"username": "sam", "password": PASSWORD, "csrf_token": token(page)})
    assert r.status_code == 302 and "Secure" in r.headers["Set-Cookie"]


def test_overview_shows_the_figures_and_charts(dash, client):
    dash.extensions["ivr"].store.record(scenario())
    r = client.get(f"/dashboard/?{PERIOD}")
    assert r.status_code == 200
    body = r.get_data(as_text=True)
    for chart in ("wait-histogram", "service-level", "funnel", "heatmap", "callbacks"):
        assert f'data-chart="{chart}"' in body
    tiles = dict(re.findall(r'data-measure="([a-z_]+)"><span class="v">([^<]+)<', body))
    assert tiles["calls"] == "6" and tiles["service_level"] == "50.0%"
    assert tiles["abandonment_rate"] == "40.0%" and tiles["callback_kept_rate"] == "100.0%"
    assert tiles["asa"] == "22 s"
    page = text(r)
    assert "billing_queue" in page and "main_menu" in page
    assert "1 hung up at main_menu (ask)" in page  # the funnel names the node
    # One rect per weekday and hour in the heatmap; bars only where there are callers.
    heat = body.split('data-chart="heatmap"')[1].split("</svg>")[0]
    assert heat.count('class="cell"') == 7 * 24
    assert "Tue 10:00–10:59: 2 calls" in heat
    with_tests = client.get(f"/dashboard/?{PERIOD}&tests=1").get_data(as_text=True)
    assert re.search(r'data-measure="calls"><span class="v">7<', with_tests)
    billing = client.get(f"/dashboard/?{PERIOD}&queue=billing").get_data(as_text=True)
    assert re.search(r'data-measure="calls"><span class="v">2<', billing)
    data = client.get(f"/dashboard/report.json?{PERIOD}").get_json()
    assert data["abandoned_by_node"] == {"billing_queue": 1, "main_menu": 1}


def test_a_bad_period_is_explained_not_a_crash(client):
    r = client.get("/dashboard/?since=someday")
    assert r.status_code == 200 and "is not a date or time" in text(r)


def test_call_list_timeline_and_export(dash, client):
    dash.extensions["ivr"].store.record(scenario())
    r = client.get(f"/dashboard/calls?{PERIOD}&outcome=abandoned")
    page = text(r)
    assert "2 calls" in page and "billing_queue" in page and "main_menu" in page
    assert "CA_C" in r.get_data(as_text=True) and "CA_A" not in r.get_data(as_text=True)

    call = text(client.get("/dashboard/calls/CA_C"))
    assert "purple elephants" in call and "(0.42)" in call  # recognised speech and its confidence
    assert "70 s hangup" in call  # the queue time when the caller hung up
    assert "abandoned at billing_queue" in call and "yes, within 24 hours" in call
    assert "Nov 24, 2026, 12:00:00 PM" in call  # 17:00 UTC shown in New York time
    assert client.get("/dashboard/calls/CA_nope").status_code == 404

    masked = client.get(f"/dashboard/calls.csv?{PERIOD}")
    assert masked.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(masked.get_data(as_text=True))))
    assert len(rows) == 6 and {r["from_number"] for r in rows} >= {"+1 ********00", "+1 ********99", ""}
    assert not any("5550100" in r["from_number"] for r in rows)
    c = next(r for r in rows if r["call_sid"] == "CA_C")
    assert c["outcome"] == "abandoned" and c["queue_wait_s"] == "70.0" and c["repeat_24h"] == "1"
    assert c["started_at"] == "2026-11-24T12:00:00-05:00"
    plain = list(csv.DictReader(io.StringIO(client.get(f"/dashboard/calls.csv?{PERIOD}&mask=0").get_data(
        as_text=True))))
    assert "+14155550100" in {r["from_number"] for r in plain}


def test_recording_files_only_from_the_recordings_folder(dash, client, tmp_path):
    store = dash.extensions["ivr"].store
    store.record(scenario())
    audio = tmp_path / "recordings" / "CA_A" / "9.wav"
    audio.parent.mkdir(parents=True)
    audio.write_bytes(b"RIFF....WAVEfmt ")
    store.update_recording("CA_A", 9, "https://api.twilio.com/RE1", path=str(audio), transcript="hello there")
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF")
    store.update_recording("CA_A", 10, "https://api.twilio.com/RE2", path=str(secret))
    assert client.get("/dashboard/calls/CA_A/recordings/9").data.startswith(b"RIFF")
    assert client.get("/dashboard/calls/CA_A/recordings/10").status_code == 404
    page = text(client.get("/dashboard/calls/CA_A"))
    assert "hello there" in page


def test_a_test_call_in_the_browser_runs_the_engine_and_is_logged_as_a_test(dash, client):
    form = client.get("/dashboard/test-call")
    assert "+14155550100" in form.get_data(as_text=True)  # known callers to try
    start = client.post("/dashboard/test-call", data={"flow": "support", "from": "+14155550100",
                                                      "at": "2026-11-24T10:00", "csrf_token": token(form)})
    assert start.status_code == 302
    url = start.headers["Location"]
    page = client.get(url)
    assert "Hi Ada, thanks for calling Northwind Fibre." in text(page)
    t = token(page)
    client.post(url, data={"action": "say", "text": "purple elephants", "csrf_token": t})
    client.post(url, data={"key": "3", "csrf_token": t})
    page = text(client.get(url))
    assert "Sorry, I didn't catch that." in page
    assert "Connecting you to technical support." in page
    assert "check_hours → greet → greet_known → main_menu → tech_queue" in page
    client.post(url, data={"action": "hold", "csrf_token": t})
    assert "You are next in line." in text(client.get(url))
    client.post(url, data={"action": "agent_answers", "csrf_token": t})
    page = text(client.get(url))
    assert "Call ended: queued at 'tech_queue'" in page
    sid = url.rsplit("/", 1)[1]
    refused = client.post(url, data={"action": "hangup", "csrf_token": t}, follow_redirects=True)
    assert "has ended" in text(refused)

    svc = dash.extensions["ivr"]
    Recorder(svc.redis, svc.store).flush()  # the recorder thread's job on a server
    call = svc.store.call(sid)
    assert call["is_test"] is True and call["outcome"] == "queued" and call["caller_known"] is True
    assert [s["event"] for s in svc.store.steps(sid)][-4:] == ["enter", "queue_wait", "queue_left", "hangup"]
    assert sid not in client.get(f"/dashboard/calls?{PERIOD}").get_data(as_text=True)
    assert sid in client.get(f"/dashboard/calls?{PERIOD}&tests=1").get_data(as_text=True)
    assert "test call" in text(client.get(f"/dashboard/calls/{sid}"))


def test_test_call_refuses_what_cannot_happen(client):
    form = client.get("/dashboard/test-call")
    bad = client.post("/dashboard/test-call", data={"flow": "nope", "csrf_token": token(form)},
                      follow_redirects=True)
    assert "no flow 'nope' is loaded" in text(bad)
    start = client.post("/dashboard/test-call", data={"flow": "support", "from": "Anonymous",
                                                      "at": "2026-11-24T23:30", "csrf_token": token(form)})
    url = start.headers["Location"]
    page = client.get(url)
    assert "We're closed right now." in text(page)  # after hours: straight to voicemail
    r = client.post(url, data={"action": "hold", "csrf_token": token(page)}, follow_redirects=True)
    assert "is not possible now" in text(r)
    client.post(url, data={"action": "message", "text": "please call me about my bill",
                           "csrf_token": token(page)})
    assert "Call ended: voicemail at 'goodbye'" in text(client.get(url))


def test_removing_a_user_or_changing_the_password_ends_their_sessions(dash, client):
    assert client.get("/dashboard/calls").status_code == 200
    users.set_password(dash.extensions["ivr"].store, "sam", "a brand new password")
    r = client.get("/dashboard/calls")
    assert r.status_code == 302 and "/dashboard/login" in r.headers["Location"]
    assert login(client).status_code == 401  # the old password is gone
    assert login(client, "a brand new password").status_code == 302
    assert client.get("/dashboard/calls").status_code == 200
    users.remove(dash.extensions["ivr"].store, "sam")
    assert client.get("/dashboard/calls").status_code == 302


def test_periods_beyond_the_calendar_are_explained_not_a_crash(client):
    for query in ("since=99999999d", "until=9999-12-31", "until=0001-01-02"):
        r = client.get(f"/dashboard/?{query}")
        assert r.status_code == 200 and ("too far" in text(r) or "after the first week" in text(r)), query
        # like any bad value: reported on the page, the default period used instead
        assert client.get(f"/dashboard/report.json?{query}").status_code == 200, query
        assert client.get(f"/dashboard/calls.csv?{query}").status_code == 200, query
    assert client.get("/dashboard/calls?page=99999999999999999999999").status_code == 200


def test_workers_starting_together_share_one_session_key(tmp_path):
    """Without IVR_SECRET_KEY every process reads the key file; the first one to start writes it,
    and processes starting at the same moment must not end up signing with different keys."""
    import threading

    from ivr.config import Config
    from ivr.web.dashboard import secret_key

    cfg = Config(data_dir=tmp_path)
    keys: list[str] = []
    threads = [threading.Thread(target=lambda: keys.append(secret_key(cfg))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 16 and len(set(keys)) == 1
    assert (tmp_path / "dashboard_secret").read_text() == keys[0]
    assert [p.name for p in tmp_path.iterdir()] == ["dashboard_secret"]  # no temporary files left


def test_a_test_call_uses_the_answers_the_flows_tests_declare_or_the_real_api(make_app, tmp_path,
                                                                              monkeypatch):
    """Request nodes get what flows/tests/support.test.yaml declares under `responses:`, or,
    with the box ticked, the real API (here the fake order API on loopback)."""
    from tests.order_api import OrderApi

    api = OrderApi().start()
    try:
        monkeypatch.setenv("NORTHWIND_API_URL", api.url)
        monkeypatch.setenv("NORTHWIND_API_TOKEN", "t0ken")
        app = make_app(public_url="http://localhost", request_hosts=api.host,
                       display_timezone="America/New_York")
        app.extensions["ivr"].migrate()
        users.add(app.extensions["ivr"].store, "sam", PASSWORD)
        client = app.test_client()
        assert login(client).status_code == 302

        def call(live: bool) -> str:
            form = client.get("/dashboard/test-call")
            data = {"flow": "support", "from": "+14155550101", "at": "2026-11-24T10:00",
                    "csrf_token": token(form)}
            if live:
                data["live_requests"] = "1"
            url = client.post("/dashboard/test-call", data=data).headers["Location"]
            page = client.get(url)
            client.post(url, data={"action": "say", "text": "where is my order", "csrf_token": token(page)})
            return text(client.get(url))

        declared = call(live=False)
        assert "Your latest order is shipped with UPS" in declared  # as the tests declare it
        assert "request 'order_status': GET ***/v1/customers/C-1002/orders/latest -> HTTP 200" in declared
        assert "(the answer declared in the flow's tests)" in declared and api.requests == []
        live = call(live=True)
        assert "Your latest order is processing, and should arrive next week." in live  # the API's
        assert [r.path for r in api.requests] == ["/v1/customers/C-1002/orders/latest"]
    finally:
        api.stop()


def test_a_calls_timeline_shows_its_requests_and_text_messages(dash, client):
    from ivr.runtime.sms import record

    store = dash.extensions["ivr"].store
    store.record(scenario())
    store.record([
        {"type": "step", "call_sid": "CA_A", "seq": 90, "at": "2026-11-24T15:05:00+00:00", "flow": "support",
         "node": "order_status", "kind": "request", "event": "request", "action": "request:error",
         "detail": {"status": 503, "ms": 212, "bytes": 20, "result": "status"}},
        record("CA_A", 91, "queued", flow="support", node="text_order", to="+14155550100", segments=1,
               sid="SM1"),
        record("CA_A", 91, "undelivered", sid="SM1", error_code=30003)])
    page = text(client.get("/dashboard/calls/CA_A"))
    assert "request:error status HTTP 503, 212 ms" in page
    assert "Text messages" in page and "undelivered (Twilio error 30003)" in page


def test_the_overview_shows_the_calls_resolved_by_self_service(dash, client):
    import json

    from ivr.engine import events as E
    from ivr.engine.answers import Answer
    from tests.reportutil import T0, drive

    shipped = {"order_status": Answer(body=json.dumps({"status": "shipped"}))}
    store = dash.extensions["ivr"].store
    store.record(drive("CA_S1", "+14155550100", [(7, E.Digits("2")), (12, E.HangUp("completed", 25))],
                       answers=shipped)
                 + drive("CA_S2", "+12025550199", [(7, E.Digits("2")), (60, E.QueueLeft("bridged", 5))],
                         T0.replace(hour=16)))
    page = text(client.get(f"/dashboard/?{PERIOD}"))
    assert "50.0% resolved by self-service (1 calls)" in page
    assert "support order_status 1 1 0 0.0% 50 ms 0.0% 1 100.0%" in page
    assert "1 of 2 calls (50.0%) were resolved in the IVR by self-service" in page


@pytest.fixture
def pg_client(make_app, tmp_path):
    """The dashboard on a PostgreSQL schema of its own, logged in."""
    schemas = empty_store("postgresql", tmp_path)
    store = next(schemas)
    url = store.engine.url.render_as_string(hide_password=False)
    app = make_app(public_url="http://localhost", database_url=url)
    svc = app.extensions["ivr"]
    svc.migrate()
    users.add(svc.store, "sam", PASSWORD)
    c = app.test_client()
    assert login(c).status_code == 302
    yield c
    svc.store.close()
    schemas.close()


BAD_VALUES = [f"{page}?{name}=a%00b" for page in ("/dashboard/", "/dashboard/calls", "/dashboard/calls.csv",
                                                   "/dashboard/report.json")
              for name in ("flow", "queue", "outcome", "number", "node", "since")]
BAD_VALUES += ["/dashboard/calls/CA%00A", "/dashboard/calls/CA%00A/recordings/1",
               "/dashboard/test-call/TC%00"]


def test_a_nul_in_a_filter_is_a_clear_400(pg_client):
    """PostgreSQL refuses a NUL in text (psycopg.DataError): a page was a 500."""
    for url in BAD_VALUES:
        r = pg_client.get(url)
        assert r.status_code == 400 and "NUL" in text(r), url
    assert pg_client.get("/dashboard/calls?flow=support").status_code == 200


def test_a_line_break_in_the_page_after_login_is_a_clear_400(dash):
    c = dash.test_client()
    assert c.get("/dashboard/login?next=/dashboard/calls%0d%0aSet-Cookie:%20x=1").status_code == 400
    r = login(c, next_url="/dashboard/calls\r\nSet-Cookie: x=1")
    assert r.status_code == 400 and "after logging in" in text(r)
    assert login(c, next_url="/dashboard/calls").headers["Location"] == "/dashboard/calls"


def test_without_redis_a_supervisor_still_logs_in_and_reads_the_reports(make_app):
    """Sessions and the throttle live in Redis; during an outage the reports (SQL) stay open."""
    from tests.conftest import free_port

    app = make_app(public_url="http://localhost", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    app.extensions["ivr"].migrate()
    users.add(app.extensions["ivr"].store, "sam", PASSWORD)
    c = app.test_client()
    assert login(c).status_code == 302
    assert c.get("/dashboard/calls").status_code == 200
