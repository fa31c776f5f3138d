"""``ivr intents ...``: measure and try intent sets from the command line.

Attach to the main CLI with ``cli.add_command(intents)``; runnable on its own as
``python -m speech.cli eval --intents FILE --cases FILE [--json]``.
"""

from __future__ import annotations

import json
import sys

import click

from speech.evaluate import evaluate, load_cases, load_intents_and_language
from speech.intents import CONFIRM_BELOW, REJECT_BELOW, build_matcher, language_kind

__all__ = ["intents"]


@click.group(name="intents")
def intents() -> None:
    """Speech intents: measure how well an intent set routes what callers say."""


def _load_with_language(intents_file: str) -> tuple[dict, str | None]:
    try:
        return load_intents_and_language(intents_file)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def _language(flow_language: str | None, option: str | None, kind: str) -> str | None:
    """The language to match in: --language, else the flow's; says so when live calls in it
    match exact phrases and keywords only (see ivr.flows.intents.intent_matcher)."""
    language = option or flow_language
    if kind == "default" and language_kind(language) == "keyword":
        click.echo(f"note: a {language} flow matches exact phrases and keywords only on live calls "
                   "(speech is understood in English and French); measuring that", err=True)
    return language


_LANGUAGE_HELP = ("The language callers speak, as a flow's `language` (fr-FR, en-US...): it chooses "
                  "the matcher. Default: the flow's language, or English for an intents file.")


@intents.command(name="eval")
@click.option(
    "--intents",
    "intents_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A flow file (its intents), or a YAML or JSON file mapping each intent to its "
    "phrases (or {phrases, keywords}).",
)
@click.option(
    "--cases",
    "cases_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help='JSON lines: {"text": ..., "route": intent name or "fallback"}.',
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--language", default=None, help=_LANGUAGE_HELP)
@click.option(
    "--matcher",
    "kind",
    type=click.Choice(["default", "embedding", "french", "keyword"]),
    default="default",
    show_default=True,
    help="Which matcher to measure: default is the one live calls in the language use.",
)
@click.option(
    "--reject-below",
    type=click.FloatRange(0, 1),
    default=None,
    help=f"Confidence below which speech falls back (default {REJECT_BELOW}).",
)
@click.option(
    "--confirm-below",
    type=click.FloatRange(0, 1),
    default=None,
    help=f"Confidence below which a match is confirmed (default {CONFIRM_BELOW}).",
)
def eval_command(
    intents_file: str,
    cases_file: str,
    as_json: bool,
    language: str | None,
    kind: str,
    reject_below: float | None,
    confirm_below: float | None,
) -> None:
    """Route every case and report accuracy, false accepts/rejects and latency."""
    specs, flow_language = _load_with_language(intents_file)
    language = _language(flow_language, language, kind)
    try:
        cases = load_cases(cases_file)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    options = {}
    if reject_below is not None:
        options["reject_below"] = reject_below
    if confirm_below is not None:
        options["confirm_below"] = max(confirm_below, reject_below or 0.0)
    if options and (kind == "keyword" or (kind == "default" and language_kind(language) == "keyword")):
        raise click.ClickException("--reject-below/--confirm-below need the English or French matcher")
    try:
        matcher = build_matcher(specs, kind, language=language, **options) if options else None
        report = evaluate(specs, cases, matcher, kind=kind, language=language)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    report["intents_file"] = intents_file
    report["cases_file"] = cases_file
    report["language"] = language
    if as_json:
        click.echo(json.dumps(report, sort_keys=False))
        return
    _print_table(report)


@intents.command(name="try")
@click.option(
    "--intents",
    "intents_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A flow file (its intents), or a YAML or JSON file of intents.",
)
@click.option("--language", default=None, help=_LANGUAGE_HELP)
@click.argument("utterances", nargs=-1)
def try_command(intents_file: str, language: str | None, utterances: tuple[str, ...]) -> None:
    """Show what the matcher makes of UTTERANCES (or of lines on standard input)."""
    specs, flow_language = _load_with_language(intents_file)
    language = _language(flow_language, language, "default")
    matcher = build_matcher(specs, language=language)
    lines = utterances or tuple(line.rstrip("\n") for line in sys.stdin)
    for text in lines:
        if not text.strip():
            if utterances:  # asked for by name: say what silence does
                click.echo(f"{text!r} -> fallback  (nothing said: the menu's no_input applies)")
            continue
        m = matcher.match(text)
        verdict = m.intent or "fallback"
        if m.needs_confirmation:
            verdict += " (confirm)"
        click.echo(f"{text!r} -> {verdict}  confidence={m.confidence:.3f}  via {m.method}")


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(title=f"Intent eval: {report['cases_file']}", show_header=False)
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    rows = [
        ("cases", f"{report['n']} ({report['n_in_scope']} in scope, {report['n_fallback']} fallback)"),
        ("in-scope accuracy", f"{report['in_scope_acc']:.3f}"),
        ("false reject rate", f"{report['false_reject_rate']:.3f}"),
        ("misroute rate", f"{report['misroute_rate']:.3f}"),
        ("false accept rate", f"{report['false_accept_rate']:.3f}"),
        ("confirm rate (of routed)", f"{report['confirm_rate']:.3f}"),
        ("latency p50 / p99", f"{report['p50_ms']:.2f} / {report['p99_ms']:.2f} ms"),
        ("matcher", report["matcher"]),
    ]
    if report.get("build_ms") is not None:
        rows.append(("build (incl. model load)", f"{report['build_ms']:.0f} ms"))
    for name, value in rows:
        summary.add_row(name, value)
    console.print(summary)

    per_intent = Table(title="Per intent")
    per_intent.add_column("intent")
    per_intent.add_column("cases", justify="right")
    per_intent.add_column("accuracy", justify="right")
    for name, figures in report["per_intent"].items():
        per_intent.add_row(name, str(figures["n"]), f"{figures['acc']:.3f}")
    console.print(per_intent)

    if report["top_confusions"]:
        confusions = Table(title="Most frequent errors")
        confusions.add_column("expected")
        confusions.add_column("got")
        confusions.add_column("count", justify="right")
        for row in report["top_confusions"]:
            confusions.add_row(row["route"], row["got"], str(row["count"]))
        console.print(confusions)


if __name__ == "__main__":  # pragma: no cover
    intents()
