"""/metrics for Prometheus: counts added up across gunicorn's workers, the live state read
from Redis, the bearer token, and the alert rules and Grafana dashboard shipped in docs/
(checked with promtool, from Debian's `prometheus` package)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from tests.conftest import ROOT, sign

MONITORING = ROOT / "docs" / "monitoring"
API_TOKEN = "metrics-token-0123456789"

FLOW = """
id: line
default: true
start: menu
settings: {escape: general}
nodes:
  menu:
    ask:
      prompt: "Press 1 for billing."
      choices:
        - {key: 1, label: billing, goto: billing}
  billing:
    queue: billing
    next: bye
  general:
    queue: general
    next: bye
  bye:
    hangup: "Goodbye."
"""
AGENTS = """
agents:
  alice: {queues: [billing], contact: "+15005550021"}
  bob: {queues: [billing, general], contact: "+15005550022"}
"""


def post(base: str, path: str, signed: bool = True, signature: str | None = None,
         **params) -> requests.Response:
    params = {k: str(v) for k, v in params.items()}
    headers = {}
    if signed:
        headers["X-Twilio-Signature"] = signature or sign(base + path, params)
    return requests.post(base + path, data=params, headers=headers, timeout=10)


def scrape(base: str, token: str = API_TOKEN) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, by name and sorted labels."""
    answer = requests.get(base + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def names_in(expression: str) -> set[str]:
    """The ivr_ metric names a PromQL expression reads (histograms by their series)."""
    return set(re.findall(r"\b(ivr_[a-z_]+)", expression))


@pytest.fixture
def server(start_server, tmp_path, redis_url):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "line.yaml").write_text(FLOW)
    (flows / "agents.yaml").write_text(AGENTS)
    return start_server({"REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path / 'log.db'}",
                         "IVR_FLOWS_DIR": str(flows), "IVR_API_TOKEN": API_TOKEN}, workers=2)


