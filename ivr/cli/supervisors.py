"""Supervisors' commands: `ivr report`, `ivr users`, `ivr demo-data`, `ivr retention`.

Attached to the `ivr` group by ivr/cli.py.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import click

from ivr.config import Config


def _config() -> Config:
    try:
        cfg = Config.from_env()
        cfg.check(data_dir=not cfg.database_url)  # the SQLite file lives there
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return cfg


def _store(cfg: Config) -> Any:
    from ivr.calllog.store import Store

    if not cfg.database_url:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.effective_database_url)
    store.migrate()
    return store


# -- ivr report -------------------------------------------------------------------------------


@click.command("report")
@click.option("--since", help="Start: 2026-11-01, 2026-11-01T08:00, 7d, 24h, today  [default: 7 days ago]")
@click.option("--until", help="End (excluded; a date includes that day)  [default: now]")
@click.option("--flow", help="Only calls answered by this flow.")
@click.option("--queue", help="Only calls that reached this queue.")
@click.option("--include-tests", is_flag=True, help="Count test calls too.")
@click.option("--threshold", type=int, default=None,
              help="Service level threshold in seconds  [default: IVR_SERVICE_LEVEL_SECONDS, 20]")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the per-queue table as CSV.")
@click.option("--rebuild", is_flag=True, help="First recompute the per-call summaries of the period "
                                              "(for calls logged before they existed).")
def report(since: str | None, until: str | None, flow: str | None, queue: str | None, include_tests: bool,
           threshold: int | None, as_json: bool, as_csv: bool, rebuild: bool) -> None:
    """Wait times, service level, abandonment and callbacks for a period, from the step log.

    Dates are read in IVR_DISPLAY_TIMEZONE (default UTC)."""
    from ivr.calllog import reports

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    cfg = _config()
    try:
        f = reports.filters(since, until, tz=cfg.display_timezone, flow=flow, queue=queue,
                            include_tests=include_tests, threshold_s=threshold or cfg.service_level_s)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    store = _store(cfg)
    if rebuild:
        n = store.rebuild_metrics(since=f.since)
        click.echo(f"recomputed the summaries of {n} calls", err=True)
    data = reports.overview(store, f)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if as_csv:
        rows = reports.queue_table(data)
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    _print_report(data, f)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s"


def _print_report(data: dict, f: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    period = data["period"]
    console.print(f"[bold]Calls from {f.since.astimezone(f.tz):%Y-%m-%d %H:%M} to "
                  f"{(f.until.astimezone(f.tz).strftime('%Y-%m-%d %H:%M')) if f.until else 'now'} "
                  f"({period['timezone']})[/bold]"
                  + (f", flow {f.flow}" if f.flow else "") + (f", queue {f.queue}" if f.queue else ""))
    summary = Table(title="Summary", show_header=False)
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    av = data["averages"]
    cb = data["callbacks"]
    for label, value in (
        ("Calls", str(data["calls"])),
        (f"Service level (answered within {f.threshold_s} s)", _pct(data["service_level"])),
        ("Average speed of answer", _s(data["average_speed_of_answer_s"])),
        ("Abandonment rate (callbacks and failed calls excluded)", _pct(data["abandonment_rate"])),
        ("Abandoned calls", str(data["abandoned"])),
        ("Failed calls (not served: an error)", str(data["failed"])),
        ("Callbacks requested / kept rate", f"{cb['requested']} / {_pct(cb['kept_rate'])}"),
        ("Callback wait for the agent (median)", _s(cb["wait_s"]["median"])),
        ("Known callers", _pct(data["known_caller_rate"])),
        ("Resolved by self-service", f"{data['self_service']['resolved']} / "
                                     f"{_pct(data['self_service']['resolved_rate'])}"),
        ("Speech understood (callers who spoke)", _pct(data["intent_recognised_rate"])),
        ("Repeat callers within 24 h / 7 days",
         f"{_pct(data['repeat_24h_rate'])} / {_pct(data['repeat_7d_rate'])}"),
        ("Time to the first useful prompt (avg)", _s(av["first_prompt_s"])),
        ("Time to destination (avg)", _s(av["time_to_destination_s"])),
        ("Menu steps (avg)", "–" if av["menu_steps"] is None else f"{av['menu_steps']:.2f}"),
        ("Prompts heard (avg)", _s(av["prompt_s"])),
        ("Queue wait (avg / longest)", f"{_s(av['queue_wait_s'])} / {_s(av['longest_queue_wait_s'])}"),
    ):
        summary.add_row(label, value)
    console.print(summary)

    queues = Table(title="Queues")
    for col in ("queue", "calls", "offered", "answered", "service level", "ASA", "avg wait", "abandoned",
                "abandonment", "callbacks"):
        queues.add_column(col, justify="left" if col == "queue" else "right")
    for q in data["queues"]:
        queues.add_row(q["queue"], str(q["calls"]), str(q["offered"]), str(q["answered"]),
                       _pct(q["service_level"]),
                       _s(q["average_speed_of_answer_s"]), _s(q["average_wait_s"]), str(q["abandoned"]),
                       _pct(q["abandonment_rate"]), str(q["callbacks_requested"]))
    console.print(queues)

    nodes = Table(title="Abandoned, by node")
    nodes.add_column("node")
    nodes.add_column("calls", justify="right")
    for node, n in data["abandoned_by_node"].items():
        nodes.add_row(node, str(n))
    console.print(nodes)

    menus = Table(title="Menus")
    for col in ("flow", "menu", "calls", "spoke", "understood", "fell back to keypad", "silences",
                "not understood"):
        menus.add_column(col, justify="left" if col in ("flow", "menu") else "right")
    for m in data["menus"]:
        menus.add_row(m["flow"], m["node"], str(m["calls"]), _pct(m["speech_share"]),
                      _pct(m["recognition_rate"]),
                      _pct(m["keypad_fallback_rate"]), str(m["no_input"]), str(m["no_match"]))
    console.print(menus)

    services = Table(title="Self-service")
    for col in ("flow", "node", "calls", "answered", "errors", "avg answer", "resolved", "share resolved"):
        services.add_column(col, justify="left" if col in ("flow", "node") else "right")
    for s in data["self_service"]["by_node"]:
        services.add_row(s["flow"], s["node"], str(s["calls"]), str(s["answered"]), str(s["errors"]),
                         "–" if s["average_ms"] is None else f"{s['average_ms']:.0f} ms", str(s["resolved"]),
                         _pct(s["resolved_rate"]))
    console.print(services)

    hours = data["calls_by_hour"]
    peak = max(hours) or 1
    bars = "▁▂▃▄▅▆▇█"
    console.print("Calls by hour of day (" + period["timezone"] + "):")
    console.print("  " + "".join(bars[min(7, int(8 * h / (peak + 1)))] if h else " " for h in hours)
                  + f"   busiest: {hours.index(max(hours)):02d}:00 ({max(hours)} calls)")


# -- ivr users --------------------------------------------------------------------------------


@click.group("users")
def users_group() -> None:
    """Dashboard users (supervisors)."""


def _password(stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@users_group.command("add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def users_add(name: str, password_stdin: bool) -> None:
    """Create a dashboard user (asks for the password twice)."""
    from ivr.web import users

    store = _store(_config())
    try:
        users.check_username(name)
        users.add(store, name, _password(password_stdin))
    except users.UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user '{name}' created: log in at /dashboard")


@users_group.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def users_passwd(name: str, password_stdin: bool) -> None:
    """Set a user's password."""
    from ivr.web import users

    store = _store(_config())
    try:
        if not users.exists(store, name):
            raise users.UserError(f"no user '{name}'")
        users.set_password(store, name, _password(password_stdin))
    except users.UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password of '{name}' changed")


