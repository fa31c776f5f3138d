"""The `ivr` command: its groups from other packages are there, or say why they are not."""

from __future__ import annotations

import sys

import click
from click.testing import CliRunner

from ivr import cli as ivr_cli


def _ivr(monkeypatch, groups=None) -> click.Group:
    if groups is not None:
        monkeypatch.setattr(ivr_cli, "OPTIONAL_GROUPS", groups)
    group = click.Group("ivr")
    ivr_cli._attach_optional_groups(group)
    return group


def test_every_optional_group_is_attached():
    assert {"intents", "speech", "agents", "callbacks"} <= set(ivr_cli.cli.commands)


def test_a_group_that_fails_to_import_is_listed_and_says_why_it_cannot_run(monkeypatch):
    monkeypatch.setitem(sys.modules, "callbacks.cli", None)  # importing it now fails
    ivr = _ivr(monkeypatch)
    runner = CliRunner()
    listing = runner.invoke(ivr, ["--help"])
    assert listing.exit_code == 0
    assert "agents     UNAVAILABLE: callbacks.cli failed to import (ModuleNotFoundError)" in listing.output
    assert "callbacks  UNAVAILABLE: callbacks.cli failed to import (ModuleNotFoundError)" in listing.output
    run = runner.invoke(ivr, ["agents", "list", "--json"])
    assert run.exit_code == 1
    assert ("Error: `ivr agents` cannot run: callbacks.cli could not be imported: ModuleNotFoundError: "
            "import of callbacks.cli halted; None in sys.modules") in run.stderr
    assert runner.invoke(ivr, ["agents", "--help"]).exit_code == 1  # says why, not a usage page
    # the other packages' commands are unaffected
    assert runner.invoke(ivr, ["intents", "--help"]).exit_code == 0


def test_any_error_at_import_is_reported_with_its_traceback(monkeypatch, tmp_path):
    (tmp_path / "broken_commands.py").write_text("raise RuntimeError('no model here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ivr = _ivr(monkeypatch, (("broken", "broken_commands", "group"),))
    run = CliRunner().invoke(ivr, ["broken"])
    assert run.exit_code == 1
    assert "Traceback (most recent call last):" in run.stderr
    assert 'broken_commands.py", line 1' in run.stderr
    assert run.stderr.rstrip().endswith(
        "Error: `ivr broken` cannot run: broken_commands could not be imported: RuntimeError: no model here")
