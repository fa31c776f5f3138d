"""What `ivr flows check` says about request nodes: a way out on error, URLs, bodies, secrets
kept to what is sent, and (as warnings) secrets not set and hosts not allowed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ivr.cli import cli
from ivr.config import AllowedHosts
from ivr.errors import FlowError
from ivr.flows.checker import environment_problems
from ivr.flows.loader import load_flow_text

FLOW = """\
id: orders
nodes:
  look:
    request:
      url: "{url}"
      headers: {{Authorization: "Bearer {{{{ secrets.ORDER_TOKEN }}}}"}}
      save_as: order
    next: tell
    on_error: person
  tell:
    say: "Your order is {{{{ vars.order.status }}}}."
    next: bye
  person:
    transfer: "+15005550011"
  bye:
    hangup: Goodbye.
"""
URL = "https://api.example.com/v1/orders/{{ caller.customer_id }}"


def errors(text: str) -> list[str]:
    with pytest.raises(FlowError) as info:
        load_flow_text(text, "orders.yaml")
    return [str(p) for p in info.value.errors]


def test_a_request_without_on_error_is_refused():
    text = FLOW.format(url=URL).replace("    on_error: person\n", "")
    assert errors(text) == ["orders.yaml:3:3: error: request 'look' has no 'on_error': where callers go "
                            "when the API is slow, down or answers an error (a branch there can look "
                            "at request.status)"]


def test_on_error_must_name_a_node():
    text = FLOW.format(url=URL).replace("on_error: person", "on_error: persno")
    assert errors(text) == ["orders.yaml:9:15: error: there is no node 'persno' (did you mean 'person'?)"]


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://files.example.com/x", "'ftp://files.example.com/x' is not an http:// or https:// URL"),
    ("https://user:pw@api.example.com/x", "no user name or password in the URL"),
    ("https://{{ caller.region }}.example.com/x", "the URL's host must not come from the call"),
    ("https://api.example.com:{{ vars.port }}/x", "the URL's host must not come from the call"),
    ("/v1/orders", "'/v1/orders' is not an http:// or https:// URL"),
])
def test_urls_are_checked_before_any_call(url, message):
    [error] = errors(FLOW.format(url=url))
    assert error.startswith("orders.yaml:5:12: error: ") and message in error


def test_a_base_url_from_a_secret_is_accepted():
    flow = load_flow_text(FLOW.format(url="{{ secrets.ORDER_API }}/v1/orders"), "orders.yaml")
    assert flow.nodes["look"].secrets == ("ORDER_API", "ORDER_TOKEN")


def test_bodies_and_methods_make_sense():
    both = FLOW.format(url=URL).replace("      save_as: order\n", "      json: {a: 1}\n      form: {b: 2}\n")
    assert "a request sends 'json' or 'form', not both" in errors(both)[0]
    get = FLOW.format(url=URL).replace("      save_as: order\n", "      method: GET\n      json: {a: 1}\n")
    assert "a GET request has no body: use method: POST" in errors(get)[0]
    slow = FLOW.format(url=URL).replace("      save_as: order\n", "      timeout: 14\n")
    assert errors(slow) == ["orders.yaml:7:16: error: 14 is greater than the maximum of 10.0 in node "
                            "'look' (request.timeout)"]


def test_secrets_may_only_be_sent_never_said_or_kept():
    said = FLOW.format(url=URL).replace("Your order is {{ vars.order.status }}.",
                                        "Token {{ secrets.ORDER_TOKEN }}")
    assert errors(said) == ["orders.yaml:11:10: error: secrets can only be used in what a request sends "
                            "(its url, headers, json or form): anywhere else they could be said to the "
                            "caller or written in the log"]
    kept = FLOW.format(url=URL).replace("  bye:\n", "  keep:\n    set: {t: \"{{ secrets.X }}\"}\n"
                                        "    next: bye\n  bye:\n")
    assert any("secrets can only be used" in e for e in errors(kept))


def test_secrets_not_set_and_hosts_not_allowed_are_warnings():
    flow = load_flow_text(FLOW.format(url=URL), "orders.yaml")
    problems = environment_problems(flow, {}, AllowedHosts())
    assert [str(p) for p in problems] == [
        "orders.yaml:5:12: warning: host api.example.com is not in the allowed hosts (IVR_REQUEST_HOSTS "
        "is empty): requests from 'look' will be refused until it is added",
        "orders.yaml:6:32: warning: secret ORDER_TOKEN is not set in the environment: requests from "
        "'look' will fail until it is"]
    assert environment_problems(flow, {"ORDER_TOKEN": "x"}, AllowedHosts.parse("api.example.com")) == []
    # a host on another port is another host
    assert "will be refused" in str(environment_problems(flow, {"ORDER_TOKEN": "x"},
                                                         AllowedHosts.parse("api.example.com:8443"))[0])


def test_a_host_from_a_secret_is_checked_once_the_secret_is_set():
    flow = load_flow_text(FLOW.format(url="{{ secrets.ORDER_API }}/v1/orders"), "orders.yaml")
    env = {"ORDER_TOKEN": "x", "ORDER_API": "http://10.0.0.5:8080"}
    [problem] = environment_problems(flow, env, AllowedHosts.parse("10.0.0.5"))
    assert "host 10.0.0.5:8080 is not in the allowed hosts (IVR_REQUEST_HOSTS is 10.0.0.5)" in problem.message
    assert environment_problems(flow, env, AllowedHosts.parse("10.0.0.5:8080")) == []
    [unset] = environment_problems(flow, {}, AllowedHosts.parse("10.0.0.5:8080"))
    assert "secrets ORDER_API and ORDER_TOKEN are not set" in unset.message


def test_flows_check_prints_the_warnings_and_passes(tmp_path, monkeypatch):
    (tmp_path / "orders.yaml").write_text(FLOW.format(url=URL))
    monkeypatch.delenv("ORDER_TOKEN", raising=False)
    monkeypatch.setenv("IVR_REQUEST_HOSTS", "api.example.com")
    out = CliRunner().invoke(cli, ["flows", "check", "--json", str(tmp_path / "orders.yaml")])
    assert out.exit_code == 0, out.output
    [problem] = [p for p in json.loads(out.output)["files"][0]["problems"]
                 if p["code"] == "request-environment"]
    assert problem["severity"] == "warning" and problem["line"] == 6
    assert "secret ORDER_TOKEN is not set" in problem["message"]
    monkeypatch.setenv("IVR_REQUEST_HOSTS", "api.example.com/v1")
    out = CliRunner().invoke(cli, ["flows", "check", str(tmp_path / "orders.yaml")])
    assert out.exit_code == 2 and "IVR_REQUEST_HOSTS: 'api.example.com/v1' is not a host" in out.output


CRM = """\
id: crm
directory:
  url: "{url}"
  headers: {{Authorization: "Bearer {{{{ secrets.CRM_TOKEN }}}}"}}
  timeout: {timeout}
