"""The dashboard in a real headless browser (Debian's chromium driven by Playwright) against the real
server (`ivr serve`: gunicorn, Redis, the recorder thread, a SQLite step log) filled with demo calls."""

from __future__ import annotations

import base64
import csv
import os
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

from ivr.calllog.store import Store
from ivr.cli.demo import DemoGenerator
from ivr.flows.intents import Matchers
from ivr.flows.registry import FlowRegistry
from ivr.web import users
from tests.conftest import FLOWS

CHROMIUM = os.environ.get("IVR_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "supervisor password 1"
# Test calls are placed on a Tuesday morning (the line is open; no holiday of the example
# flow falls on a Tuesday) weeks after the demo month, which ends today, so the call list of
# that day holds only them, whatever today is.
_DAY = date.today() + timedelta(days=60)
_DAY += timedelta(days=(1 - _DAY.weekday()) % 7)
TEST_CALL_AT = f"{_DAY.isoformat()}T10:00"
TEST_CALL_DAY = f"since={_DAY.isoformat()}&until={(_DAY + timedelta(days=1)).isoformat()}"
CHARTS = ("wait-histogram", "service-level", "funnel", "heatmap", "callbacks")


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the browser tests need Debian's chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def server(start_server, tmp_path, redis_url):
    """The real server over a month of demo calls, with one supervisor."""
    flows = tmp_path / "flows"
    shutil.copytree(FLOWS, flows)
    db = tmp_path / "var" / "ivr.db"
    db.parent.mkdir(parents=True)
    store = Store(f"sqlite:///{db}")
    store.migrate()
    registry = FlowRegistry(flows)
    flow = registry.flows["support"]
    DemoGenerator(store, flow, registry.flows, registry.directory(flow), Matchers().match, days=21,
                  calls_per_day=60, seed=7).run()
    users.add(store, "sam", PASSWORD)
    store.close()
    url = start_server({"REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{db}",
                        "IVR_FLOWS_DIR": str(flows), "IVR_DISPLAY_TIMEZONE": "America/New_York"}, workers=1)
    yield url


def log_in(page, base: str) -> None:
    page.goto(base + "/dashboard/calls")
    assert "/dashboard/login" in page.url  # no session: the login page
    page.fill("input[name=username]", "sam")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/calls")  # and back where the supervisor was going


# Counts, in the screenshot itself, the pixels of each chart that are strongly coloured (bars,
# lines, cells), so a chart that renders blank or collapsed fails even though its SVG is in the DOM.
COUNT_PIXELS = """async ([png, boxes]) => {
  const img = new Image();
  img.src = 'data:image/png;base64,' + png;
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.width; canvas.height = img.height;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const out = {};
  for (const [name, b] of Object.entries(boxes)) {
    const data = ctx.getImageData(b.x, b.y, b.w, b.h).data;
    let coloured = 0, total = data.length / 4;
    const colours = new Set();
    for (let i = 0; i < data.length; i += 4) {
      const r = data[i], g = data[i + 1], bl = data[i + 2];
      if (Math.max(r, g, bl) - Math.min(r, g, bl) > 40) {
        coloured++;
        colours.add((r >> 4) << 8 | (g >> 4) << 4 | (bl >> 4));
      }
    }
    out[name] = {share: coloured / total, colours: colours.size, width: b.w, height: b.h};
  }
  return out;
}"""


def test_overview_renders_its_charts(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, server)
    page.goto(server + "/dashboard/?since=30d")
    assert page.locator("[data-measure=calls] .v").inner_text() not in ("0", "")
    for chart in CHARTS:
        assert page.locator(f"svg[data-chart={chart}]").is_visible()
    assert page.locator("svg[data-chart=heatmap] rect.cell").count() == 7 * 24
    assert page.locator("svg[data-chart=wait-histogram] rect.bar").count() >= 5
    assert page.locator("svg[data-chart=service-level] circle.point").count() >= 15  # one per day
    assert page.locator("svg[data-chart=funnel] rect.stage").count() == 3

    shot = tmp_path / "overview.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("IVR_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["IVR_SCREENSHOT_DIR"]) / "overview.png")
    boxes = page.evaluate("""(names) => Object.fromEntries(names.map(n => {
        const r = document.querySelector(`svg[data-chart=${n}]`).getBoundingClientRect();
        return [n, {x: Math.round(r.left + scrollX), y: Math.round(r.top + scrollY),
                    w: Math.round(r.width), h: Math.round(r.height)}];
    }))""", list(CHARTS))
    counted = page.evaluate(COUNT_PIXELS, [base64.b64encode(shot.read_bytes()).decode(), boxes])
    for chart in CHARTS:
        c = counted[chart]
        assert c["width"] > 400 and c["height"] > 100, (chart, c)
        assert c["share"] > 0.03, (chart, c)  # bars, lines and cells, not an empty frame
        assert c["colours"] >= 2, (chart, c)

    # From the chart's table to the calls behind a figure, then to one call's timeline.
    page.click("#abandoned-by-node a:text('main_menu')")
    page.wait_for_url("**/dashboard/calls?**node=main_menu**")
    rows = page.locator("table#calls tbody tr")
    assert rows.count() >= 1
    last_nodes = page.locator("table#calls tbody tr td:nth-child(5)").all_inner_texts()
    assert last_nodes and all(t == "main_menu" for t in last_nodes)
    rows.first.locator("a").click()
    page.wait_for_url("**/dashboard/calls/CADEMO*")
    assert page.locator("table#timeline tbody tr").count() >= 4
    assert "abandoned at main_menu" in page.locator("dl.facts").inner_text()