@users_group.command("remove")
@click.argument("name")
def users_remove(name: str) -> None:
    """Delete a user (their open sessions end at the next page they load)."""
    from ivr.web import users

    try:
        users.remove(_store(_config()), name)
    except users.UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user '{name}' removed")


@users_group.command("list")
def users_list() -> None:
    """List users and when they last logged in."""
    from ivr.web import users

    cfg = _config()
    rows = users.all_users(_store(cfg))
    if not rows:
        click.echo("no users yet: ivr users add NAME")
    for row in rows:
        last = row["last_login_at"].strftime("%Y-%m-%d %H:%M UTC") if row["last_login_at"] else "never"
        click.echo(f"{row['username']}\tlast login: {last}")


# -- ivr demo-data ----------------------------------------------------------------------------


@click.command("demo-data")
@click.option("--days", default=30, show_default=True, help="Length of the period, ending now.")
@click.option("--calls-per-day", default=250, show_default=True, help="Average calls on a weekday.")
@click.option("--flow", "flow_id", default=None, help="The flow callers ring  [default: the default flow]")
@click.option("--seed", default=1, show_default=True, help="Same seed, same calls.")
@click.option("--remove", is_flag=True, help="Delete the demo calls instead.")
def demo_data(days: int, calls_per_day: int, flow_id: str | None, seed: int, remove: bool) -> None:
    """Write a realistic synthetic month of calls (through the real engine and store), so the
    dashboard has something to show. Demo calls have ids starting with CADEMO."""
    from ivr.flows.intents import Matchers
    from ivr.flows.registry import FlowRegistry

    from . import demo

    cfg = _config()
    store = _store(cfg)
    if remove:
        click.echo(f"removed {demo.remove(store)} demo calls")
        return
    registry = FlowRegistry(cfg.flows_dir, cfg.default_flow, cfg.default_region)
    flow = registry.get(flow_id) if flow_id else registry.for_number(None)
    if flow is None:
        raise click.ClickException(f"no flow {flow_id or '(default)'} in {cfg.flows_dir}")

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            click.echo(f"\r{done}/{total} calls", nl=done == total, err=True)

    gen = demo.DemoGenerator(store, flow, registry.flows, registry.directory(flow), Matchers().match,
                             days=days, calls_per_day=calls_per_day, seed=seed, region=cfg.default_region,
                             progress=progress)
    stats = gen.run()
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(stats.outcomes.items(), key=lambda kv: -kv[1]))
    click.echo(f"wrote {stats.calls} calls ({stats.steps} steps, {stats.callbacks} callbacks) to flow "
               f"'{flow.id}' over {days} days: {outcomes}")


