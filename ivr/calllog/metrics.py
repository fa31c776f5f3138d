"""One call's measures, computed from its steps when the call ends.

The recorder writes a summary row per call (`call_metrics`), one per menu the call went
through (`menu_metrics`) and one per self-service node (`service_metrics`) in the same
transaction as the call's end, so reports aggregate
small summary tables instead of scanning every step. Pure functions: no database here.

Every definition below is also written out for supervisors in docs/supervisor-guide.md.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

# Speaking rate used to turn what the caller heard (the `said` text of each step) into
# seconds, the same default as a flow's `settings.words_per_minute`.
WORDS_PER_MINUTE = 160
AUDIO_SECONDS = 5.0  # an audio file of unknown length, as in `ivr flows check`
_AUDIO = re.compile(r"\[audio [^\]]*\]")

# Caller inputs to a menu or question (steps at `ask` nodes).
MENU_INPUTS = ("digits", "speech", "no_match", "no_input", "confirm")
ANSWERED_TRANSFER = ("completed", "answered")


def speech_seconds(text: str | None, words_per_minute: int = WORDS_PER_MINUTE) -> float:
    """Estimated seconds to speak `text`; each `[audio ...]` counts AUDIO_SECONDS."""
    if not text:
        return 0.0
    audio = len(_AUDIO.findall(text))
    words = len(_AUDIO.sub(" ", text).split())
    return words * 60.0 / words_per_minute + audio * AUDIO_SECONDS


def epoch_hour(at: datetime) -> int:
    """Hours since 1970-01-01 UTC: the bucket reports group calls by."""
    return int(at.timestamp() // 3600)


def _destination(step: dict) -> str | None:
    """The kind of destination a step arrives at, or None."""
    if step["event"] == "callback_pending":  # phoned again and kept the callback already booked
        return "callback_kept" if (step.get("detail") or {}).get("choice") == "keep" else None
    if step["event"] != "enter":
        return None
    action = step.get("action") or ""
    if action.startswith("enqueue:"):
        return "queue"
    if action.startswith("dial:"):
        return "transfer"
    if action == "record":
        return "voicemail"
    if action == "hangup":
        return "resolved"
    return None


def _seconds(later: datetime, earlier: datetime) -> float:
    return max(0.0, (later - earlier).total_seconds())


def _said_before_in_same_webhook(steps: list[dict], index: int, include_own: bool) -> float:
    """Speaking time of what the caller heard in the webhook of steps[index] up to that step.

    Steps made by one webhook share one time stamp; what they say is played one after the
    other, so a step is reached only once what came before it in that webhook has played.
    """
    at = steps[index]["at"]
    total = speech_seconds(steps[index].get("said")) if include_own else 0.0
    j = index - 1
    while j >= 0 and steps[j]["at"] == at:
        total += speech_seconds(steps[j].get("said"))
        j -= 1
    return total


def summarise(call: dict, steps: list[dict]) -> tuple[dict, list[dict]]:
    """The call's `call_metrics` row and its `menu_metrics` rows.

    `call` is the `calls` row, `steps` its steps in order (times as datetimes). Repeat-call
    flags need other calls, so the store fills `repeat_24h` and `repeat_7d`.
    """
    started: datetime = call["started_at"]
    steps = sorted(steps, key=lambda s: s["seq"])
    row: dict[str, Any] = {
        "call_sid": call["call_sid"],
        "started_at": started,
        "start_hour": epoch_hour(started),
        "flow": call.get("flow"),
        "direction": "callback" if call.get("parent_call_sid") else "inbound",
        "is_test": bool(call.get("is_test")),
        "from_number": call.get("from_number"),
        "caller_known": bool(call.get("caller_known")),
        "outcome": call.get("outcome"),
        "last_node": call.get("last_node"),
        "last_kind": None,
        "duration_s": call.get("duration_s"),
        "first_prompt_s": None,
        "destination": None,
        "destination_kind": None,
        "time_to_destination_s": None,
        "menu_steps": 0,
        "prompt_s": 0.0,
        "queue": None,
        "queue_wait_s": None,
        "answered": False,
        "answer_wait_s": None,
        "callback": False,  # booked on this call: a callback_requested step (below)
        "spoke": False,
        "intent": None,
        "intent_recognised": False,
        "errors": 0,
        "self_service": False,  # a request node answered the caller (see services())
        "repeat_24h": False,
        "repeat_7d": False,
        "steps_count": len(steps),
    }
    if call.get("last_node"):
        kinds = [s.get("kind") for s in steps if s.get("node") == call["last_node"] and s.get("kind")]
        row["last_kind"] = kinds[-1] if kinds else None
    elif steps:
        row["last_kind"] = steps[-1].get("kind")

    dest_index = None
    for i, s in enumerate(steps):
        if row["first_prompt_s"] is None and s.get("action") in ("gather", "record"):
            row["first_prompt_s"] = round(_seconds(s["at"], started)
                                          + _said_before_in_same_webhook(steps, i, False), 1)
        kind = _destination(s)
        if kind is not None:
            dest_index = i
            row["destination"], row["destination_kind"] = s.get("node") or kind, kind
            row["time_to_destination_s"] = round(_seconds(s["at"], started)
                                                 + _said_before_in_same_webhook(steps, i, True), 1)
            break
    before_dest = steps if dest_index is None else steps[: dest_index + 1]
    row["prompt_s"] = round(sum(speech_seconds(s.get("said")) for s in before_dest), 1)
    row["menu_steps"] = sum(1 for s in before_dest if s.get("kind") == "ask" and s["event"] in MENU_INPUTS)

    for s in steps:
        if s["event"] == "error":
            row["errors"] += 1
        if s["event"] == "callback_requested":
            row["callback"] = True
        # Answers to free-text questions (save_as) never match an intent: not "not understood".
        if (s.get("kind") == "ask" and s.get("speech") and s["event"] in ("speech", "no_match")
                and "saved_as" not in (s.get("detail") or {})):
            row["spoke"] = True
            if s["event"] == "speech" and s.get("intent"):
                row["intent_recognised"] = True
        if s["event"] in ("digits", "speech") and s.get("intent"):
            row["intent"] = s["intent"]
        if s["event"] == "confirm" and not (s.get("detail") or {}).get("confirmed"):
            row["intent"] = None  # "no, that's not it"

    _queue_and_transfer(row, steps)
    row["self_service"] = any(s["answered"] for s in services(row, steps))
    return row, _menus(row, steps)


def _queue_and_transfer(row: dict, steps: list[dict]) -> None:
    """Queue wait, and whether (and after how long) a person answered."""
    visit: dict | None = None  # the queue or transfer the caller is in
    waits: list[float] = []
    for s in steps:
        action = s.get("action") or ""
        detail = s.get("detail") or {}
        if s["event"] == "enter" and action.startswith("enqueue:"):
            if visit and visit["kind"] == "queue":
                waits.append(visit["longest"])
            visit = {"kind": "queue", "queue": action.split(":", 1)[1], "at": s["at"], "longest": 0.0}
            row["queue"] = row["queue"] or visit["queue"]
        elif s["event"] == "enter" and action.startswith("dial:"):
            visit = {"kind": "transfer", "at": s["at"]}
        elif visit and visit["kind"] == "queue" and s["event"] == "queue_wait":
            if detail.get("queue_time") is not None:
                visit["longest"] = max(visit["longest"], float(detail["queue_time"]))
        elif visit and visit["kind"] == "queue" and s["event"] == "queue_left":
            wait = detail.get("queue_time")
            wait = float(wait) if wait is not None else max(visit["longest"], _seconds(s["at"], visit["at"]))
            waits.append(wait)
            if detail.get("result") == "bridged" and not row["answered"]:
                row["answered"], row["answer_wait_s"] = True, wait
            visit = None
        elif visit and visit["kind"] == "transfer" and s["event"] == "transfer_ended":
            if detail.get("status") in ANSWERED_TRANSFER and not row["answered"]:
                talk = detail.get("duration")
                ring = _seconds(s["at"], visit["at"]) - float(talk) if talk is not None else 0.0
                row["answered"], row["answer_wait_s"] = True, round(max(0.0, ring), 1)
            visit = None
        elif visit and visit["kind"] == "queue" and s["event"] in ("hangup", "callback_offer"):
            if s["event"] == "hangup":  # hung up while holding, with no queue_left from Twilio
                waits.append(max(visit["longest"], _seconds(s["at"], visit["at"])))
                visit = None
    if visit and visit["kind"] == "queue":
        waits.append(visit["longest"])
    if waits:
        row["queue_wait_s"] = round(sum(waits), 1)


def services(row: dict, steps: list[dict]) -> list[dict]:
    """One row per self-service node (`request`) the call went through (`service_metrics`):
    how often it asked its API, how the API answered, and whether the call was resolved in
    the IVR with that answer (outcome completed and at least one answer)."""
    nodes: dict[tuple[str, str], dict] = {}
    for s in steps:
        if s.get("kind") != "request" or s["event"] != "request" or not s.get("node"):
            continue
        key = (s.get("flow") or row["flow"] or "", s["node"])
        m = nodes.setdefault(key, {
            "call_sid": row["call_sid"], "flow": key[0], "node": key[1], "started_at": row["started_at"],
            "is_test": row["is_test"], "direction": row["direction"], "queue": row["queue"],
            "requests": 0, "answered": 0, "errors": 0, "waited": 0, "ms_total": 0, "resolved": False})
        detail = s.get("detail") or {}
        m["requests"] += 1
        if s.get("action") == "request:ok":
            m["answered"] += 1
        else:
            m["errors"] += 1
        if s.get("said"):  # the answer was slow: the caller heard the node's prompt
            m["waited"] += 1
        if isinstance(detail.get("ms"), int | float):
            m["ms_total"] += int(detail["ms"])
    for m in nodes.values():
        m["resolved"] = row.get("outcome") == "completed" and m["answered"] > 0
    return list(nodes.values())


def _menus(row: dict, steps: list[dict]) -> list[dict]:
    """One row per menu (`ask` node) the call went through: how callers answered it."""
    menus: dict[tuple[str, str], dict] = {}
    failed_speech: set[tuple[str, str]] = set()
    for i, s in enumerate(steps):
        if s.get("kind") != "ask" or not s.get("node"):
            continue
        key = (s.get("flow") or row["flow"] or "", s["node"])
        m = menus.setdefault(key, {
            "call_sid": row["call_sid"], "flow": key[0], "node": key[1],
            "started_at": row["started_at"], "is_test": row["is_test"], "direction": row["direction"],
            "queue": row["queue"], "visits": 0, "inputs": 0, "speech_inputs": 0,
            "speech_recognised": 0, "keypad_inputs": 0, "keypad_after_speech": 0, "no_input": 0,
            "no_match": 0, "confirmations": 0, "confirm_rejected": 0, "escaped": 0})
        event = s["event"]
        if event == "enter":
            m["visits"] += 1
            continue
        if event not in MENU_INPUTS:
            continue
        m["inputs"] += 1
        detail = s.get("detail") or {}
        if event == "confirm":
            m["confirmations"] += 1
            m["confirm_rejected"] += 0 if detail.get("confirmed") else 1
            continue
        if s.get("speech") and event in ("speech", "no_match") and "saved_as" not in detail:
            m["speech_inputs"] += 1
            if event == "speech" and s.get("intent"):
                m["speech_recognised"] += 1
            else:
                failed_speech.add(key)
        elif s.get("digits") and event in ("digits", "no_match"):
            m["keypad_inputs"] += 1
            if key in failed_speech:
                m["keypad_after_speech"] += 1
                failed_speech.discard(key)
        if event == "no_input":
            m["no_input"] += 1
        elif event == "no_match":
            m["no_match"] += 1
        if event in ("no_input", "no_match"):
            nxt = steps[i + 1] if i + 1 < len(steps) else None
            if nxt is not None and nxt["event"] == "enter" and nxt.get("node") != s["node"]:
                m["escaped"] += 1  # sent on (to the escape) after the last try
    return list(menus.values())