def test_csv_export_masks_numbers(browser, server, tmp_path):
    page = browser.new_page(accept_downloads=True)
    log_in(page, server)
    page.goto(server + "/dashboard/calls?since=30d&outcome=queued")
    with page.expect_download() as download:
        page.click("form.export button")
    path = tmp_path / "calls.csv"
    download.value.save_as(path)
    rows = list(csv.DictReader(path.open()))
    assert rows and all(r["outcome"] == "queued" for r in rows)
    numbers = [r["from_number"] for r in rows if r["from_number"]]
    assert numbers and all("*" in n for n in numbers)


def test_an_operator_tries_the_flow_as_a_caller(browser, server):
    page = browser.new_page()
    log_in(page, server)
    page.click("nav a:text('Test call')")
    page.select_option("select[name=flow]", "support")
    page.fill("input[name=from]", "+14155550100")
    page.fill("input[name=at]", TEST_CALL_AT)
    page.click("form.stack button[type=submit]")
    transcript = page.locator("#transcript")
    assert "Hi Ada, thanks for calling Northwind Fibre." in transcript.inner_text()
    page.fill("#say", "I was charged twice")
    with page.expect_navigation():
        page.keyboard.press("Enter")  # the form's first button: say it
    assert "Connecting you to our billing team." in transcript.inner_text()
    assert "main_menu → billing_queue" in page.locator("#path").inner_text()
    page.click("button[data-action=hold]")
    assert "Your estimated wait" not in transcript.inner_text()  # no estimate was given
    assert "You are next in line." in transcript.inner_text()
    page.click("button[data-action=agent_answers]")
    assert "Call ended: queued at 'billing_queue'" in transcript.inner_text()
    sid = page.url.rsplit("/", 1)[1].split("#")[0]

    # A second call on the keypad, as an unknown caller.
    page.goto(server + "/dashboard/test-call")
    page.fill("input[name=from]", "Anonymous")
    page.fill("input[name=at]", TEST_CALL_AT)
    page.click("form.stack button[type=submit]")
    page.click("button[data-key='3']")
    assert "Connecting you to technical support." in transcript.inner_text()
    page.click("button[data-action=hangup]")
    assert "Call ended: abandoned at 'tech_queue'" in transcript.inner_text()

    # The recorder thread writes test calls to the log, marked as tests and left out by default.
    for _ in range(50):
        page.goto(server + f"/dashboard/calls?{TEST_CALL_DAY}&tests=1")
        if sid in page.content():
            break
        page.wait_for_timeout(100)
    assert sid in page.content()
    page.goto(server + f"/dashboard/calls?{TEST_CALL_DAY}")
    assert sid not in page.content()
    page.goto(server + f"/dashboard/calls/{sid}")
    assert "I was charged twice" in page.locator("table#timeline").inner_text()
    page.click("header button:text('Log out')")
    page.goto(server + "/dashboard/")
    assert "/dashboard/login" in page.url