# -- ivr retention ----------------------------------------------------------------------------


@click.command("retention")
@click.option("--days", type=int, default=None,
              help="Delete calls older than this  [default: IVR_RETENTION_DAYS]")
@click.option("--recordings-days", type=int, default=None,
              help="Delete recordings older than this  [default: IVR_RECORDINGS_RETENTION_DAYS, else --days]")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
def retention(days: int | None, recordings_days: int | None, dry_run: bool) -> None:
    """Delete calls (steps, summaries, callbacks) and recordings older than the configured age.
    Run it daily, e.g. from cron."""
    from ivr.calllog import retention as ret

    cfg = _config()
    days = cfg.retention_days if days is None else days
    recordings_days = cfg.recordings_retention_days if recordings_days is None else recordings_days
    events, recs = ret.cutoffs(days, recordings_days)
    if events is None and recs is None:
        raise click.UsageError("no retention age: set IVR_RETENTION_DAYS (and/or "
                               "IVR_RECORDINGS_RETENTION_DAYS), or pass --days")
    result = ret.purge(_store(cfg), events, recs, cfg.recordings_dir, dry_run=dry_run)
    when = []
    if events:
        when.append(f"calls before {events:%Y-%m-%d %H:%M} UTC")
    if recs:
        when.append(f"recordings before {recs:%Y-%m-%d %H:%M} UTC")
    click.echo(f"{ret.describe(result, dry_run)} ({'; '.join(when)})")
