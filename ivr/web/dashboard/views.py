"""Dashboard pages: overview, call list, call timeline, CSV export and test calls."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import (
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    stream_with_context,
    url_for,
)

from ivr.calllog import reports
from ivr.engine.states import Wait, is_listening, records_a_message
from ivr.web.localization import current_screen
from ivr.web.testcalls import TestCallError, TestCalls, choices, listening, path

from . import bp, charts
from .auth import services, store

PAGE_SIZE = 50
FILTER_KEYS = ("since", "until", "flow", "queue", "tests")
CALL_KEYS = ("outcome", "known", "number", "node")
PRESETS = (("today", "Today", "today", None), ("7d", "7 days", "7d", None), ("30d", "30 days", "30d", None),
           ("90d", "90 days", "90d", None))


# -- helpers ----------------------------------------------------------------------------------


def _config() -> Any:
    return services().config


def _tz() -> Any:
    """The reader's time zone: their own, else IVR_DISPLAY_TIMEZONE."""
    return current_screen().tz


def _filters() -> reports.Filters:
    """The period and filters in the query string; a bad value is reported and ignored."""
    args = request.args
    cfg = _config()
    tz = _tz().key
    try:
        return reports.filters(args.get("since"), args.get("until"), tz=tz,
                               flow=args.get("flow"), queue=args.get("queue"),
                               include_tests=args.get("tests") == "1", threshold_s=cfg.service_level_s)
    except ValueError as exc:
        flash(str(exc), "error")
        return reports.filters(tz=tz, threshold_s=cfg.service_level_s)


def _call_query() -> reports.CallQuery:
    args = request.args
    known = {"yes": True, "no": False}.get(args.get("known", ""))
    return reports.CallQuery(outcome=args.get("outcome") or None, known=known,
                             number=args.get("number") or None, node=args.get("node") or None)


def _kept_args(*keys: str, **extra: Any) -> str:
    """The current query string restricted to `keys`, with `extra` on top."""
    values = {k: request.args[k] for k in keys if request.args.get(k)}
    values.update({k: v for k, v in extra.items() if v not in (None, "")})
    return urlencode(values)


@bp.app_template_filter("outcome_label")
def _outcome_label(value: str | None) -> str:
    return reports.OUTCOME_LABELS.get(value, value or "unknown")


@bp.context_processor
def _common() -> dict:
    return {"display_tz": _tz().key, "kept_args": _kept_args, "filter_keys": FILTER_KEYS}


# -- overview ---------------------------------------------------------------------------------


@bp.get("/")
def overview() -> str:
    f = _filters()
    report = reports.overview(store(), f)
    queues = sorted({q["queue"] for q in report["queues"]} | ({f.queue} if f.queue else set()))
    flows = sorted(set(report["flows"]) | set(services().registry.flows) | ({f.flow} if f.flow else set()))
    svg = {
        "wait": charts.wait_histogram(report["wait_histogram"], f.threshold_s),
        "service_level": charts.service_level_line(report["service_level_over_time"],
                                                   threshold_s=f.threshold_s),
        "funnel": charts.funnel(report["funnel"]),
        "heatmap": charts.heatmap(report["heatmap"]),
        "callbacks": charts.callback_outcomes(report["callbacks"]),
    }
    return render_template("dashboard/overview.html", report=report, f=f, svg=svg, queues=queues,
                           flows=flows, presets=PRESETS)


@bp.get("/report.json")
def report_json() -> Response:
    return jsonify(reports.overview(store(), _filters()))


# -- calls ------------------------------------------------------------------------------------


