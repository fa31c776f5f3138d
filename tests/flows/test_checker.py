"""Graph checks and the time-to-destination report, through the API and `ivr flows check`."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ivr.cli import cli
from ivr.flows.checker import destination_paths
from ivr.flows.loader import load_flow, load_flow_text
from tests.conftest import FIXTURES, FLOWS

MENU = """
settings: {max_seconds_to_destination: %s}
nodes:
  menu:
    ask:
      prompt: Welcome to the long menu of a company that likes to talk a great deal before it helps.
      choices:
        - {key: 1, label: sales, goto: sales}
        - {key: 2, label: billing and payments and all things related to money, goto: billing}
        - {key: 3, label: anything else, goto: person}
      no_input: {goto: person}
  sales: {queue: sales, next: bye}
  billing: {queue: billing, next: bye}
  person: {transfer: "+15005550011", next: bye}
  bye: {hangup: Goodbye.}
"""


def test_later_menu_options_cost_more_seconds():
    flow = load_flow_text(MENU % 60, "menu.yaml")
    paths = {d.node: d for d in destination_paths(flow)}
    sales, billing, person = paths["sales"].keypad, paths["billing"].keypad, paths["person"].keypad
    assert sales.seconds < billing.seconds < person.seconds
    assert sales.route == ["press 1"] and sales.menus == 1
    assert paths["sales"].speech is None  # no intent declared: not reachable by speech


def test_slow_paths_warn_past_the_threshold():
    flow = load_flow_text(MENU % 7, "menu.yaml")  # the quickest path takes 8.25 s
    slow = [p for p in flow.problems if p.code == "slow-path"]
    assert {p.message.split("'")[1] for p in slow} == {"sales", "billing", "person"}
    assert all(p.severity == "warning" for p in slow)
    assert not [p for p in load_flow_text(MENU % 60, "m.yaml").problems if p.code == "slow-path"]


def test_speech_is_faster_than_keypad_in_the_example_flow():
    flow = load_flow(FLOWS / "support.yaml")
    for d in destination_paths(flow):
        if d.node.endswith("_queue"):
            assert d.speech.seconds <= d.keypad.seconds, d.node
    agent = next(d for d in destination_paths(flow) if d.node == "agent_queue")
    assert agent.keypad.route == ["press 0"]


def test_menu_without_a_person_warns():
    flow = load_flow_text("""
nodes:
  menu:
    ask:
      prompt: Press 1 to hear our hours.
      choices: [{key: 1, label: hours, goto: hours}]
      no_input: {goto: bye}
  hours: {say: We are open nine to five., next: bye}
  bye: {hangup: Goodbye.}
""", "x.yaml")
    assert any(p.code == "no-person" and p.line == 3 for p in flow.problems)


def test_loop_that_can_exit_is_allowed_but_spinning_loop_warns():
    flow = load_flow_text("""
nodes:
  a: {say: One., next: b}
  b:
    branch: [{if: "vars.x == 1", goto: a}]
    else: bye
  bye: {hangup: Bye.}
