"""The agents' and supervisors' HTTP API, protected by a bearer token (IVR_API_TOKEN).

    GET  /api/agents                       every agent with state, since, queues, contact, call
    GET  /api/agents/<name>
    PUT  /api/agents/<name>/status         {"status": "available" | "away" | "offline"}
                                           (busy is the same as away)
    GET  /api/queues                       per queue: line, callbacks, agents, estimated wait
    GET  /api/callbacks[?all=1]            callbacks in line order (as `ivr callbacks list`)
    GET  /api/callbacks/<id>               one callback with its status history
    POST /api/callbacks/<id>/cancel

Every request needs `Authorization: Bearer <IVR_API_TOKEN>`; without it, or when the server has
no token configured, the answer is 401.
"""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from . import estimate, line
from .agents import STATUSES, UnknownAgent
from .dispatch import request_dispatch
from .runtime import Runtime
from .store import CallbackError, public

log = logging.getLogger("callbacks.api")

bp = Blueprint("callbacks_api", __name__, url_prefix="/api")


def _rt() -> Runtime:
    return current_app.extensions["ivr"].callbacks


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


@bp.before_request
def _authorise() -> Any:
    token = current_app.config["IVR"].api_token
    given = request.headers.get("Authorization", "")
    if not token:
        log.warning("refused %s %s: IVR_API_TOKEN is not set on this server", request.method, request.path)
        return _error(401, "the API is off: set IVR_API_TOKEN on the server")
    # Compared as bytes: compare_digest refuses non-ASCII text, which must be a 401, not a 500.
    if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].strip().encode(), token.encode()):
        return _error(401, "missing or wrong bearer token")
    return None


@bp.get("/agents")
def list_agents() -> Any:
    return jsonify(_rt().agents.list())


@bp.get("/agents/<name>")
def get_agent(name: str) -> Any:
    try:
        return jsonify(_rt().agents.get(name))
    except UnknownAgent as exc:
        return _error(404, str(exc))


@bp.route("/agents/<name>/status", methods=["PUT", "POST"])
def set_agent_status(name: str) -> Any:
    body = request.get_json(silent=True) or {}
    status = body.get("status") if isinstance(body, dict) else None
    status = status or request.form.get("status")
    if status not in STATUSES:
        return _error(400, f"give a status: one of {', '.join(STATUSES)} (JSON {{\"status\": ...}})")
    rt = _rt()
    try:
        agent = rt.agents.set_status(name, status, by=str(body.get("by") or "api")[:64]
                                     if isinstance(body, dict) else "api")
    except UnknownAgent as exc:
        return _error(404, str(exc))
    if agent["state"] == "available":
        request_dispatch(rt.redis, agent["queues"])  # their next callback, if it is its turn
    return jsonify(agent)


@bp.get("/queues")
def queues() -> Any:
    rt = _rt()
    out = []
    for name in sorted(rt.agents.queues() | set(line.queues(rt.redis))):
        members = [m for m, _ in line.entries(rt.redis, name)]
        est = estimate.for_caller(rt.redis, rt.agents, name, None, rt.config.callback_handle_time)
        available, staffed = rt.agents.counts(name)
        out.append({"queue": name, "in_line": len(members),
                    "callbacks": sum(1 for m in members if not line.is_live(m)),
                    "agents_available": available, "agents_staffed": staffed,
                    "estimated_wait_s": None if est.wait_s is None else round(est.wait_s),
                    "handle_time_s": estimate.handle_time(rt.redis, name, rt.config.callback_handle_time)})
    return jsonify(out)


@bp.get("/callbacks")
def list_callbacks() -> Any:
    everything = request.args.get("all", "") in ("1", "true", "yes")
    return jsonify([public(r) for r in _rt().callbacks.list(finished=everything)])


@bp.get("/callbacks/<callback_id>")
def get_callback(callback_id: str) -> Any:
    rt = _rt()
    record = rt.callbacks.get(callback_id)
    if record is None:
        return _error(404, f"no callback {callback_id}")
    history = [{**h, "at": datetime.fromtimestamp(h["at"], UTC).isoformat(timespec="seconds")}
               for h in rt.callbacks.history(callback_id)]
    return jsonify({**public(record), "history": history})


@bp.post("/callbacks/<callback_id>/cancel")
def cancel_callback(callback_id: str) -> Any:
    rt = _rt()
    try:
        return jsonify(public(rt.callbacks.cancel(callback_id, by="a supervisor")))
    except CallbackError as exc:
        return _error(409 if rt.callbacks.get(callback_id) else 404, str(exc))