@bp.get("/calls")
def call_list() -> str:
    f = _filters()
    q = _call_query()
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        page = 1
    page = min(page, 10**9)  # a huge page number is simply past the end, not an SQL overflow
    rows, total = reports.call_list(store(), f, q, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    pages = max(1, -(-total // PAGE_SIZE))
    flows = sorted(set(services().registry.flows) | ({f.flow} if f.flow else set()))
    return render_template("dashboard/calls.html", rows=rows, total=total, page=page, pages=pages, f=f, q=q,
                           flows=flows, outcomes=[k for k in reports.OUTCOME_LABELS if k],
                           mask_default=_config().mask_numbers, all_keys=FILTER_KEYS + CALL_KEYS)


@bp.get("/calls.csv")
def export_csv() -> Response:
    f = _filters()
    q = _call_query()
    # The form sends mask=0 from a hidden field, then mask=1 if the box is ticked.
    sent = request.args.getlist("mask")
    mask = "1" in sent if sent else _config().mask_numbers
    tz = f.tz
    db = store()

    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(reports.CSV_COLUMNS)
        for i, row in enumerate(reports.iter_calls(db, f, q)):
            writer.writerow(reports.csv_row(row, tz, mask))
            if i % 500 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    stamp = datetime.now(UTC).astimezone(tz).strftime("%Y%m%d-%H%M")
    return Response(stream_with_context(generate()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="calls-{stamp}.csv"'})


@bp.get("/calls/<call_sid>")
def call_detail(call_sid: str) -> Any:
    detail = reports.call_detail(store(), call_sid)
    if detail is None:
        return render_template("dashboard/call_missing.html", call_sid=call_sid), 404
    return render_template("dashboard/call.html", d=detail, call=detail["call"], m=detail["metrics"])


@bp.get("/calls/<call_sid>/recordings/<int:seq>")
def recording_audio(call_sid: str, seq: int) -> Response:
    """A recording kept on this server (downloaded by `ivr worker`), for the audio player."""
    for rec in store().recordings(call_sid):
        if rec["seq"] == seq and rec.get("path"):
            root = Path(_config().recordings_dir).resolve()
            file = Path(rec["path"]).resolve()
            if root in file.parents and file.is_file():
                return send_file(file, mimetype="audio/wav", conditional=True)
    abort(404)


# -- test calls -------------------------------------------------------------------------------


def _known_callers(limit: int = 12) -> list[dict]:
    """A few callers from the flows' directories, to try a flow as a known caller."""
    out: list[dict] = []
    registry = services().registry
    for flow in registry.flows.values():
        directory = registry.directory(flow)
        if directory is None or not hasattr(directory, "__iter__"):
            continue
        for caller in directory:
            out.append({"phone": caller.phone, "name": caller.full_name, "flow": flow.id})
            if len(out) >= limit:
                return out
    return out


@bp.get("/test-call")
def test_call_form() -> str:
    flows = sorted(services().registry.flows.values(), key=lambda fl: (not fl.default, fl.id))
    return render_template("dashboard/testcall_new.html", flows=flows, known=_known_callers())


@bp.post("/test-call")
def test_call_start() -> Any:
    form = request.form
    pretend = None
    if form.get("at"):
        try:
            pretend = reports.parse_when(form["at"], _tz())
        except ValueError as exc:
            flash(str(exc), "error")
            return redirect(url_for("dashboard.test_call_form"))
    wait = None
    if form.get("wait"):
        try:
            wait = max(0, int(form["wait"]))
        except ValueError:
            flash("The estimated queue wait must be a whole number of seconds.", "error")
            return redirect(url_for("dashboard.test_call_form"))
    try:
        call = TestCalls(services()).start(form.get("flow", ""), form.get("from", ""), pretend_at=pretend,
                                           estimated_wait_s=wait, user=session.get("user"),
                                           live_requests=form.get("live_requests") == "1")
    except TestCallError as exc:
        flash(str(exc), "error")
        return redirect(url_for("dashboard.test_call_form"))
    return redirect(url_for("dashboard.test_call", call_sid=call["sid"]))


@bp.get("/test-call/<call_sid>")
def test_call(call_sid: str) -> Any:
    call = TestCalls(services()).load(call_sid)
    if call is None:
        flash("That test call is over or has expired. Start a new one.", "error")
        return redirect(url_for("dashboard.test_call_form"))
    state = call.get("state") or {}
    wait = state.get("wait")
    gathering = not call.get("ended") and is_listening(wait) and not records_a_message(state)
    return render_template("dashboard/testcall.html", call=call, buttons=choices(call), path=path(call),
                           listening=listening(call), gathering=gathering,
                           holding=not call.get("ended") and Wait.of(wait) is Wait.QUEUE)


@bp.post("/test-call/<call_sid>")
def test_call_act(call_sid: str) -> Any:
    form = request.form
    action = form.get("action", "")
    text = form.get("text", "")
    if form.get("key"):
        action, text = "press", form["key"]
    elif action == "say" and text.strip() and all(ch in "0123456789*#" for ch in text.replace(" ", "")):
        action = "press"  # digits typed in the box are key presses, as in `ivr simulate`
    try:
        TestCalls(services()).send(call_sid, action, text)
    except TestCallError as exc:
        flash(str(exc), "error")
    return redirect(url_for("dashboard.test_call", call_sid=call_sid) + "#now")
