"""Operators' flow tests (`ivr flows test`) and the terminal simulator (`ivr simulate`)."""

from __future__ import annotations

import io
import subprocess
import sys

from click.testing import CliRunner

from ivr.cli import cli
from ivr.cli.flowtests import run_file
from tests.conftest import FLOWS


def test_the_example_flow_passes_its_own_tests():
    result = CliRunner().invoke(cli, ["flows", "test", str(FLOWS / "tests")])
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output and "PASS" in result.output


def write(tmp_path, body: str):
    path = tmp_path / "flows" / "tests" / "x.test.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "flows" / "support.yaml").write_text((FLOWS / "support.yaml").read_text())
    (tmp_path / "flows" / "customers.csv").write_text((FLOWS / "customers.csv").read_text())
    path.write_text(body)
    return path


def test_a_failing_expectation_names_the_line_and_what_was_heard(tmp_path):
    path = write(tmp_path, """flow: support
at: 2026-11-24T15:00:00Z
tests:
  - name: wrong route
    from: "+12025550199"
    steps:
      - press: 2
      - at: billing_queue
""")
    res = run_file(path, propagate=True)
    assert not res.ok and len(res.failed) == 1
    failure = res.failed[0]
    assert failure.line == 8 and failure.test == "wrong route"
    assert "expected the call to be at 'billing_queue', but it is at 'orders_queue'" in failure.message
    out = CliRunner().invoke(cli, ["flows", "test", str(path)])
    assert out.exit_code == 1 and f"FAIL {path}:8: wrong route" in out.output


def test_a_misspelt_step_is_a_file_error_with_a_suggestion(tmp_path):
    path = write(tmp_path, """flow: support
tests:
  - name: typo
    steps:
      - pres: 1
""")
    res = run_file(path, propagate=True)
    assert not res.ok
    assert "unknown step 'pres' (did you mean 'press'?)" in str(res.problems[0])
    assert res.problems[0].line == 5


def test_malformed_tests_are_errors_with_lines_not_tracebacks(tmp_path):
    path = write(tmp_path, """flow: support
tests:
  - name: caller as text
    caller: Ada
    steps:
      - press: 1
  - name: words for a confidence
    steps:
      - say: {text: billing, confidence: high}
  - name: vars as a list
    steps:
      - press: 1
      - vars: [a]
""")
    res = run_file(path, propagate=True)
    assert not res.ok
    text = "\n".join(str(p) for p in res.problems) + "\n".join(str(f) for f in getattr(res, "failures", []))
    assert "'caller' is the caller's directory record" in text
    assert "confidence 'high' must be a number from 0 to 1" in text


def test_hears_reports_what_the_caller_actually_heard(tmp_path):
    path = write(tmp_path, """flow: support
at: 2026-11-24T15:00:00Z
tests:
  - name: greeting
    from: Anonymous
    steps:
      - hears: Hi Ada
""")
    failure = run_file(path).failed[0]
    assert "expected to hear 'Hi Ada', but heard: \"Thanks for calling Northwind Fibre." in failure.message