def test_a_scrape_after_real_webhooks_adds_up_every_worker(server):
    assert requests.get(server + "/metrics", timeout=5).status_code == 401
    assert requests.get(server + "/metrics", headers={"Authorization": "Bearer wrong"},
                        timeout=5).status_code == 401
    assert requests.put(server + "/api/agents/alice/status", json={"status": "available"},
                        headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=5).status_code == 200

    for i in range(3):
        assert "Press 1 for billing" in post(server, "/voice", CallSid=f"CAM{i}", From="+14155550100",
                                             To="+15005550006").text
    for i in range(2):  # two callers wait in billing; the third is still at the menu
        assert "<Enqueue" in post(server, "/voice/gather?s=1", CallSid=f"CAM{i}", Digits="1").text
    assert post(server, "/voice", signed=False, CallSid="CAX").status_code == 403
    assert post(server, "/voice", signature="Zm9yZ2Vk", CallSid="CAX").status_code == 403

    # Each scrape is answered by one of the two workers, which saw only some of the webhooks:
    # every one of them must show the totals of both.
    for _ in range(6):
        m = scrape(server)
        assert m[("ivr_webhook_requests_total", (("route", "/voice"), ("status", "200")))] == 3
        assert m[("ivr_webhook_requests_total", (("route", "/voice/gather"), ("status", "200")))] == 2
        assert m[("ivr_webhook_requests_total", (("route", "/voice"), ("status", "403")))] == 2
        assert m[("ivr_webhook_duration_seconds_count", (("route", "/voice"),))] == 5
        assert m[("ivr_webhook_duration_seconds_bucket", (("le", "+Inf"), ("route", "/voice/gather")))] == 2
        assert m[("ivr_webhook_refused_total", (("reason", "missing"),))] == 1
        assert m[("ivr_webhook_refused_total", (("reason", "invalid"),))] == 1

    assert m[("ivr_redis_up", ())] == 1
    assert m[("ivr_flows_loaded", ())] == 1
    assert m[("ivr_flow_files_refused", ())] == 0
    assert m[("ivr_queue_callers_waiting", (("queue", "billing"),))] == 2
    assert m[("ivr_queue_callers_waiting", (("queue", "general"),))] == 0
    assert m[("ivr_queue_longest_wait_seconds", (("queue", "billing"),))] >= 0
    assert m[("ivr_queue_agents", (("queue", "billing"), ("state", "available")))] == 1
    assert m[("ivr_queue_agents", (("queue", "billing"), ("state", "offline")))] == 1
    assert m[("ivr_agents", (("state", "available"),))] == 1
    assert m[("ivr_agents", (("state", "offline"),))] == 1
    assert m[("ivr_calls_active", (("flow", "line"), ("wait", "queue")))] == 2
    assert m[("ivr_calls_active", (("flow", "line"), ("wait", "ask")))] == 1
    assert ("ivr_steplog_backlog", ()) in m and ("ivr_steplog_dead_letters", ()) in m

    # A caller hangs up: the queue and the calls in progress say so at the next scrape.
    assert post(server, "/voice/status", CallSid="CAM0", CallStatus="completed", CallDuration="30"
                ).status_code == 204
    m = scrape(server)
    assert m[("ivr_queue_callers_waiting", (("queue", "billing"),))] == 1
    assert m[("ivr_calls_active", (("flow", "line"), ("wait", "queue")))] == 1

    # Everything the alert rules and the Grafana dashboard read is exported.
    exported = {name.removesuffix("_total").removesuffix("_bucket").removesuffix("_count")
                .removesuffix("_sum") for name, _ in m}
    exported |= {name for name, _ in m}
    rules = YAML(typ="safe").load((MONITORING / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            missing = names_in(rule["expr"]) - exported
            assert not missing, (rule["alert"], missing)
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            missing = names_in(target["expr"]) - exported
            assert not missing, (panel["title"], missing)


def test_metrics_are_off_without_an_api_token(make_app, twilio):
    app = make_app(api_token="")
    assert app.test_client().get("/metrics").status_code == 401
    app = make_app(api_token=API_TOKEN)
    client = app.test_client()
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert answer.status_code == 200
    assert "ivr_redis_up 1.0" in answer.text


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("this test needs promtool: apt-get install prometheus (scripts/test does)")
    return found


def test_the_alert_rules_and_scrape_config_pass_promtool(tmp_path):
    rules = MONITORING / "alerts.yml"
    checked = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # promtool's unit tests: series over time, and the alerts each must raise (or not).
    shutil.copy(rules, tmp_path / "alerts.yml")
    shutil.copy(Path(__file__).parent / "alerts.test.yml", tmp_path / "alerts.test.yml")
    tested = subprocess.run([promtool(), "test", "rules", "alerts.test.yml"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # The scrape configuration the docs show, with a token file that exists here.
    (tmp_path / "token").write_text(API_TOKEN)
    config = (MONITORING / "prometheus.yml").read_text()
    assert "/etc/prometheus/ivr_api_token" in config
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/ivr_api_token",
                                                            str(tmp_path / "token")))
    checked = subprocess.run([promtool(), "check", "config", "prometheus.yml"], capture_output=True,
                             text=True, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_fail_safe_answers_are_counted_by_reason(make_app):
    from tests.conftest import Twilio

    app = make_app(api_token=API_TOKEN, propagate_exceptions=False)
    client = app.test_client()

    def count(reason: str) -> float:
        text = client.get("/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"}).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "ivr_failsafe_answers_total" and s.labels == {"reason": reason}:
                    return s.value
        raise AssertionError(f"no ivr_failsafe_answers_total for {reason}")

    before = count("no_state")
    answer = Twilio(client).post("/voice/gather?s=1", CallSid="CANOSTATE", Digits="1")
    assert answer.status_code == 200 and "<Dial" in answer.text  # the apology and a person
    assert count("no_state") == before + 1