nodes:
  find:
    lookup: {{by: {by}, value: "1", found: bye, not_found: bye}}
  bye:
    hangup: "Goodbye {{{{ caller.first_name }}}}."
"""


def crm(url: str = "https://crm.example.com/callers/{{ phone }}", timeout: float = 2,
        by: str = "phone") -> str:
    return CRM.format(url=url, timeout=timeout, by=by)


def test_an_http_caller_directory_is_checked_like_a_request():
    flow = load_flow_text(crm(), "crm.yaml")
    assert flow.directory is None and flow.directory_api.secrets == ("CRM_TOKEN",)
    assert flow.directory_api.timeout == 2 and flow.directory_api.cache == 300
    assert [str(p) for p in environment_problems(flow, {}, AllowedHosts())] == [
        "crm.yaml:3:8: warning: host crm.example.com is not in the allowed hosts (IVR_REQUEST_HOSTS is "
        "empty): caller lookups will be refused until it is added",
        "crm.yaml:4:12: warning: secret CRM_TOKEN is not set in the environment: caller lookups will "
        "fail until it is"]
    assert "the URL's host must not come from the call" in errors(crm("https://{{ phone }}.crm.example/x"))[0]
    assert errors(crm(timeout=9)) == ["orders.yaml:5:12: error: 9 is greater than the maximum of 5 at "
                                      "directory.timeout"]


def test_a_lookup_by_another_column_in_an_http_directory_is_a_warning():
    flow = load_flow_text(crm(by="customer_id"), "crm.yaml")
    [problem] = [p for p in flow.problems if p.code == "lookup-by"]
    assert problem.line == 8 and "finds callers by their number only" in problem.message


def test_a_crm_answer_keeps_the_callers_short_fields():
    from ivr.flows.directory_api import DirectoryApi, caller_from_answer

    api = DirectoryApi("https://crm.example.com/x", record="results.0")
    body = json.dumps({"results": [{"First Name": "Ada", "customer_id": 1001, "notes": "x" * 300,
                                    "address": {"zip": "94107"}, "vip": False}]})
    caller = caller_from_answer(api, "+14155550100", 200, body)
    assert caller["first_name"] == "Ada" and caller["customer_id"] == "1001" and caller["vip"] == "false"
    assert "notes" not in caller and "address" not in caller and caller["known"] is True
    assert caller_from_answer(api, "+14155550100", 200, '{"results": []}') is None
    assert caller_from_answer(api, "+14155550100", 404, "") is None


def test_request_nodes_are_drawn_with_their_path():
    from ivr.flows import diagram

    flow = load_flow_text(FLOW.format(url="{{ secrets.ORDER_API }}/v1/orders/{{ caller.customer_id }}?x=1"),
                          "orders.yaml")
    assert 'look[/"look<br/>request: GET /v1/orders/…"\\]' in diagram.mermaid(flow)