def test_simulator_reads_a_script_from_stdin():
    script = "\n".join(["", "I want to cancel my service"]) + "\n"
    proc = subprocess.run([sys.executable, "-m", "ivr.cli", "simulate", str(FLOWS / "support.yaml"),
                           "--from", "+14155550100", "--at", "2026-11-24T15:00:00Z"],
                          input=script, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Call from +14155550100 (known caller Ada Lovelace)" in out
    assert "IVR: Hi Ada, thanks for calling Northwind Fibre." in out
    assert "IVR: Sorry, I didn't hear anything." in out
    assert "[the caller waits in queue 'retention' for the next agent]" in out
    assert "Path: check_hours -> greet -> greet_known -> main_menu -> retention_queue" in out


def test_simulated_voicemail_after_hours():
    from datetime import UTC, datetime

    from ivr.engine.simulation import SimulatedCall, default_matcher, directory_for, interactive
    from ivr.flows.loader import load_flow

    flow = load_flow(FLOWS / "support.yaml")
    call = SimulatedCall(flow, "+14155550101", now=datetime(2026, 11, 29, 12, tzinfo=UTC),
                         directory=directory_for(flow), match=default_matcher(), propagate=True)
    out = io.StringIO()
    interactive(call, io.StringIO("Hi it's Grace, please call me back\n"), out)
    text = out.getvalue()
    assert "Thanks for calling Northwind Fibre, Grace." in text  # Sunday: closed
    assert "We open again tomorrow at 8 AM." in text
    assert "[recording a message" in text and "IVR: Thank you. Goodbye." in text


def test_keys_reach_the_flow_as_twilio_sends_them(tmp_path):
    """Twilio stops a menu's input at its finish key (# by default) and leaves the key out, and
    stops after num_digits keys: flow tests and the simulator must see what real calls see."""
    flows = tmp_path / "flows"
    (flows / "tests").mkdir(parents=True)
    (flows / "acct.yaml").write_text("""id: acct
nodes:
  account:
    ask: {prompt: "Type your account number, then press pound.", save_as: account,
          no_input: {goto: bye}}
    next: pin
  pin:
    ask: {prompt: "Your two digit code?", save_as: pin, num_digits: 2, finish_on_key: "*",
          no_input: {goto: bye}}
    next: bye
  bye: {hangup: "Thanks."}
""")
    path = flows / "tests" / "acct.test.yaml"
    path.write_text("""flow: acct
tests:
  - name: the finish key ends the entry and is left out
    steps:
      - press: "1001#99"
      - press: "4#56*"
      - vars: {account: "1001", pin: "4#"}
  - name: the finish key alone is silence
    steps:
      - press: "#"
      - hears: "didn't hear anything"
      - at: account
""")
    res = run_file(path, propagate=True)
    assert res.ok, [str(f.message) for f in res.failed] + [str(p) for p in res.problems]


def test_a_check_naming_no_node_or_outcome_is_a_mistake_in_the_test(tmp_path):
    """`reaches: biling_queue` could only ever fail, or pass as `not_reaches`: it is an error
    in the test file with the name meant, as is an outcome that does not exist."""
    path = write(tmp_path, """flow: support
at: 2026-11-24T15:00:00Z
tests:
  - name: misspelt node
    steps:
      - press: 1
      - not_reaches: biling_queue
""")
    res = run_file(path, propagate=True)
    assert not res.ok and "x.test.yaml:7:22" in str(res.problems[0])
    problem = str(res.problems[0])
    assert "there is no node 'biling_queue' in the flows (did you mean 'billing_queue'?)" in problem
    path.write_text(path.read_text().replace("not_reaches: biling_queue", "outcome: queud"))
    res = run_file(path, propagate=True)
    assert "'queud' is not an outcome (did you mean 'queued'?)" in str(res.problems[0])


def test_simulate_names_the_flow_meant_and_says_when_a_caller_number_is_not_one():
    runner = CliRunner()
    result = runner.invoke(cli, ["simulate", "suport"], env={"IVR_FLOWS_DIR": str(FLOWS)})
    assert result.exit_code == 2
    assert "no flow 'suport'" in result.output and "(did you mean 'support'?)" in result.output
    result = runner.invoke(cli, ["simulate", "support", "--from", "hello", "--at", "2026-11-24T15:00:00Z"],
                           input="\n", env={"IVR_FLOWS_DIR": str(FLOWS)})
    assert result.exit_code == 0, result.output
    assert "note: 'hello' is not a phone number" in result.output + result.stderr


def test_the_simulator_answers_requests_as_the_tests_declare_or_asks_the_real_api():
    from tests.order_api import OrderApi

    runner = CliRunner()
    args = ["simulate", "support", "--from", "+14155550101", "--at", "2026-11-24T15:00:00Z"]
    declared = runner.invoke(cli, args, input="where is my order\n\n", env={"IVR_FLOWS_DIR": str(FLOWS)})
    assert declared.exit_code == 0, declared.output
    assert ("[request 'order_status': GET ***/v1/customers/C-1002/orders/latest -> HTTP 200 in 50 ms]"
            in declared.output)
    assert "IVR: Your latest order is shipped with UPS" in declared.output
    api = OrderApi().start()
    try:
        env = {"IVR_FLOWS_DIR": str(FLOWS), "NORTHWIND_API_URL": api.url, "NORTHWIND_API_TOKEN": "t0k",
               "IVR_REQUEST_HOSTS": api.host}
        live = runner.invoke(cli, args + ["--live-requests"], input="where is my order\n\n", env=env)
        assert live.exit_code == 0, live.output
        assert "IVR: Your latest order is processing, and should arrive next week." in live.output
        assert api.requests[-1].headers["Authorization"] == "Bearer t0k"
        assert "t0k" not in live.output
    finally:
        api.stop()


def test_declared_answers_are_checked_and_every_request_needs_one(tmp_path):
    path = write(tmp_path, """flow: support
at: 2026-11-24T15:00:00Z
responses:
  order_staus: 200
tests: []
""")
    [problem] = run_file(path).problems
    assert str(problem).endswith(":4:3: error: flow 'support' has no request node 'order_staus' (did you "
                                 "mean 'order_status'?)")
    for answer, message in (("{status: 700}", "'700' is not an HTTP status (100 to 599)"),
                            ("slow", "an answer is a status (500), timeout, refused, or a mapping"),
                            ("{json: {}, body: x}", "an answer has 'json' or 'body', not both"),
                            ("{stauts: 200}", "unknown key 'stauts' in an answer (did you mean 'status'?)")):
        path.write_text(f"flow: support\nat: 2026-11-24T15:00:00Z\ntests:\n  - name: x\n"
                        f"    responses: {{order_status: {answer}}}\n    steps: []\n")
        [problem] = run_file(path).problems
        assert message in problem.message, (answer, problem)
    path.write_text("""flow: support
at: 2026-11-24T15:00:00Z
tests:
  - name: nobody said what the API answers
    from: "+14155550100"
    steps:
      - press: 2
      - at: tell_order
""")
    [failure] = run_file(path).failed
    assert failure.line == 7
    assert failure.message.startswith("the flow asked request 'order_status', but no answer is declared "
                                      "for it: add responses:")


def test_requested_checks_what_the_flow_sent(tmp_path):
    path = write(tmp_path, """flow: support
at: 2026-11-24T15:00:00Z
responses: {order_status: {json: {status: shipped}}}
tests:
  - name: the wrong customer
    from: "+14155550100"
    steps:
      - press: 2
      - requested: {order_status: {url: "C-1002"}}
  - name: nothing asked
    from: "+14155550100"
    steps:
      - press: 1
      - requested: order_status
""")
    first, second = run_file(path).failed
    assert ("expected request 'order_status' to a URL containing 'C-1002', but it went to "
            "***/v1/customers/C-1001/orders/latest") in first.message
    assert "expected request 'order_status', but the flow asked nothing" in second.message


def test_a_flows_http_caller_directory_answers_as_the_tests_declare(tmp_path):
    from tests.web.test_self_service import CRM_FLOW

    (tmp_path / "flows" / "tests").mkdir(parents=True)
    (tmp_path / "flows" / "crm.yaml").write_text(CRM_FLOW)
    path = tmp_path / "flows" / "tests" / "crm.test.yaml"
    path.write_text("""flow: crm
responses:
  directory: {json: {data: [{first_name: Zed, customer_id: C-9}]}}
tests:
  - name: the CRM knows the caller
    from: "+14155550100"
    steps:
      - hears: Hi Zed
      - known_caller: true
  - name: the CRM is down
    from: "+14155550100"
    responses: {directory: 500}
    steps:
      - hears: Hello, thanks for calling
      - known_caller: false
""")
    res = run_file(path)
    assert res.ok and len(res.passed) == 2, (res.failed, res.problems)
