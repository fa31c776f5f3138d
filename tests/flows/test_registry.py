"""The flow registry: flows reloaded while the server runs, a broken file never replacing a
working flow, and which flow answers a number as files come, go and change."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.webutil import parse, said

# the example line's opening hours, for the tests that call it
pytestmark = pytest.mark.usefixtures("open_hours")


def rewrite(path: Path, text: str) -> None:
    """Write a file and make sure its change shows: on a file system whose clock ticks
    coarsely, a rewrite in the same tick keeps the old modification time (and may keep the
    size), and the registry would rightly see no change. Moves the time on by 1 ms instead of
    sleeping for a tick."""
    before = path.stat().st_mtime_ns if path.exists() else None
    path.write_text(text)
    after = path.stat()
    if before is not None and after.st_mtime_ns <= before:
        os.utime(path, ns=(after.st_atime_ns, before + 1_000_000))


def test_changed_flow_is_reloaded_and_a_broken_one_never_replaces_it(app, twilio, flows_dir, caplog):
    registry = app.extensions["ivr"].registry
    registry.interval = 0
    flow = flows_dir / "support.yaml"
    original = flow.read_text()
    rewrite(flow, original.replace("Thanks for calling Northwind Fibre.\"",
                                   "Welcome to the new Northwind Fibre line.\""))
    root = parse(twilio.post("/voice", CallSid="CA111", From="Anonymous", To="+15005550006"))
    assert said(root).startswith("Welcome to the new Northwind Fibre line.")
    with caplog.at_level(logging.ERROR, logger="ivr.flows"):
        rewrite(flow, original.replace("next: main_menu", "next: main_manu", 1))
        root = parse(twilio.post("/voice", CallSid="CA112", From="Anonymous", To="+15005550006"))
    assert said(root).startswith("Welcome to the new Northwind Fibre line.")  # last good version
    assert "failed its check and was NOT loaded" in caplog.text
    assert "there is no node 'main_manu' (did you mean 'main_menu'?)" in caplog.text


def test_a_new_flow_never_takes_over_a_number_another_flow_answers(app, twilio, flows_dir, caplog):
    """Which flow answers the support line must not depend on the order files load in: a
    file claiming a number a loaded flow answers is refused, loudly, and the line keeps its
    flow; the problems between flows are logged when they appear, not at every check."""
    registry = app.extensions["ivr"].registry
    registry.interval = 0
    with caplog.at_level(logging.ERROR, logger="ivr.flows"):
        rewrite(flows_dir / "aaa-promo.yaml",
                'id: promo\nnumbers: ["+1 500 555 0006"]\nnodes:\n'
                "  hi: {say: Promo!, next: gone}\n  gone: {goto_flow: nosuchflow}\n")
        root = parse(twilio.post("/voice", CallSid="CA120", From="Anonymous", To="+15005550006"))
        assert not said(root).startswith("Promo")
        assert registry.get("promo") is None
        assert "aaa-promo.yaml:2:11: error: +15005550006 is already answered by flow 'support'" in caplog.text
        caplog.clear()
        rewrite(flows_dir / "aaa-promo.yaml",
                'id: promo\nnumbers: ["+15005550099"]\nnodes:\n'
                "  hi: {say: Promo!, next: gone}\n  gone: {goto_flow: nosuchflow}\n")
        for sid in ("CA121", "CA122", "CA123"):
            twilio.post("/voice", CallSid=sid, From="Anonymous", To="+15005550006")
    assert registry.get("promo") is not None  # its own number: loaded
    assert caplog.text.count("goes to flow 'nosuchflow', which is not loaded") == 1


def _numbered_flow(folder, name: str, flow_id: str, *numbers: str) -> None:
    listed = ", ".join(f'"{n}"' for n in numbers)
    rewrite(folder / name, f"id: {flow_id}\nnumbers: [{listed}]\nnodes:\n  hi: {{hangup: {flow_id}.}}\n")


def test_a_number_moved_between_files_reaches_its_new_flow(tmp_path):
    """Saved in either order, a number moved from one file to another ends with the file that
    now lists it: the refused file is tried again once the other gives the number up."""
    from ivr.flows.registry import FlowRegistry

    _numbered_flow(tmp_path, "billing.yaml", "billing", "+15005550007")
    _numbered_flow(tmp_path, "support.yaml", "support", "+15005550006")
    registry = FlowRegistry(tmp_path, interval=0)
    _numbered_flow(tmp_path, "billing.yaml", "billing", "+15005550007", "+15005550006")
    registry.reload()
    assert registry.for_number("+15005550006").id == "support"  # still listed there: refused
    _numbered_flow(tmp_path, "support.yaml", "support", "+15005550008")
    registry.reload()  # support gives it up; billing, refused before, is tried again
    registry.reload()
    assert registry.for_number("+15005550006").id == "billing"
    assert registry.for_number("+15005550007").id == "billing"


def test_a_restart_with_two_files_claiming_a_number_keeps_both_flows(tmp_path, caplog):
    from ivr.flows.registry import FlowRegistry

    _numbered_flow(tmp_path, "billing.yaml", "billing", "+15005550006", "+15005550007")
    _numbered_flow(tmp_path, "support.yaml", "support", "+15005550006", "+15005550008")
    with caplog.at_level(logging.ERROR, logger="ivr.flows"):
        registry = FlowRegistry(tmp_path)
    assert set(registry.flows) == {"billing", "support"}  # neither flow is dropped whole
    assert registry.for_number("+15005550006").id == "billing"  # the first by file name
    assert registry.for_number("+15005550008").id == "support"
    assert "+15005550006 is listed by flow 'billing'" in caplog.text


def test_a_new_file_takes_a_number_from_a_deleted_file(tmp_path):
    from ivr.flows.registry import FlowRegistry

    _numbered_flow(tmp_path, "support.yaml", "support", "+15005550006")
    registry = FlowRegistry(tmp_path, interval=0)
    (tmp_path / "support.yaml").unlink()  # the deleted flow keeps serving until a restart...
    assert registry.for_number("+15005550006").id == "support"
    _numbered_flow(tmp_path, "support-v2.yaml", "support2", "+15005550006")
    registry.reload()
    assert registry.for_number("+15005550006").id == "support2"  # ...but gives way to a new file


def test_a_renamed_flow_file_keeps_being_served_and_reloaded(app, twilio, flows_dir, caplog):
    registry = app.extensions["ivr"].registry
    registry.interval = 0
    renamed = flows_dir / "support-2026.yaml"
    (flows_dir / "support.yaml").rename(renamed)
    rewrite(renamed, renamed.read_text().replace("Thanks for calling Northwind Fibre.\"",
                                                 "Welcome to the renamed line.\""))
    with caplog.at_level(logging.ERROR, logger="ivr.flows"):
        root = parse(twilio.post("/voice", CallSid="CA114", From="Anonymous", To="+15005550006"))
        assert said(root).startswith("Welcome to the renamed line.")
        assert "already used by" not in caplog.text
    registry.reload()
    assert registry.get("support").file.endswith("support-2026.yaml")


def test_a_new_flow_refused_for_its_directory_loads_once_the_directory_is_fixed(tmp_path, caplog):
    from ivr.flows.registry import FlowRegistry

    (tmp_path / "people.csv").write_text("phone,name\n+14155550100,Ada\n")  # no first_name column
    (tmp_path / "sales.yaml").write_text("id: sales\ndirectory: people.csv\nnodes:\n  x: {hangup: Bye.}\n")
    with caplog.at_level(logging.ERROR, logger="ivr.flows"):
        registry = FlowRegistry(tmp_path, interval=0)
        registry.reload()
        registry.reload()
    assert registry.get("sales") is None
    assert caplog.text.count("failed its check") == 1  # said once, not on every check
    rewrite(tmp_path / "people.csv", "phone,first_name\n+14155550100,Ada\n")
    registry.reload()
    assert registry.get("sales") is not None
