"""The `ivr` command line."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from ivr.config import Config, safe_url
from ivr.errors import FlowError, Problem
from ivr.web.server import DEFAULT_THREADS, DEFAULT_WORKERS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="support-ivr")
def cli() -> None:
    """Support IVR: answer a Twilio number with call flows written as YAML."""


def _config(data_dir: bool = False) -> Config:
    try:
        cfg = Config.from_env()
        cfg.check(data_dir)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return cfg


# -- serve -------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", type=click.IntRange(1), default=DEFAULT_WORKERS, show_default=True,
              help="Worker processes: up to one per core for more simultaneous calls.")
@click.option("--threads", type=click.IntRange(1), default=DEFAULT_THREADS, show_default=True,
              help="Threads per worker.")
@click.option("--keepalive", type=click.IntRange(0, 3600), default=5, show_default=True,
              help="Seconds an idle kept-alive connection stays open (0: close after each "
                   "answer). Behind a proxy that reuses connections, set it above the proxy's "
                   "idle timeout.")
def serve(host: str, port: int, workers: int, threads: int, keepalive: int) -> None:
    """Run the webhook server (gunicorn). Without REDIS_URL an embedded Redis is started;
    without DATABASE_URL the step log goes to a SQLite file under IVR_DATA_DIR."""
    from ivr.web.server import serve as run_server

    cfg = _config(data_dir=True)  # the embedded Redis and the SQLite file live there
    click.echo(f"Serving flows from {cfg.flows_dir.resolve()} on http://{host}:{port}/voice")
    run_server(cfg, host, port, workers, threads, keepalive=keepalive)


# -- flows -------------------------------------------------------------------------------


@cli.group()
def flows() -> None:
    """Check, test and draw call flows."""


def _flow_paths(paths: tuple[str, ...]) -> list[Path]:
    from ivr.flows.registry import NOT_FLOWS, flow_files

    out: list[Path] = []
    for p in map(Path, paths or (str(_config().flows_dir),)):
        if p.is_dir():
            out += flow_files(p)
        elif p.name in NOT_FLOWS:  # `ivr flows check flows/*.yaml` names the agents file too
            click.echo(f"{p}: skipped, the agents file is not a flow (check it with "
                       "`ivr agents check`)", err=True)
        elif p.exists():
            out.append(p)
        else:
            raise click.UsageError(f"no such file or folder: {p}")
    return out


def _fmt_path(path) -> str:
    if path is None:
        return "not reachable"
    menus = f"{path.menus} menu{'s' if path.menus != 1 else ''}"
    route = ", ".join(path.route) or "no input needed"
    return f"{path.seconds:.0f} s, {menus} ({route})"


@flows.command("check")
@click.argument("paths", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="Only print problems.")
def flows_check(paths: tuple[str, ...], as_json: bool, quiet: bool) -> None:
    """Check flow files (default: the flows/ folder). Exit 1 on any error; warnings do not fail.

    Also reports, for each destination, the quickest way a caller gets there by keypad and
    by speech, with the seconds of prompts they hear first."""
    from ivr.flows.checker import destination_paths, environment_problems, worst_case
    from ivr.flows.loader import load_flow

    hosts = _config().allowed_hosts
    files = _flow_paths(paths)
    if not files:
        raise click.UsageError("no flow files found")
    report: list[dict] = []
    errors = 0
    loaded = {}
    for path in files:
        entry: dict = {"file": str(path), "ok": True, "problems": [], "destinations": []}
        try:
            flow = load_flow(path)
            problems = (list(flow.problems) + _directory_problems(flow)
                        + environment_problems(flow, hosts=hosts))
            if flow.id in loaded:
                problems.append(Problem(str(path), 1, 1, f"flow id '{flow.id}' is already used by "
                                        f"{loaded[flow.id].file}; give each flow its own 'id'"))
            loaded[flow.id] = flow
            entry["flow"] = flow.id
            for d in destination_paths(flow):
                entry["destinations"].append({
                    "node": d.node, "what": d.what,
                    "keypad": None if d.keypad is None else {
                        "seconds": round(d.keypad.seconds, 1), "menus": d.keypad.menus,
                        "route": d.keypad.route},
                    "speech": None if d.speech is None else {
                        "seconds": round(d.speech.seconds, 1), "menus": d.speech.menus,
                        "route": d.speech.route},
                    "_paths": (d.keypad, d.speech),
                })
            worst = worst_case(flow)
            entry["worst_case"] = None if worst is None else {
                "seconds": round(worst.seconds, 1), "person": worst.node, "menus": worst.heard,
                "nodes": worst.nodes, "limit": flow.settings.max_seconds_to_person}
        except FlowError as exc:
            problems = exc.problems
        entry["problems"] = problems
        n_err = sum(1 for p in problems if p.severity == "error")
        entry["ok"] = n_err == 0
        errors += n_err
        report.append(entry)
    cross = _cross_flow_problems(loaded)
    errors += sum(1 for p in cross if p.severity == "error")

    if as_json:
        out = []
        for e in report:
            e = dict(e)
            e["problems"] = [p.as_dict() for p in e["problems"]]
            e["destinations"] = [{k: v for k, v in d.items() if k != "_paths"} for d in e["destinations"]]
            out.append(e)
        click.echo(json.dumps({"ok": errors == 0, "errors": errors, "files": out,
                               "problems": [p.as_dict() for p in cross]}, indent=2))
        sys.exit(1 if errors else 0)

    # Said under the file they are about, and counted in its line (JSON keeps them apart).
    by_file = {e["file"]: e for e in report}
    for p in cross:
        if p.file in by_file:
            by_file[p.file]["problems"].append(p)
            by_file[p.file]["ok"] = by_file[p.file]["ok"] and p.severity != "error"
    cross = [p for p in cross if p.file not in by_file]
    for e in report:
        n_err = sum(1 for p in e["problems"] if p.severity == "error")
        n_warn = len(e["problems"]) - n_err
        status = "OK" if e["ok"] else "FAILED"
        click.echo(f"{e['file']}: {status} ({n_err} error{'s' if n_err != 1 else ''}, "
                   f"{n_warn} warning{'s' if n_warn != 1 else ''})")
        for p in e["problems"]:
            click.secho(f"  {p}", fg="red" if p.severity == "error" else "yellow", err=False)
        if e["destinations"] and not quiet:
            click.echo("  Time to each destination (seconds of prompts heard before arriving):")
            width = max(len(d["node"]) for d in e["destinations"]) + 2
            for d in e["destinations"]:
                keypad, speech = d["_paths"]
                click.echo(f"    {d['node']:<{width}} by keypad: {_fmt_path(keypad)}")
                click.echo(f"    {'':<{width}} by speech: {_fmt_path(speech)}")
        worst = e.get("worst_case")
        if worst and not quiet:
            menus = ", ".join(f"{m} played {n} time{'s' if n != 1 else ''}"
                              for m, n in worst["menus"].items())
            click.echo(f"  Worst case before a person (never understood, or silent): "
                       f"{worst['seconds']:.0f} s ({menus or 'no menu'}, then {worst['person']}; "
                       f"limit {worst['limit']:.0f} s)")
    for p in cross:
        click.secho(str(p), fg="red" if p.severity == "error" else "yellow")
    if errors:
        click.secho(f"{errors} error{'s' if errors != 1 else ''} found", fg="red")
    sys.exit(1 if errors else 0)


def _directory_problems(flow) -> list[Problem]:
    """The server refuses a flow whose caller directory cannot be read: so does the check."""
    import logging

    from ivr.engine.simulation import directory_for
    from ivr.flows.directory import DirectoryError

    quiet = logging.getLogger("ivr.callers")  # its warnings are printed below, once
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        directory = directory_for(flow, _config().default_region)
    except DirectoryError as exc:
        line, col = flow.source.where(("directory",))
        return [Problem(flow.file, line, col, f"caller directory: {exc}", code="directory")]
    finally:
        quiet.setLevel(level)
    from ivr.flows.checker import caller_field_problems

    warnings = getattr(directory, "warnings", []) or []
    line, col = flow.source.where(("directory",))
    return [Problem(flow.file, line, col, f"caller directory: {w}", "warning", "directory")
            for w in warnings] + caller_field_problems(flow, getattr(directory, "columns", None))


def _cross_flow_problems(loaded: dict) -> list[Problem]:
    """Problems between flows: two flows answering one number, goto_flow to a missing flow."""
    from ivr.phone import normalize

    problems: list[Problem] = []
    owners: dict[str, str] = {}
    for flow in loaded.values():
        for i, number in enumerate(flow.numbers):
            e164 = normalize(number)
            where = flow.source.where(("numbers", i))
            if e164 is None:
                problems.append(Problem(flow.file, *where, f"'{number}' is not a phone number"))
            elif e164 in owners and owners[e164] != flow.id:
                problems.append(Problem(flow.file, *where, f"{e164} is already answered by flow "
                                        f"'{owners[e164]}'"))
            else:
                owners[e164] = flow.id
        for node in flow.nodes.values():
            if node.kind == "goto_flow" and node.flow not in loaded:
                line, col = flow.source.where(("nodes", node.id, "goto_flow"))
                problems.append(Problem(flow.file, line, col, f"node '{node.id}' goes to flow "
                                        f"'{node.flow}', which is not among the checked files",
                                        severity="warning"))
            offer = getattr(node, "callback", None)
            # Unnamed, the 'callback' flow runs when there is one and the built-in greeting
            # otherwise: only a flow the file names can be missing.
            if offer is not None and offer.flow_named and offer.flow not in loaded:
                line, col = flow.source.where(("nodes", node.id, "queue", "callback"))
                problems.append(Problem(flow.file, line, col, f"queue '{node.name}' calls callers back "
                                        f"with flow '{offer.flow}', which is not among the checked "
                                        "files", severity="warning"))
    defaults = [f.id for f in loaded.values() if f.default]
    if len(defaults) > 1:
        problems.append(Problem("flows", None, None, f"several flows are marked default: "
                                f"{', '.join(sorted(defaults))}; '{sorted(defaults)[0]}' wins",
                                severity="warning"))
    return problems


@flows.command("test")
@click.argument("paths", nargs=-1)
def flows_test(paths: tuple[str, ...]) -> None:
    """Run flow test files (*.test.yaml; default: flows/tests/). Exit 1 on any failure."""
    from .flowtests import find_files, run_file

    cfg = _config()
    files = find_files(list(paths) or [str(cfg.flows_dir / "tests")])
    if not files:
        raise click.UsageError("no flow test files (*.test.yaml) found")
    passed = failed = 0
    for f in files:
        res = run_file(f, propagate=cfg.propagate_exceptions)
        for p in res.problems:
            click.secho(str(p), fg="red" if p.severity == "error" else "yellow")
            failed += p.severity == "error"
        for name in res.passed:
            click.secho(f"PASS {f}: {name}", fg="green")
        for fail in res.failed:
            where = f"{f}:{fail.line}" if fail.line else str(f)
            click.secho(f"FAIL {where}: {fail.test}: {fail.message}", fg="red")
        passed += len(res.passed)
        failed += len(res.failed)
    click.echo(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


@flows.command("diagram")
@click.argument("path")
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to a file.")
def flows_diagram(path: str, fmt: str, output: str | None) -> None:
    """Draw a flow as a Mermaid or Graphviz DOT diagram for review."""
    from ivr.flows.diagram import dot, mermaid

    flow = _load_or_exit(path)
    text = mermaid(flow) if fmt == "mermaid" else dot(flow)
    if output:
        Path(output).write_text(text, "utf-8")
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)


@flows.command("schema")
def flows_schema() -> None:
    """Print the JSON Schema for flow files (for editors)."""
    from ivr.flows.loader import schema

    click.echo(json.dumps(schema(), indent=2))


def _load_or_exit(path: str):
    from ivr.flows.loader import load_flow
    from ivr.flows.registry import flow_files

    p = Path(path)
    if not p.exists():
        folder = _config().flows_dir
        files = flow_files(folder)
        matches = [f for f in files if f.stem == path]
        if not matches:
            from ivr.errors import suggest

            names = [f.stem for f in files]
            raise click.UsageError(f"no flow file '{path}' and no flow '{path}' in {folder}/"
                                   f"{suggest(path, names)}; flows there: {', '.join(names) or 'none'}")
        p = matches[0]
    try:
        return load_flow(p)
    except FlowError as exc:
        for prob in exc.problems:
            click.secho(str(prob), fg="red" if prob.severity == "error" else "yellow", err=True)
        sys.exit(1)


# -- simulate ----------------------------------------------------------------------------


@cli.command()
@click.argument("flow")
@click.option("--from", "from_number", default="Anonymous", show_default=True,
              help="The caller's number (try one from the flow's directory).")
@click.option("--to", "to_number", default=None, help="The number called.")
@click.option("--at", "at", default=None, help="Pretend time, e.g. 2026-11-24T15:00:00Z (business hours).")
@click.option("--live-requests", is_flag=True,
              help="Call the real APIs of request nodes (hosts in IVR_REQUEST_HOSTS, secrets from "
                   "the environment) instead of the answers the flow's tests declare.")
def simulate(flow: str, from_number: str, to_number: str | None, at: str | None,
             live_requests: bool) -> None:
    """Make a call in the terminal. Type digits to press keys, words to speak, Enter for
    silence, 'hangup' to hang up. Reads a script from stdin when it is not a terminal.

    Request nodes get the answers declared under `responses:` in the flow's test files
    (flows/tests/*.test.yaml), or with --live-requests the real API's."""
    from ivr.engine.simulation import SimulatedCall, default_matcher, directory_for, interactive
    from ivr.flows.directory import DirectoryError
    from ivr.flows.loader import load_flow
    from ivr.flows.registry import flow_files

    target = _load_or_exit(flow)
    cfg = _config()
    region = cfg.default_region
    try:
        directory = directory_for(target, region)
    except DirectoryError as exc:
        raise click.ClickException(f"{target.file}: caller directory: {exc}") from None
    flows_by_id = {target.id: target}
    for p in flow_files(Path(target.file).parent):
        try:
            f = load_flow(p)
            flows_by_id.setdefault(f.id, f)
        except FlowError:
            pass
    now = None
    if at:
        try:
            now = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(f"'{at}' is not a date and time", param_hint="--at") from None
        now = now if now.tzinfo else now.replace(tzinfo=UTC)
    from ivr.phone import is_withheld, normalize

    if not is_withheld(from_number) and normalize(from_number, region) is None:
        click.echo(f"note: '{from_number}' is not a phone number: the caller is unknown, with no "
                   "number to call back, as Twilio's invalid numbers are", err=True)
    call = SimulatedCall(target, from_number, flows=flows_by_id, now=now, directory=directory,
                         match=default_matcher(), to_number=to_number, region=region,
                         propagate=cfg.propagate_exceptions,
                         requester=_requester(target, live_requests),
                         caller_lookup=_caller_lookup(target, live_requests))
    sys.exit(interactive(call))


def _caller_lookup(flow, live: bool):
    """Who calls, for a flow whose caller directory is an HTTP API: the real one, or the
    answer the flow's tests declare (`responses: {directory: ...}`)."""
    if flow.directory_api is None:
        return None
    if live:
        from ivr.runtime.crm import CrmLookup

        crm = CrmLookup(None, _config().allowed_hosts)
        return lambda phone: crm.lookup(flow, phone)
    from ivr.engine.answers import caller_lookup, declared_for

    return caller_lookup(declared_for(flow)[0], flow)


def _requester(flow, live: bool):
    """How the simulator answers request nodes: the real API, or the declared answers."""
    from ivr.engine import events as E
    from ivr.engine.answers import NoAnswer, answering, declared_for

    if live:
        from ivr.runtime.http_requests import perform

        cfg = _config()
        quick_s = cfg.request_quick_ms / 1000

        def call_api(req):
            done = perform(req, hosts=cfg.allowed_hosts)
            return dataclasses.replace(done, heard_prompt=(done.ms or 0) > quick_s * 1000)

        return call_api
    answers, problems = declared_for(flow)
    for p in problems:
        click.secho(str(p), fg="yellow", err=True)
    declared = answering(answers)

    def answer(req):
        try:
            return declared(req)
        except NoAnswer:
            click.secho(f"note: no answer to request '{req.node}' is declared under responses: in "
                        "the flow's tests; it fails as if the API were down (use --live-requests to "
                        "call it)", fg="yellow", err=True)
            return E.RequestDone(req.id, error="not_declared")

    return answer


@cli.command()
@click.option("--burst", is_flag=True, help="Run the jobs that are due, then exit.")
@click.option("--queue", "queues", multiple=True, help="Queues to serve [default: all].")
def worker(burst: bool, queues: tuple[str, ...]) -> None:
    """Run an rq worker for slow jobs (recordings, callbacks), with rq's scheduler."""
    from ivr.cli.worker import run

    run(_config(data_dir=True), list(queues) or None, burst=burst)


@cli.command()
@click.option("--once", is_flag=True, help="Record what is waiting, then exit.")
def recorder(once: bool) -> None:
    """Move the step log from Redis into the SQL database. Web processes do this in a thread
    of their own; run this when they are started with IVR_RECORDER=false."""
    import threading

    from ivr.calllog.recorder import Recorder
    from ivr.calllog.store import Store
    from ivr.runtime.connections import redis_for

    cfg = _config(data_dir=True)
    store = Store(cfg.effective_database_url)
    store.migrate()
    rec = Recorder(redis_for(cfg), store)
    if once:
        click.echo(f"recorded {rec.flush(timeout_s=30)} log records")
        return
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish the batch in hand, then exit
    click.echo(f"recording the step log into {safe_url(cfg.effective_database_url)} "
               "(Ctrl-C to stop)")
    try:
        rec.run(stop)
    except KeyboardInterrupt:
        stop.set()


@cli.group()
def recordings() -> None:
    """Callers' recorded messages."""


@recordings.command("retry")
def recordings_retry() -> None:
    """Queue again every recording in the log that no worker has stored and transcribed yet
    (Redis was down when it arrived, or Twilio would not serve it). `ivr worker` does the work."""
    from ivr.calllog.store import Store
    from ivr.runtime.connections import redis_for
    from ivr.runtime.recordings import enqueue

    cfg = _config(data_dir=True)
    store = Store(cfg.effective_database_url)
    store.migrate()
    waiting = store.unprocessed_recordings()
    connection = redis_for(cfg)
    for r in waiting:
        enqueue(connection, r["call_sid"], r["seq"], r["url"], r["flow"] or cfg.default_flow, r["duration_s"])
    click.echo(f"queued {len(waiting)} recording{'s' if len(waiting) != 1 else ''} for `ivr worker`")


# Commands that live in other packages of this project: (name, module, attribute).
OPTIONAL_GROUPS = (("intents", "speech.cli", "intents"), ("speech", "speech.transcribe_cli", "speech"),
                   ("agents", "callbacks.cli", "agents"), ("callbacks", "callbacks.cli", "callbacks_group"))


@cli.group()
def sms() -> None:
    """Text messages: the numbers that asked for no more."""


def _sms_number(number: str) -> str:
    from ivr.phone import normalize

    found = normalize(number, _config().default_region)
    if found is None:
        raise click.BadParameter(f"'{number}' is not a phone number", param_hint="NUMBER")
    return found


def _opt(number: str, out: bool) -> None:
    from ivr.runtime import sms as texts
    from ivr.runtime.connections import redis_for

    e164 = _sms_number(number)
    changed = (texts.opt_out if out else texts.opt_in)(redis_for(_config()), e164)
    said = ("is now", "was already") if out else ("is no longer", "was not")
    click.echo(f"{e164} {said[0] if changed else said[1]} on the opt-out list")


@sms.command("opt-out")
@click.argument("number")
def sms_opt_out(number: str) -> None:
    """Send NUMBER no more texts (as if its owner had texted STOP)."""
    _opt(number, out=True)


@sms.command("opt-in")
@click.argument("number")
def sms_opt_in(number: str) -> None:
    """Take NUMBER off the opt-out list (its owner asked for texts again)."""
    _opt(number, out=False)


@sms.command("opted-out")
def sms_opted_out() -> None:
    """List the numbers that get no texts."""
    from ivr.runtime.connections import redis_for
    from ivr.runtime.sms import opted_out_numbers

    for number in opted_out_numbers(redis_for(_config())):
        click.echo(number)


def _attach_optional_groups(group: click.Group) -> None:
    """Add the commands of other packages. One whose module fails to import is still listed,
    marked unavailable, and says why when it is run: a broken package must neither take the
    other commands down nor disappear without a word."""
    import importlib

    for name, module, attr in OPTIONAL_GROUPS:
        try:
            command = getattr(importlib.import_module(module), attr)
        except Exception as exc:  # noqa: BLE001 - whatever it is, it is reported, not raised
            command = _unavailable(name, module, exc)
        group.add_command(command, name)


def _unavailable(name: str, module: str, exc: Exception) -> click.Command:
    import traceback

    reason = f"{module} could not be imported: {type(exc).__name__}: {exc}"

    @click.command(name, help=f"Unavailable: {reason}.",
                   short_help=f"UNAVAILABLE: {module} failed to import ({type(exc).__name__})",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                     "help_option_names": []})
    def command() -> None:
        click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
        raise click.ClickException(f"`ivr {name}` cannot run: {reason}")

    return command


_attach_optional_groups(cli)


def _attach_supervisor_commands() -> None:
    """`ivr report`, `ivr users`, `ivr demo-data` and `ivr retention` (ivr/supervisor_cli.py)."""
    from .supervisors import demo_data, report, retention, users_group

    for command in (report, users_group, demo_data, retention):
        cli.add_command(command)


_attach_supervisor_commands()


def main() -> None:
    cli()

