"""`ivr agents ...` and `ivr callbacks ...` (attached to the `ivr` command by ivr/cli/__init__.py).
The worker that dials is `ivr worker` (ivr/cli/worker.py serves the `callbacks` queue)."""

from __future__ import annotations

import json
import statistics
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from ivr.config import Config
from ivr.engine.states import CALLBACK_FINAL, CallbackStatus

from .agents import STATUSES, AgentsError, UnknownAgent, load_agents
from .runtime import Runtime
from .store import CallbackError, public


def _config() -> Config:
    try:
        cfg = Config.from_env()
        cfg.check(data_dir=not cfg.database_url)  # the SQLite file lives there
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return cfg


def _runtime() -> Runtime:
    from ivr.runtime.connections import redis_for

    cfg = _config()
    return Runtime(cfg, redis_for(cfg))


def _roster_or_exit(rt: Runtime) -> None:
    """Commands about agents need a readable agents file: say exactly what is wrong with it."""
    rt.roster.agents()
    if rt.roster.error is not None:
        for p in rt.roster.error.problems:
            click.secho(str(p), fg="red", err=True)
        sys.exit(1)
    if not rt.roster.path.exists():
        raise click.ClickException(f"no agents file at {rt.roster.path} (set IVR_AGENTS_FILE)")


# -- agents ----------------------------------------------------------------------------------


@click.group()
def agents() -> None:
    """Agents who take calls: list them with their state, set it, check the file."""


@agents.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def agents_list(as_json: bool) -> None:
    """Every agent in the agents file with their state and current call."""
    rt = _runtime()
    _roster_or_exit(rt)
    rows = rt.agents.list()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for a in rows:
        call = a.get("call") or {}
        on = ""
        if call:
            on = f" ({call.get('queue') or '?'}: " + (f"callback {call['callback']}" if call.get("callback")
                                                      else f"call {call.get('call_sid')}") + ")"
        click.echo(f"{a['name']:<16} {a['state']:<10} {', '.join(a['queues']):<30} {a['contact']}{on}")


@agents.command("status")
@click.argument("name")
@click.argument("status", type=click.Choice(STATUSES))
def agents_status(name: str, status: str) -> None:
    """Set an agent's state: available, away or offline (busy is the same as away). An agent
    who becomes available is offered the head of their queues' lines. Set while they are on a
    call, it takes effect when the call ends."""
    from .dispatch import request_dispatch

    rt = _runtime()
    _roster_or_exit(rt)
    try:
        agent = rt.agents.set_status(name, status, by="ivr agents status")
    except UnknownAgent as exc:
        raise click.ClickException(str(exc)) from None
    if agent["state"] == "available":
        request_dispatch(rt.redis, agent["queues"])
    if agent.get("after"):
        click.echo(f"{name} is {agent['state']}; {agent['after']} when the call ends")
    else:
        click.echo(f"{name} is {agent['state']}")


@agents.command("check")
@click.argument("path", required=False)
def agents_check(path: str | None) -> None:
    """Check an agents file (default: IVR_AGENTS_FILE or flows/agents.yaml)."""
    cfg = _config()
    target = Path(path) if path else cfg.agents_path
    try:
        found = load_agents(target, cfg.default_region)
    except AgentsError as exc:
        for p in exc.problems:
            click.secho(str(p), fg="red")
        click.secho(f"{len(exc.errors)} error{'s' if len(exc.errors) != 1 else ''} found", fg="red")
        sys.exit(1)
    queues = sorted({q for a in found.values() for q in a.queues})
    click.echo(f"{target}: OK ({len(found)} agents; queues: {', '.join(queues) or 'none'})")


# -- callbacks -------------------------------------------------------------------------------


@click.group("callbacks")
def callbacks_group() -> None:
    """Callbacks: who is waiting to be called back, and how callbacks went."""


