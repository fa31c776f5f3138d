"""The `request:` node in the pure engine: what it asks the shell to send, how it judges the
answer, where the call goes and what the step log keeps. No HTTP here: the answers are the
events the shells feed back (tests/runtime and tests/web make the real requests)."""

from __future__ import annotations

import json

import pytest

from ivr.engine import actions as A
from ivr.engine import events as E
from ivr.engine.runner import Context, run
from ivr.engine.states import Outcome, Wait
from ivr.flows.loader import load_flow_text
from tests.engine.test_runner import OPEN

FLOW = """
id: shop
nodes:
  look:
    request:
      url: "https://api.example.com/v1/orders/{{ caller.customer_id }}?q={{ vars.q }}"
      headers: {Authorization: "Bearer {{ secrets.SHOP_TOKEN }}", X-Caller: "{{ call.from }}"}
      save_as: order
      timeout: 2
      log: [url]
    next: tell
    on_error: why
  tell:
    say: "Your order is {{ vars.order.status }}."
    next: bye
  why:
    branch:
      - if: "request.status == 404"
        goto: none
    else: sorry
  none:
    say: "You have no order with us."
    next: bye
  sorry:
    say: "Sorry, {{ request.error }}."
    next: bye
  bye:
    hangup: "Goodbye."
"""
CALLER = {"known": True, "customer_id": "C 1/../admin", "first_name": "Ada"}

VOICE = "Polly.Joanna-Neural"  # en-US's voice in the catalogue, for flows that name none


@pytest.fixture
def flow():
    return load_flow_text(FLOW, "shop.yaml")


def ctx() -> Context:
    return Context(now=OPEN)


def started(flow):
    r = run(flow, None, E.CallStarted("CA1", "+14155550100", "+15005550006", CALLER), ctx())
    return r, r.actions[-1]


def test_the_engine_asks_for_the_request_and_waits(flow):
    r, req = started(flow)
    assert isinstance(req, A.Request) and r.state["wait"] is Wait.REQUEST
    # what the caller's data puts in the URL cannot change its path or query
    assert req.url == "https://api.example.com/v1/orders/C%201%2F..%2Fadmin?q="
    assert req.method == "GET" and req.timeout == 2 and req.node == "look"
    # the secret stays a marker for the shell to fill in; other values are rendered
    assert dict(req.headers) == {"Authorization": "Bearer ~ivrsecret~SHOP_TOKEN~", "X-Caller": "+14155550100"}
    assert req.prompts == (A.Say("One moment while I look that up.", VOICE, "en-US"),)
    [step] = r.steps
    assert step["event"] == "enter" and step["action"] == "request"
    assert step["detail"] == {"method": "GET", "host": "api.example.com",
                              "url": "https://api.example.com/v1/orders/C%201%2F..%2Fadmin?q="}
    assert "~ivrsecret~" not in json.dumps(r.state)


def test_a_json_answer_is_kept_in_vars_and_the_call_goes_on(flow):
    r, req = started(flow)
    body = json.dumps({"status": "shipped", "eta": "Thursday"})
    done = run(flow, r.state, E.RequestDone(req.id, 200, body, ms=35, size=len(body)), ctx())
    assert done.said == "Your order is shipped. Goodbye."
    assert done.state["vars"]["order"] == {"status": "shipped", "eta": "Thursday"}
    assert done.state["outcome"] is Outcome.COMPLETED
    step = done.steps[0]
    assert step["event"] == "request" and step["action"] == "request:ok" and step["said"] is None
    assert step["detail"] == {"status": 200, "ms": 35, "bytes": len(body), "result": "ok"}


@pytest.mark.parametrize(("answer", "result", "said"), [
    (E.RequestDone("1", 404, '{"error": "no order"}'), "status", "You have no order with us."),
    (E.RequestDone("1", 500, "oops"), "status", "Sorry, status."),
    (E.RequestDone("1", 200, "<html>"), "bad_json", "Sorry, bad_json."),
    (E.RequestDone("1", 302, ""), "status", "Sorry, status."),
    (E.RequestDone("1", error="timeout", ms=2000), "timeout", "Sorry, timeout."),
    (E.RequestDone("1", error="connection"), "connection", "Sorry, connection."),
    (E.RequestDone("1", error="circuit_open"), "circuit_open", "Sorry, circuit_open."),
    (E.RequestDone("1", 200, json.dumps({"x": "y" * 5000})), "too_large", "Sorry, too_large."),
])
def test_failures_take_on_error_where_a_branch_can_read_the_status(flow, answer, result, said):
    r, req = started(flow)
    done = run(flow, r.state, answer, ctx())
    assert done.said == f"{said} Goodbye."
    assert done.steps[0]["action"] == "request:error" and done.steps[0]["detail"]["result"] == result
    assert "order" not in done.state["vars"]


def test_a_slow_answer_logs_the_prompt_the_caller_heard(flow):
    r, req = started(flow)
    done = run(flow, r.state, E.RequestDone(req.id, 200, '{"status": "late"}', heard_prompt=True), ctx())
    assert done.steps[0]["said"] == "One moment while I look that up."
    assert done.said == "Your order is late. Goodbye."  # the prompt was played already


def test_still_waiting_says_the_hold_prompt_and_keeps_waiting(flow):
    r, req = started(flow)
    more = run(flow, r.state, E.RequestWaiting(req.id), ctx())
    assert more.actions == [A.AwaitRequest(req.id, (A.Say("Still looking, thank you for waiting.", VOICE,
                                                          "en-US"),))]
    assert more.state["wait"] is Wait.REQUEST and more.steps[0]["event"] == "request_wait"
    done = run(flow, more.state, E.RequestDone(req.id, 200, '{"status": "shipped"}'), ctx())
    assert done.said == "Your order is shipped. Goodbye."


