"""`request:` the flow asks an API and waits for its answer (events.RequestDone), which the
shell (the web server, the simulator, a flow test) gets: the engine never makes the call.

The answer is judged here: an error from the shell (timeout, refused, circuit open...), a
status of 300 or more, or, when the node keeps the answer (`save_as`), a body that is not
JSON or too large to keep on the call, take `on_error`; anything else `next`. Either way
`request.status`, `request.ok` and `request.error` tell later nodes how it went.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from ivr.flows import templates
from ivr.flows.nodes.request import RequestNode
from ivr.i18n import sentences as S

from .. import actions as A
from .. import events as E
from ..kind import STOP, NodeKind
from ..states import Wait

MAX_SAVED_BYTES = 2048  # a JSON answer kept in vars lives in the call's state in Redis (<= 4 KB)
LOGGED_BODY_CHARS = 2000  # `log: [response]` keeps this much of the answer


def enter(run, node: RequestNode):
    ctx = {**run.context(), "secrets": templates.SECRETS}
    url = templates.render_url(node.url, ctx)
    headers = tuple((k, templates.render(v, ctx, squash=False)) for k, v in node.headers)
    body = _render_json(node.json, ctx)
    form = tuple((k, templates.render(v, ctx, squash=False)) for k, v in node.form)
    detail: dict[str, Any] = {"method": node.method, "host": host_of(url)}
    if "url" in node.log:
        detail["url"] = templates.mask_secrets(url)
    step = run.step(node, "enter", action="request", detail=detail)
    rid = str(step["seq"])
    run.state["wait"] = Wait.REQUEST
    run.state["req"] = {"id": rid, "at": run.at, "timeout": node.timeout}
    run.actions.append(A.Request(rid, node.id, node.method, url, headers, body, form, node.timeout,
                                 tuple(prompt(run, node))))
    return STOP


def prompt(run, node: RequestNode) -> list:
    """What the caller hears when the answer is slow to come."""
    return run.speak(node.say) if node.say is not None else [run.say(S.ONE_MOMENT)]


def hold(run, node: RequestNode) -> list:
    return run.speak(node.hold) if node.hold is not None else [run.say(S.STILL_LOOKING)]


def host_of(url: str) -> str:
    """The host (and port) a URL reaches, fit for the log."""
    try:
        return templates.mask_secrets(urlsplit(url).netloc.rpartition("@")[2]) or "?"
    except ValueError:
        return "?"


def _render_json(value: Any, ctx: dict) -> Any:
    if isinstance(value, str):
        return templates.render(value, ctx, squash=False)
    if isinstance(value, dict):
        return {k: _render_json(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, ctx) for v in value]
    return value


def judge(node: RequestNode, event: E.RequestDone) -> tuple[str | None, Any]:
    """(the error, or None; the JSON answer when the node keeps it)."""
    if event.error:
        return event.error, None
    if event.status is None or event.status >= 300:
        return "status", None
    if not node.save_as:
        return None, None
    try:
        data = json.loads(event.body or "")
    except ValueError:
        return "bad_json", None
    if len(json.dumps(data, separators=(",", ":"))) > MAX_SAVED_BYTES:
        return "too_large", None
    return None, data


def on_done(run, node: RequestNode, event: E.RequestDone) -> None:
    pending = run.state.get("req") or {}
    if event.request != pending.get("id"):  # a late answer to an earlier request
        run.step(node, "unexpected", detail={"event": "request_done", "request": event.request})
        repeat(run, node, Wait.REQUEST)
        return
    error, data = judge(node, event)
    s = run.state
    s["req"] = None
    s["last_req"] = {"node": node.id, "status": event.status, "ok": error is None, "error": error,
                     "ms": event.ms}
    if error is None and node.save_as:
        s["vars"][node.save_as] = data
    if error is None:
        s["served"] = node.id  # the caller has an answer; a hang-up from here is not abandoning
    detail: dict[str, Any] = {"status": event.status, "ms": event.ms, "bytes": event.size,
                              "result": error or "ok"}
    if "response" in node.log and event.body is not None:
        detail["response"] = event.body[:LOGGED_BODY_CHARS]
    said = prompt(run, node) if event.heard_prompt else None
    run.step(node, "request", said, action="request:ok" if error is None else "request:error",
             detail=detail)
    run.goto(node.next if error is None else node.on_error)


def on_waiting(run, node: RequestNode, event: E.RequestWaiting) -> None:
    said = hold(run, node)
    run.step(node, "request_wait", said, detail={"request": (run.state.get("req") or {}).get("id")})
    run.actions.append(A.AwaitRequest((run.state.get("req") or {}).get("id") or "", tuple(said)))


def repeat(run, node: RequestNode, wait: Wait) -> None:
    run.actions.append(A.AwaitRequest((run.state.get("req") or {}).get("id") or "",
                                      tuple(hold(run, node))))


KIND = NodeKind(enter, events={Wait.REQUEST: {E.RequestDone: on_done, E.RequestWaiting: on_waiting}},
                repeat=repeat)