""", "x.yaml")
    assert any(p.code == "busy-loop" for p in flow.problems)


def test_check_command_exit_codes_and_report():
    runner = CliRunner()
    ok = runner.invoke(cli, ["flows", "check", str(FLOWS / "support.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "billing_queue" in ok.output and "by keypad: 9 s, 1 menu (press 1)" in ok.output
    bad = runner.invoke(cli, ["flows", "check", str(FIXTURES / "flows" / "bad" / "unknown_key.yaml")])
    assert bad.exit_code == 1
    assert "unknown_key.yaml:5:5: error: unknown key 'nxt'" in bad.output
    warn_only = runner.invoke(cli, ["flows", "check", str(FIXTURES / "flows" / "good")])
    assert warn_only.exit_code == 0, warn_only.output


def test_check_command_json():
    result = CliRunner().invoke(cli, ["flows", "check", "--json", str(FIXTURES / "flows" / "bad")])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["ok"] is False and data["errors"] >= len(list((FIXTURES / "flows" / "bad").glob("*.yaml")))
    first = data["files"][0]["problems"][0]
    assert {"file", "line", "column", "severity", "message"} <= set(first)


def test_numbers_claimed_twice_is_an_error(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(f"id: {name}\nnumbers: ['+1 415 555 0199']\n"
                                               "nodes:\n  x: {hangup: Bye.}\n")
    result = CliRunner().invoke(cli, ["flows", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert "+14155550199 is already answered by flow 'a'" in result.output
    # said under the file, and counted in its summary line
    assert f"{tmp_path / 'b.yaml'}: FAILED (1 error, 0 warnings)\n  {tmp_path / 'b.yaml'}:2:" in result.output


def test_diagrams_show_every_edge():
    runner = CliRunner()
    mer = runner.invoke(cli, ["flows", "diagram", str(FLOWS / "support.yaml")])
    assert mer.exit_code == 0
    assert mer.output.startswith("flowchart TD")
    assert 'main_menu -->|"press 1 / say billing"| billing_queue' in mer.output
    assert 'check_hours -->|"open support"| greet' in mer.output
    dot = runner.invoke(cli, ["flows", "diagram", "--format", "dot", str(FLOWS / "support.yaml")])
    assert dot.output.startswith('digraph "support"')
    assert '"main_menu" -> "agent_queue" [label="no input"];' in dot.output


def test_diagrams_survive_keyword_node_ids_and_folded_conditions(tmp_path):
    (tmp_path / "dia.yaml").write_text(
        "id: dia\nnodes:\n  start:\n    branch:\n      - if: >\n          caller.known\n"
        "          and caller.plan == 'premium'\n        goto: end\n    else: end\n  end: {hangup: Bye.}\n")
    out = CliRunner().invoke(cli, ["flows", "diagram", str(tmp_path / "dia.yaml")]).output
    assert "n_start -->|\"caller.known and caller.plan == 'premium'\"| n_end" in out
    assert "__start((start)) --> n_start" in out and "\n  end" not in out


def test_check_refuses_a_broken_directory_and_duplicate_ids(tmp_path):
    (tmp_path / "people.csv").write_text("phone,name\n+14155550100,Ada\n")
    (tmp_path / "a.yaml").write_text("id: same\ndirectory: people.csv\nnodes:\n  x: {hangup: Bye.}\n")
    (tmp_path / "b.yaml").write_text("id: same\nnodes:\n  x: {hangup: Bye.}\n")
    result = CliRunner().invoke(cli, ["flows", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert "a.yaml:2:12: error: caller directory:" in result.output
    assert "missing required column 'first_name'" in result.output
    assert "flow id 'same' is already used by" in result.output
    assert "a.yaml: FAILED (1 error" in result.output and "b.yaml: FAILED (1 error" in result.output


def test_a_choice_nobody_can_make_is_a_warning(tmp_path):
    (tmp_path / "off.yaml").write_text(
        'id: off\nsettings: {speech: "off", escape: person}\nintents:\n  billing: [billing]\nnodes:\n'
        "  menu:\n    ask:\n      prompt: Press 1 for a person.\n      choices:\n"
        "        - {key: 1, label: a person, goto: person}\n        - {intent: billing, goto: person}\n"
        '  person: {transfer: "+15005550011", next: bye}\n  bye: {hangup: Bye.}\n')
    result = CliRunner().invoke(cli, ["flows", "check", "-q", str(tmp_path / "off.yaml")])
    assert result.exit_code == 0  # a warning, not an error
    assert "off.yaml:11:11: warning: the choice for intent 'billing' has no key" in result.output



def test_hours_in_words_are_not_hours_names(tmp_path):
    """Only `hours.<name>` read by a template counts, not the word in a sentence it says."""
    (tmp_path / "words.yaml").write_text(
        "id: words\nhours:\n  main: {timezone: America/New_York, open: {mon-fri: '09:00-17:00'}}\nnodes:\n"
        "  hi:\n    hangup: \"{{ 'Sorry, we are closed outside business hours. Please call back.' "
        "if not hours.main.open else 'Hello.' }}\"\n")
    result = CliRunner().invoke(cli, ["flows", "check", "-q", str(tmp_path / "words.yaml")])
    assert result.exit_code == 0, result.output


CSV = "phone,first_name,last_name,plan\n+14155550100,Ada,Lovelace,premium\n"
READS = """id: reads
directory: {directory}
start: find
nodes:
  find:
    lookup: {{by: {by}, value: "{{{{ call.from }}}}", found: route, not_found: route}}
  route:
    branch:
      - if: {{caller: {{plna: premium}}}}
        goto: bye
      - if: "caller['emial'] == 'x' or caller.plan == 'premium'"
        goto: bye
    else: bye
  bye:
    hangup: "Bye {{{{ caller.frist_name }}}}, {{{{ caller.full_name }}}} on {{{{ caller.plan }}}}."