@callbacks_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--all", "everything", is_flag=True, help="Include finished callbacks still in Redis.")
def callbacks_list(as_json: bool, everything: bool) -> None:
    """Callbacks in line order: pending and in progress (and, with --all, finished ones)."""
    rt = _runtime()
    rows = [public(r) for r in rt.callbacks.list(finished=everything)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no callbacks")
    for r in rows:
        click.echo(f"{r['id']}  {r['status']:<10} {r['queue']:<12} {r['number']:<16} "
                   f"joined {r['enqueued_at']}  attempts {r['attempts']}/{r['max_attempts']}"
                   + (f"  {r['closed_reason']}" if r["closed_reason"] else ""))


@callbacks_group.command("show")
@click.argument("callback_id")
@click.option("--json", "as_json", is_flag=True)
def callbacks_show(callback_id: str, as_json: bool) -> None:
    """One callback with its status history."""
    rt = _runtime()
    record = rt.callbacks.get(callback_id)
    if record is None:
        raise click.ClickException(f"no callback {callback_id} in Redis (finished ones are in SQL: "
                                   "ivr callbacks report)")
    out = {**public(record), "history": [
        {**h, "at": datetime.fromtimestamp(h["at"], UTC).isoformat(timespec="seconds")}
        for h in rt.callbacks.history(callback_id)]}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for key, value in out.items():
        if key != "history" and value not in (None, ""):
            click.echo(f"{key:<18} {value}")
    for h in out["history"]:
        click.echo(f"  {h['at']}  {h['status']:<10} {h.get('note') or ''}")


@callbacks_group.command("cancel")
@click.argument("callback_id")
def callbacks_cancel(callback_id: str) -> None:
    """Cancel a pending callback."""
    rt = _runtime()
    try:
        rt.callbacks.cancel(callback_id, by="a supervisor")
    except CallbackError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{callback_id} cancelled")


@callbacks_group.command("report")
@click.option("--hours", default=24.0, show_default=True, help="Callbacks requested in the last N hours.")
@click.option("--json", "as_json", is_flag=True)
def callbacks_report(hours: float, as_json: bool) -> None:
    """How many callbacks were kept and how long callers waited for them (from the SQL log)."""
    from ivr.calllog.store import Store

    store = Store(_config().effective_database_url)
    store.migrate()
    rows = store.callbacks_between(since=datetime.now(UTC) - timedelta(hours=hours))
    report = summarise(rows)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"Callbacks requested in the last {hours:g} h: {report['requested']}")
    for status, n in report["by_status"].items():
        click.echo(f"  {status:<10} {n}")
    w = report["wait_s"]
    click.echo(f"Kept (connected to an agent): {report['kept']} ({report['kept_rate']:.0%} of those "
               "finished)")
    if w["count"]:
        click.echo(f"Wait from request to agent: median {w['median']:.0f} s, p90 {w['p90']:.0f} s, "
                   f"max {w['max']:.0f} s")
        click.echo(f"Attempts per kept callback: {report['attempts_per_kept']}")


def summarise(rows: list[dict]) -> dict:
    """Counts by status, and the wait from request to connected of the kept callbacks."""
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    kept = [r for r in rows if r["status"] == CallbackStatus.COMPLETED]
    finished = sum(by_status.get(s, 0) for s in CALLBACK_FINAL)
    waits = sorted(r["wait_s"] for r in kept if r.get("wait_s") is not None)

    def pct(p: float) -> float | None:
        return waits[min(len(waits) - 1, int(round(p * (len(waits) - 1))))] if waits else None

    return {
        "requested": len(rows), "by_status": dict(sorted(by_status.items())), "kept": len(kept),
        "kept_rate": len(kept) / finished if finished else 0.0,
        "wait_s": {"count": len(waits), "median": statistics.median(waits) if waits else None,
                   "p90": pct(0.9), "max": waits[-1] if waits else None},
        "attempts_per_kept": round(sum(r["attempts"] for r in kept) / len(kept), 2) if kept else None,
    }


@callbacks_group.command("sweep")
def callbacks_sweep() -> None:
    """Run the workers' safety sweep once, now (expire, repair, dispatch what is due)."""
    from .dispatch import sweep_once

    click.echo(json.dumps(sweep_once(_runtime())))
