"""Where callbacks, lines and agents live in Redis: every key name in one place.

    ivr:cb:<id>              hash   one callback (see store.py for its fields)
    ivr:cb:<id>:log          list   its status history, JSON entries, oldest first
    ivr:cb:active            zset   callbacks not finished yet, scored by enqueued_at
    ivr:cb:recent            zset   every callback still kept in Redis, scored by requested_at
    ivr:cb:number:<e164>     string the pending callback of a number (callers who phone again)
    ivr:cb:call:<CallSid>    string the callback booked by a call (makes booking idempotent)
    ivr:line:<queue>         zset   the ordered line: call:<CallSid> and cb:<id>, scored by the
                                    time the caller first joined the queue
    ivr:lines                set    queue names that have a line
    ivr:agent:<name>         hash   an agent's live status: status, since, reserved_for
    ivr:stats:<queue>        hash   recent handling time from the call log (estimate.py)
    ivr:cb:dispatch:<queue>  string a dispatch job for this queue is waiting to run
    ivr:cb:sweep             string the next safety sweep is scheduled
"""

from __future__ import annotations

ACTIVE = "ivr:cb:active"
RECENT = "ivr:cb:recent"
LINES = "ivr:lines"
SWEEP = "ivr:cb:sweep"
LOG_STREAM = "ivr:log"  # the step log stream (ivr.calllog.recorder.STREAM): callback records go there too


def callback(callback_id: str) -> str:
    return f"ivr:cb:{callback_id}"


def history(callback_id: str) -> str:
    return f"ivr:cb:{callback_id}:log"


def by_number(e164: str) -> str:
    return f"ivr:cb:number:{e164}"


def by_call(call_sid: str) -> str:
    return f"ivr:cb:call:{call_sid}"


def line(queue: str) -> str:
    return f"ivr:line:{queue}"


def agent(name: str) -> str:
    return f"ivr:agent:{name}"


def stats(queue: str) -> str:
    return f"ivr:stats:{queue}"


def dispatch_flag(queue: str) -> str:
    return f"ivr:cb:dispatch:{queue}"


def live_member(call_sid: str) -> str:
    """A caller holding in Twilio's queue, as a member of a line."""
    return f"call:{call_sid}"


def callback_member(callback_id: str) -> str:
    """A callback keeping its caller's place, as a member of a line."""
    return f"cb:{callback_id}"