"""


def test_caller_fields_missing_from_the_directory_are_named_with_the_column_meant(tmp_path):
    """A misspelt column renders as empty text for every caller ("Bye , ..."): the check says
    so, where it is read, with the column meant; the flow still loads (a warning)."""
    (tmp_path / "customers.csv").write_text(CSV)
    (tmp_path / "reads.yaml").write_text(READS.format(directory="customers.csv", by="plna"))
    result = CliRunner().invoke(cli, ["flows", "check", "-q", str(tmp_path / "reads.yaml")])
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines() if "no column" in line]
    where = [line.split(": warning")[0].rsplit("/", 1)[-1] for line in lines]
    assert where == ["reads.yaml:6:18", "reads.yaml:9:29", "reads.yaml:11:13", "reads.yaml:15:13"]
    assert "no column 'plna' (did you mean 'plan'?), so this lookup never finds anyone" in lines[0]
    assert "no column 'plna' (did you mean 'plan'?), so caller.plna is always empty" in lines[1]
    assert "no column 'emial'" in lines[2]
    assert "no column 'frist_name' (did you mean 'first_name'?)" in lines[3]
    assert "'plan'" not in " ".join(lines).replace("'plan'?", "")  # real columns pass
    assert "full_name" not in result.output  # fixed keys pass too


def test_lookup_columns_are_matched_as_the_directory_matches_them(tmp_path):
    (tmp_path / "customers.csv").write_text(CSV)
    text = READS.format(directory="customers.csv", by='"Plan"').replace("plna", "plan")
    text = text.replace("emial", "plan").replace("frist_name", "first_name")
    (tmp_path / "reads.yaml").write_text(text)
    result = CliRunner().invoke(cli, ["flows", "check", "-q", str(tmp_path / "reads.yaml")])
    assert result.exit_code == 0 and "no column" not in result.output, result.output


def test_caller_fields_are_checked_against_a_sql_directory(tmp_path):
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE people (phone TEXT, first_name TEXT, tier TEXT)"))
    (tmp_path / "reads.yaml").write_text(READS.format(directory="sqlite:///crm.db#people", by="tier"))
    result = CliRunner().invoke(cli, ["flows", "check", "-q", "--json", str(tmp_path / "reads.yaml")])
    found = [p["message"] for p in json.loads(result.output)["files"][0]["problems"]
             if p["code"] == "missing-column"]
    assert len(found) == 5 and all("sqlite:///crm.db#people has no column" in m for m in found)
    assert any("'plan'" in m for m in found)  # plan is a CSV column, not one of this table's


def test_the_server_logs_caller_fields_its_directory_lacks(tmp_path, caplog):
    import logging

    from ivr.flows.registry import FlowRegistry

    (tmp_path / "customers.csv").write_text(CSV)
    (tmp_path / "reads.yaml").write_text(READS.format(directory="customers.csv", by="phone"))
    with caplog.at_level(logging.WARNING, logger="ivr.flows"):
        registry = FlowRegistry(tmp_path)
    assert registry.get("reads") is not None  # loaded: a warning never stops a flow
    assert "no column 'frist_name' (did you mean 'first_name'?)" in caplog.text


def test_the_agents_file_named_with_the_flows_is_skipped_not_failed():
    """`ivr flows check flows/*.yaml` in CI names agents.yaml too: it is not a flow."""
    files = sorted(str(p) for p in FLOWS.glob("*.yaml"))
    assert any(f.endswith("agents.yaml") for f in files)
    result = CliRunner().invoke(cli, ["flows", "check", "-q", *files])
    assert result.exit_code == 0, result.output
    assert "agents.yaml: skipped, the agents file is not a flow" in result.output + result.stderr
    assert "support.yaml: OK" in result.output


def test_caller_methods_are_not_columns_but_what_get_reads_is(tmp_path):
    (tmp_path / "customers.csv").write_text(CSV)
    (tmp_path / "m.yaml").write_text(
        "id: m\ndirectory: customers.csv\nnodes:\n  bye:\n    hangup: \"{{ caller.get('plna', 'basic') }}"
        "{% for k, v in caller.items() %}{{ k }}{% endfor %}{{ caller.first_name.upper() }}\"\n")
    result = CliRunner().invoke(cli, ["flows", "check", "-q", str(tmp_path / "m.yaml")])
    found = [line for line in result.output.splitlines() if "no column" in line]
    assert len(found) == 1 and "no column 'plna' (did you mean 'plan'?)" in found[0], result.output


QUEUE_THEN = """id: only_next
nodes:
  menu:
    ask:
      prompt: Press 1 for sales.
      choices: [{key: 1, label: sales, goto: sales}]
      no_input: {goto: sales}
  sales:
    queue:
      name: sales
      max_wait: 300
      callback: %s
    next: voicemail
  voicemail: {record: {prompt: "Leave a message after the tone."}, next: bye}
  bye: {hangup: Goodbye.}