def test_an_answer_to_another_request_is_not_taken(flow):
    r, req = started(flow)
    stale = run(flow, r.state, E.RequestDone("99", 200, '{"status": "wrong"}'), ctx())
    assert stale.state["wait"] is Wait.REQUEST and stale.steps[0]["event"] == "unexpected"
    assert isinstance(stale.actions[-1], A.AwaitRequest)


def test_hanging_up_while_the_api_is_asked_is_abandoning(flow):
    r, req = started(flow)
    gone = run(flow, r.state, E.HangUp("completed", 4), ctx())
    assert gone.state["outcome"] is Outcome.ABANDONED and gone.ended["last_node"] == "look"


def test_the_response_is_logged_only_when_the_flow_asks(flow):
    asks = load_flow_text(FLOW.replace("log: [url]", "log: [response]"), "shop.yaml")
    r, req = started(asks)
    assert "url" not in r.steps[0]["detail"]
    done = run(asks, r.state, E.RequestDone(req.id, 200, '{"status": "shipped"}'), ctx())
    assert done.steps[0]["detail"]["response"] == '{"status": "shipped"}'
    quiet = load_flow_text(FLOW.replace("      log: [url]\n", ""), "shop.yaml")
    r, req = started(quiet)
    done = run(quiet, r.state, E.RequestDone(req.id, 200, '{"status": "shipped"}'), ctx())
    assert "response" not in done.steps[0]["detail"] and "url" not in r.steps[0]["detail"]


def test_json_and_form_bodies_are_rendered(flow):
    text = FLOW.replace('      save_as: order\n', '      save_as: order\n      json: {customer: '
                        '"{{ caller.customer_id }}", count: 2, tags: ["{{ call.from }}"], token: '
                        '"{{ secrets.SHOP_TOKEN }}"}\n')
    posts = load_flow_text(text, "shop.yaml")
    r, req = started(posts)
    assert req.method == "POST"
    assert req.json == {"customer": "C 1/../admin", "count": 2, "tags": ["+14155550100"],
                        "token": "~ivrsecret~SHOP_TOKEN~"}
    forms = load_flow_text(FLOW.replace('      save_as: order\n', '      save_as: order\n      method: PUT\n'
                                        '      form: {who: "{{ caller.first_name }}", urgent: true}\n'),
                           "shop.yaml")
    r, req = started(forms)
    assert req.method == "PUT" and req.form == (("who", "Ada"), ("urgent", "true"))


def test_own_prompts_replace_the_defaults_and_an_empty_one_is_silence(flow):
    text = FLOW.replace("      log: [url]\n", '      say: "Let me check."\n      hold: ""\n')
    own = load_flow_text(text, "shop.yaml")
    r, req = started(own)
    assert req.prompts == (A.Say("Let me check.", VOICE, "en-US"),)
    assert run(own, r.state, E.RequestWaiting(req.id), ctx()).actions == [A.AwaitRequest(req.id, ())]


def test_an_api_answer_is_not_read_out_to_the_agent(flow):
    text = FLOW.replace('    say: "Your order is {{ vars.order.status }}."\n    next: bye',
                        '    transfer: "+15005550011"')
    transfers = load_flow_text(text, "shop.yaml")
    r, req = started(transfers)
    done = run(transfers, r.state, E.RequestDone(req.id, 200, '{"status": "shipped"}'), ctx())
    whisper = done.actions[-1].whisper
    assert "Ada" in whisper and "shipped" not in whisper and "{" not in whisper


def test_a_french_flow_hears_the_prompts_in_french():
    fr = load_flow_text(FLOW.replace("id: shop", "id: shop\nlanguage: fr-FR"), "shop.yaml")
    r, req = started(fr)
    assert [p.text for p in req.prompts] == ["Un instant, je vérifie."]
    waiting = run(fr, r.state, E.RequestWaiting(req.id), ctx())
    assert waiting.said == "Je cherche toujours, merci de patienter."


def test_hanging_up_once_the_ivr_has_answered_is_resolved_not_abandoned():
    flow = load_flow_text("""
nodes:
  look:
    request: {url: "https://api.example.com/v1/orders/1", save_as: order}
    next: tell
    on_error: agent
  tell:
    ask:
      prompt: "Your order is {{ vars.order.status }}. For a person, press 1."
      choices: [{key: 1, label: a person, goto: agent}]
      no_input: {goto: bye}
  agent:
    queue: orders
    next: bye
  bye:
    hangup: Goodbye.
""", "done.yaml")
    r = run(flow, None, E.CallStarted("CA1", "+14155550100", "+15005550006"), ctx())
    told = run(flow, r.state, E.RequestDone(r.actions[-1].id, 200, '{"status": "shipped"}'), ctx())
    assert told.state["served"] == "look"
    assert run(flow, told.state, E.HangUp("completed", 20), ctx()).state["outcome"] is Outcome.COMPLETED
    # asked for a person, and hung up while waiting: abandoned, whatever the IVR said before
    queued = run(flow, told.state, E.Digits("1"), ctx())
    assert "served" not in queued.state
    assert run(flow, queued.state, E.HangUp("completed", 90), ctx()).state["outcome"] is Outcome.ABANDONED
    # the API failed: the caller is sent to a person, and hangs up while waiting
    failed = run(flow, r.state, E.RequestDone(r.actions[-1].id, 500, ""), ctx())
    assert run(flow, failed.state, E.HangUp("completed", 9), ctx()).state["outcome"] is Outcome.ABANDONED
