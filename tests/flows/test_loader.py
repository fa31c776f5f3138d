"""Loading flow files: typed objects from good files, line-accurate errors from bad ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from ivr.errors import FlowError
from ivr.flows.loader import load_flow, load_flow_text, schema
from ivr.flows.nodes.ask import AskNode
from ivr.flows.nodes.branch import BranchNode
from ivr.flows.nodes.queue import QueueNode
from ivr.flows.nodes.transfer import TransferNode
from tests.conftest import FIXTURES, FLOWS

BAD = sorted((FIXTURES / "flows" / "bad").glob("*.yaml"))


def expectations(path: Path) -> list[tuple[int, str]]:
    out = []
    for line in path.read_text().splitlines():
        m = re.match(r"# expect-error: (\d+):(.*)", line)
        if m:
            out.append((int(m.group(1)), m.group(2).strip()))
    return out


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_flow_names_file_line_and_fault(path: Path):
    expected = expectations(path)
    assert expected, f"{path.name} has no '# expect-error: LINE:TEXT' header"
    with pytest.raises(FlowError) as info:
        load_flow(path)
    errors = info.value.errors
    for line, text in expected:
        hits = [e for e in errors if e.line == line and text in e.message]
        assert hits, f"wanted line {line}: {text!r}; got:\n" + "\n".join(map(str, errors))
        assert str(hits[0]).startswith(f"{path}:{line}")


def test_every_error_is_reported_not_only_the_first():
    text = """
nodes:
  a:
    say: Hi
    nxt: b
  b:
    hangup: true
    colour: red
"""
    with pytest.raises(FlowError) as info:
        load_flow_text(text, "two.yaml")
    lines = sorted(e.line for e in info.value.errors)
    assert lines == [5, 8]


def test_example_flow_loads_into_typed_objects():
    flow = load_flow(FLOWS / "support.yaml")
    assert flow.id == "support" and flow.default and flow.language == "en-US"
    assert flow.start == "check_hours"
    menu = flow.nodes["main_menu"]
    assert isinstance(menu, AskNode)
    assert [c.key for c in menu.choices] == ["1", "2", "3", "4", "0", None]  # outage: by speech
    assert menu.exits() == ("agent_queue", "agent_queue")  # the escape to a person
    assert isinstance(flow.nodes["billing_queue"], QueueNode)
    assert isinstance(flow.nodes["check_hours"], BranchNode)
    assert "billing" in flow.intents and "charged" in flow.intents["billing"].keywords
    assert flow.hours["support"].timezone.key == "America/New_York"
    assert not [p for p in flow.problems if p.severity == "error"]


def test_every_node_kind_loads():
    flow = load_flow(FIXTURES / "flows" / "good" / "all_kinds.yaml")
    kinds = {n.kind for n in flow.nodes.values()}
    assert kinds == {"say", "ask", "branch", "lookup", "request", "set", "sms", "queue", "transfer",
                     "record", "hangup", "goto_flow"}
    assert isinstance(flow.nodes["person"], TransferNode) and flow.nodes["person"].timeout == 20


def test_published_schema_is_valid_and_accepts_the_example():
    s = schema()
    Draft202012Validator.check_schema(s)
    published_file = Path(__file__).parents[2] / "ivr" / "flows" / "flow.schema.json"
    published = json.loads(published_file.read_text())
    assert published == s, ("flow.schema.json is not the schema the node kinds make: "
                            "ivr flows schema > ivr/flows/flow.schema.json")
    from ruamel.yaml import YAML

    data = YAML(typ="safe").load((FLOWS / "support.yaml").read_text())
    for holiday in data["hours"]["support"]["holidays"]:  # dates are YAML types, not JSON
        holiday["date"] = str(holiday["date"])
    assert not list(Draft202012Validator(s).iter_errors(data))


def test_schema_rejects_a_misspelt_key_as_editors_would():
    errors = list(Draft202012Validator(schema()).iter_errors({"nodes": {"a": {"say": "x", "nxt": "b"}}}))
    assert errors and "nxt" in errors[0].message


def test_warnings_do_not_stop_a_flow_from_loading():
    text = """
nodes:
  a:
    say: Hi
    next: b
  b:
    hangup: Bye
  orphan:
    hangup: Never heard
"""
    flow = load_flow_text(text, "warn.yaml")
    warnings = [p for p in flow.problems if p.severity == "warning"]
    assert any("'orphan' cannot be reached" in w.message and w.line == 8 for w in warnings)


def test_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(FlowError) as info:
        load_flow(tmp_path / "missing.yaml")
    assert "cannot read flow file" in str(info.value)