"""


def test_a_destination_reached_only_through_next_is_reachable(tmp_path):
    """voicemail is reached only when the caller leaves the queue unanswered (`next`)."""
    (tmp_path / "q.yaml").write_text(QUEUE_THEN % "{offer_after: 60}")
    result = CliRunner().invoke(cli, ["flows", "check", str(tmp_path / "q.yaml")])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.strip().startswith("voicemail"))
    assert "not reachable" not in line and "press 1" in line, result.output
    paths = {d.node: d for d in destination_paths(load_flow(tmp_path / "q.yaml"))}
    assert paths["voicemail"].keypad.nodes == ["menu", "sales", "voicemail"]


def test_no_warning_about_a_callback_flow_nobody_named(tmp_path):
    """Without `flow:` the queue's callbacks use the 'callback' flow when there is one and the
    built-in greeting otherwise: nothing to warn about. A flow named and missing is warned."""
    (tmp_path / "q.yaml").write_text(QUEUE_THEN % "{offer_after: 60}")
    result = CliRunner().invoke(cli, ["flows", "check", "-q", str(tmp_path / "q.yaml")])
    assert result.exit_code == 0 and "not among the checked files" not in result.output, result.output
    (tmp_path / "q.yaml").write_text(QUEUE_THEN % "{offer_after: 60, flow: ring_back}")
    named = CliRunner().invoke(cli, ["flows", "check", "-q", str(tmp_path / "q.yaml")])
    assert "with flow 'ring_back', which is not among the checked files" in named.output


def test_the_server_says_nothing_about_a_callback_flow_nobody_named(tmp_path, caplog):
    import logging

    from ivr.flows.registry import FlowRegistry

    (tmp_path / "q.yaml").write_text(QUEUE_THEN % "{offer_after: 60}")
    with caplog.at_level(logging.WARNING, logger="ivr.flows"):
        FlowRegistry(tmp_path).get("only_next")
    assert "which is not loaded" not in caplog.text
    (tmp_path / "q.yaml").write_text(QUEUE_THEN % "{offer_after: 60, flow: ring_back}")
    with caplog.at_level(logging.WARNING, logger="ivr.flows"):
        FlowRegistry(tmp_path).get("only_next")
    assert "by flow 'ring_back', which is not loaded" in caplog.text


def test_the_worst_case_before_a_person_is_reported_and_warned_past_the_limit(tmp_path):
    """A caller never understood hears the example menu three times (its attempts), with an
    apology before each replay, then reaches a person: about 57 s at 160 words a minute."""
    from ivr.flows.checker import worst_case

    worst = worst_case(load_flow(FLOWS / "support.yaml"))
    assert worst.node == "agent_queue" and worst.heard == {"main_menu": 3}
    assert 50 < worst.seconds < 60  # 3 x (prompt + 5 announcements) + 2 apologies, at 160 wpm
    out = CliRunner().invoke(cli, ["flows", "check", str(FLOWS / "support.yaml")]).output
    assert (f"Worst case before a person (never understood, or silent): {worst.seconds:.0f} s "
            "(main_menu played 3 times, then agent_queue; limit 60 s)") in out
    assert "slow-worst-case" not in out and "never understood hears" not in out

    (tmp_path / "talky.yaml").write_text((FLOWS / "support.yaml").read_text().replace(
        "  escape: agent_queue", "  escape: agent_queue\n  max_seconds_to_person: 40"))
    (tmp_path / "customers.csv").write_text((FLOWS / "customers.csv").read_text())
    result = CliRunner().invoke(cli, ["flows", "check", "--json", str(tmp_path / "talky.yaml")])
    data = json.loads(result.output)["files"][0]
    assert data["worst_case"]["menus"] == {"main_menu": 3} and data["worst_case"]["limit"] == 40
    [slow] = [p for p in data["problems"] if p["code"] == "slow-worst-case"]
    assert slow["severity"] == "warning" and slow["message"].startswith(
        f"a caller who is never understood hears {worst.seconds:.0f} s of prompts before reaching a "
        "person ('main_menu' played 3 times, then 'agent_queue'), over the 40 s limit")

    # Four plays of the menu, as separate counts for silence and wrong answers gave, cost more.
    four = load_flow_text((FLOWS / "support.yaml").read_text().replace(
        "  escape: agent_queue", "  escape: agent_queue\n  menu_attempts: 4"), "four.yaml",
        base_dir=FLOWS)
    assert worst_case(four).heard == {"main_menu": 4} and worst_case(four).seconds > worst.seconds + 15


def test_retries_a_menu_can_never_reach_are_a_warning():
    flow = load_flow_text("""
settings: {escape: person}
nodes:
  menu:
    ask:
      prompt: Press 1 for sales.
      choices: [{key: 1, label: sales, goto: person}]
      attempts: 2
      no_match: {retries: 3}
  person: {transfer: "+15005550011", next: bye}
  bye: {hangup: Goodbye.}
""", "r.yaml")
    [warning] = [p for p in flow.problems if p.code == "retries-over-attempts"]
    assert "no_match retries 3 cannot all be used: the menu is played 2 times in all" in warning.message
