"""Calling callers back: rq jobs on the `callbacks` queue, run by `ivr worker`.

    dispatch(queue)          look at the head of the queue's line; for each callback whose turn
                             it is (ahead of it only as many live callers as there are free
                             agents), in its calling window and due, claim it with a free agent
                             and place the call. Enqueued when an agent becomes available, a
                             callback is booked, a live caller leaves the line or an attempt
                             ends; scheduled with rq's `enqueue_at` for the next attempt.
    check_dial(id, attempt)  the watchdog of one claim, scheduled before the claim: if the call
                             still has no Twilio SID (the worker died mid-dial), ask Twilio
                             whether the call exists; attach it, or put the callback back.
    sweep()                  the safety net, rescheduled by itself with `enqueue_at`: expires
                             old callbacks, repairs claims and calls whose webhooks were lost,
                             dispatches what is due, drops dead callers from lines, refreshes
                             handling times from the SQL log.

Nothing is lost and nothing is dialled twice: the callback records live in Redis (AOF), every
change is a Lua compare-and-set (store.py), and each attempt carries its number, so workers
can be killed at any moment and any number of them can run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from rq import Queue
from rq.exceptions import DuplicateJobError
from sqlalchemy.exc import SQLAlchemyError

from ivr.config import Config
from ivr.engine.states import CallbackStatus, callback_is_final, callback_is_live

from . import agent_state, keys, line, twilio_client, window
from .runtime import QUEUE, Runtime
from .store import CallbackError

log = logging.getLogger("callbacks.dispatch")

FLAG_TTL = 10  # seconds a "dispatch requested" flag coalesces requests for one queue
SCAN = 200  # line entries one dispatch looks at
MAX_DIALS = 25  # calls one dispatch places before handing on to a new job
JOB_TIMEOUT = 120
FAILURE_TTL = 7 * 86400
API_RETRY = 30  # seconds before trying again when Twilio's API failed (not counted as an attempt)
CONFIG_RETRY = 60  # seconds before trying again when Twilio refused our settings (not counted)
STALE_RING = 120  # seconds past the ring timeout before asking Twilio about a silent call
STALE_TALK = 4 * 3600  # a connected call this old without an end is checked with Twilio

_runtime: Runtime | None = None


def runtime() -> Runtime:
    """This worker's Runtime (inherited by rq's forked work horses)."""
    global _runtime
    if _runtime is None:
        from ivr.runtime.connections import redis_for

        config = Config.from_env()
        _runtime = Runtime(config, redis_for(config))
    return _runtime


def warm(config: Config, redis: Any) -> None:
    """Load settings and the agents file once in the worker, before rq forks a work horse per
    job, and make sure the safety sweep is scheduled."""
    global _runtime
    _runtime = Runtime(config, redis)
    _runtime.roster.agents()
    try:  # import Twilio's API modules once here, not in every forked work horse
        _runtime.twilio().calls  # noqa: B018
    except RuntimeError as exc:  # no account configured: callbacks cannot be placed yet
        log.warning("callbacks: %s", exc)
    ensure_sweep(redis, config.callback_sweep_interval)


# -- asking for work (from the web layer, the API and the jobs themselves) --------------------


def request_dispatch(redis: Any, queues: Iterable[str]) -> int:
    """Ask a worker to look at these queues now. Requests for a queue whose dispatch has not
    started yet are folded into it. Returns how many jobs were enqueued."""
    q = Queue(QUEUE, connection=redis)
    enqueued = 0
    for name in dict.fromkeys(queues):
        if redis.set(keys.dispatch_flag(name), "1", nx=True, ex=FLAG_TTL):
            q.enqueue(dispatch, name, result_ttl=0, failure_ttl=FAILURE_TTL, job_timeout=JOB_TIMEOUT,
                      description=f"dispatch callbacks of {name}")
            enqueued += 1
    return enqueued


def schedule_dispatch(redis: Any, queue: str, at: float) -> None:
    """Look at the queue again at `at` (epoch seconds): a callback's next attempt is due, or its
    calling window opens. One job per queue and second, however often it is asked for."""
    digest = hashlib.sha1(queue.encode()).hexdigest()[:12]  # rq ids: letters, digits, - and _
    try:
        Queue(QUEUE, connection=redis).enqueue_at(
            datetime.fromtimestamp(at, UTC), dispatch, queue, job_id=f"cb-due-{digest}-{int(at)}",
            unique=True, result_ttl=0, failure_ttl=FAILURE_TTL, job_timeout=JOB_TIMEOUT,
            description=f"dispatch callbacks of {queue} (due)")
    except DuplicateJobError:
        pass


def schedule_wrap_end(redis: Any, agent: str, at: float) -> None:
    """Write down the end of an agent's wrap-up at `at` and offer them the next caller."""
    digest = hashlib.sha1(agent.encode()).hexdigest()[:12]
    try:
        Queue(QUEUE, connection=redis).enqueue_at(
            datetime.fromtimestamp(at, UTC), wrap_over, agent, job_id=f"wrap-{digest}-{int(at * 1000)}",
            unique=True, result_ttl=0, failure_ttl=FAILURE_TTL, job_timeout=JOB_TIMEOUT,
            description=f"end of {agent}'s wrap-up")
    except DuplicateJobError:
        pass


def ensure_sweep(redis: Any, interval: int) -> bool:
    """Make sure a sweep is scheduled (cheap when one is: a single SET NX)."""
    if redis.set(keys.SWEEP, "1", nx=True, ex=max(3 * interval, 10)):
        _schedule_sweep(redis, interval)
        return True
    return False


def _schedule_sweep(redis: Any, interval: int) -> None:
    # One job id per time slot: two chains of sweeps (after a crash) merge into one.
    slot = math.ceil((time.time() + interval) / interval)
    try:
        Queue(QUEUE, connection=redis).enqueue_at(
            datetime.fromtimestamp(slot * interval, UTC), sweep, job_id=f"callbacks-sweep-{slot}",
            unique=True, result_ttl=0, failure_ttl=FAILURE_TTL, job_timeout=300,
            description="callbacks safety sweep")
    except DuplicateJobError:
        pass


# -- jobs -----------------------------------------------------------------------------------


def dispatch(queue: str) -> list[str]:
    """rq job: dial the callbacks of `queue` whose turn it is. Returns the ids dialled."""
    rt = runtime()
    rt.redis.delete(keys.dispatch_flag(queue))  # requests from now on start a new job
    ensure_sweep(rt.redis, rt.config.callback_sweep_interval)
    return dispatch_queue(rt, queue)


def wrap_over(agent: str) -> bool:
    """rq job: an agent's wrap-up time is up; their queues may have someone for them."""
    rt = runtime()
    done = agent_state.end_wrap(rt.redis, agent)
    known = rt.roster.agents().get(agent)
    if known is not None and agent_state.state(rt.redis, agent)["state"] == "available":
        request_dispatch(rt.redis, known.queues)
    return done


def check_dial(callback_id: str, attempt: int) -> str:
    """rq job: the watchdog of one claim (see the module doc)."""
    rt = runtime()
    record = rt.callbacks.get(callback_id)
    if (record is None or record["status"] != CallbackStatus.DIALING or record.get("dial_attempt") != attempt
            or record.get("dial_sid")):
        return "settled"
    return reconcile(rt, record)


def sweep() -> dict:
    """rq job: the safety net (see the module doc); schedules the next sweep first."""
    rt = runtime()
    interval = rt.config.callback_sweep_interval
    rt.redis.set(keys.SWEEP, "1", ex=max(3 * interval, 10))
    _schedule_sweep(rt.redis, interval)
    return sweep_once(rt)


# -- the work -------------------------------------------------------------------------------


def dispatch_queue(rt: Runtime, queue: str, now: float | None = None) -> list[str]:
    """Claim and dial what is due at the head of one queue's line."""
    now = time.time() if now is None else now
    free = rt.agents.available_for(queue)
    if not free:
        return []
    slots = len(free)
    entries = line.entries(rt.redis, queue, 0, SCAN - 1)
    alive = live_callers(rt.redis, queue, [m for m, _ in entries if line.is_live(m)])
    records = {r["id"]: r for r in rt.callbacks.many(
        [line.member_id(m) for m, _ in entries if not line.is_live(m)])}
    # Callers whose call is over and callbacks that are finished no longer hold a place.
    stale = [m for m, _ in entries if (m not in alive if line.is_live(m) else
                                       _finished_or_gone(records.get(line.member_id(m))))]
    if stale:
        line.remove_stale(rt.redis, queue, stale)
    dialled: list[str] = []
    at = datetime.fromtimestamp(now, UTC)
    for member, _ in entries:
        if slots <= 0 or not free or len(dialled) >= MAX_DIALS:
            break
        if member in stale:
            continue
        if line.is_live(member):
            slots -= 1  # a free agent will take this caller from Twilio's queue
            continue
        record = records[line.member_id(member)]
        if record["status"] != CallbackStatus.PENDING or (record.get("not_before") or 0) > now:
            continue  # being dialled, or waiting for its next attempt: it does not hold an agent
        if record["expires_at"] <= now:
            rt.callbacks.expire(record["id"], now)
            continue
        if not window.is_open(record.get("calling_hours"), record.get("zones") or [], at):
            opens = window.next_open(record.get("calling_hours"), record.get("zones") or [], at,
                                     datetime.fromtimestamp(record["expires_at"], UTC))
            if opens is not None:
                schedule_dispatch(rt.redis, queue, opens.timestamp())
            continue
        ok, got = False, None
        while free and not ok:
            agent = free.pop(0)
            attempt = int(record.get("dials") or 0) + 1  # the number the claim will give this dial
            # The watchdog exists before the claim does, so a claim can never be orphaned.
            rt.queue().enqueue_in(timedelta(seconds=rt.config.callback_dial_grace), check_dial,
                                  record["id"], attempt, result_ttl=0, failure_ttl=FAILURE_TTL,
                                  job_timeout=JOB_TIMEOUT, description=f"watchdog {record['id']}/{attempt}")
            ok, got = rt.callbacks.claim(record["id"], agent.name, now)
            if not ok and got != "agent not available":
                free.insert(0, agent)  # another worker took this callback: the agent stays free
                break
            # (an agent taken meanwhile by another worker: try this callback with the next one)
        if not ok:
            continue
        slots -= 1
        dial(rt, rt.callbacks.get(record["id"]) or record, int(got))
        dialled.append(record["id"])
    if len(dialled) >= MAX_DIALS:
        request_dispatch(rt.redis, [queue])
    return dialled


def live_callers(redis: Any, queue: str, members: list[str]) -> set[str]:
    """The members that are still callers holding a place in `queue` (their call is live)."""
    if not members:
        return set()
    pipe = redis.pipeline(transaction=False)
    for m in members:
        pipe.hget(f"ivr:call:{line.member_id(m)}", "state")
        # A webhook holds the call's lock while it joins the line and until it saves the state
        # that says so: a member whose call is mid-webhook is not stale.
        pipe.exists(f"ivr:call:{line.member_id(m)}:lock")
    replies = pipe.execute()
    alive = set()
    for m, raw, busy in zip(members, replies[0::2], replies[1::2], strict=True):
        try:
            state = json.loads(raw) if raw else None
        except ValueError:
            state = None
        if busy or (state and (state.get("line") or {}).get("queue") == queue):
            alive.add(m)
    return alive


def dial(rt: Runtime, record: dict, attempt: int) -> str | None:
    """Place the call of a claimed attempt. Returns the Twilio call SID, or None."""
    cfg = rt.config
    cid = record["id"]
    base = cfg.public_url.rstrip("/")
    caller_id = cfg.callback_caller_id or record.get("line_number") or ""
    if not base or not caller_id:
        log.error("callback %s cannot be placed: %s is not set", cid,
                  "PUBLIC_URL" if not base else "IVR_CALLBACK_CALLER_ID (and the call had no called number)")
        attempt_over(rt, record, attempt, "not-configured", counts=False, retry_after=60)
        return None
    fetch_reason(rt, record)
    try:
        placed = twilio_client.place_call(
            rt.twilio(), to=record["number"], from_=caller_id,
            url=f"{base}/voice/callback?cb={cid}&a={attempt}",
            status_callback=f"{base}/voice/callback/status?cb={cid}&a={attempt}",
            timeout=cfg.callback_ring_timeout)
    except twilio_client.Refused as exc:
        log.error("callback %s attempt %s: %s", cid, attempt, exc)
        if exc.permanent:
            attempt_over(rt, record, attempt, f"refused-{exc.code or exc.status}", final=str(exc))
        elif 400 <= (exc.status or 0) < 500 and exc.status != 429:
            # Our configuration (caller ID, account, credentials): every callback would fail
            # alike, so they wait, uncounted, until it is fixed or they expire.
            log.error("callback %s: Twilio refused the call because of this server's settings "
                      "(IVR_CALLBACK_CALLER_ID, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN?); retrying in %ss",
                      cid, CONFIG_RETRY)
            attempt_over(rt, record, attempt, "not-configured", counts=False, retry_after=CONFIG_RETRY)
        else:
            attempt_over(rt, record, attempt, "api-error", counts=False, retry_after=API_RETRY)
        return None
    except Exception:
        # The request may or may not have reached Twilio: never guess, the watchdog asks Twilio.
        log.exception("callback %s attempt %s: placing the call failed; the watchdog will check "
                      "with Twilio in %ss", cid, attempt, cfg.callback_dial_grace)
        return None
    rt.callbacks.progress(cid, attempt, sid=placed.sid)
    log.info("callback %s attempt %s: calling %s (%s)", cid, attempt, record["number"], placed.sid)
    return placed.sid


def fetch_reason(rt: Runtime, record: dict) -> None:
    """Copy the transcript of the caller's recorded reason (made by the recordings job) into the
    callback, so the agent hears it before being connected."""
    if not record.get("reason_url") or record.get("reason_text") or record.get("reason_seq") is None:
        return
    try:
        for rec in rt.store.recordings(record["call_sid"]):
            if rec["seq"] == record["reason_seq"] and rec.get("transcript"):
                rt.callbacks.note(record["id"], "reason_text", rec["transcript"])
                record["reason_text"] = rec["transcript"]
    except Exception:  # the agent can still listen to the recording; the call goes ahead
        log.exception("callback %s: could not read the transcript of its reason", record["id"])


def attempt_over(rt: Runtime, record: dict, attempt: int, result: str, *, counts: bool = True,
                 agent_after: str = "available", retry_after: float | None = None, final: str = "",
                 now: float | None = None) -> str | None:
    """Settle one attempt: free the agent, then plan the next attempt inside the calling window,
    or close the callback. Returns the new status (None when the attempt was already settled)."""
    now = time.time() if now is None else now
    delay = retry_after if retry_after is not None else record.get("retry_after") or 300
    opens = window.next_open(record.get("calling_hours"), record.get("zones") or [],
                             datetime.fromtimestamp(now + delay, UTC),
                             datetime.fromtimestamp(record["expires_at"], UTC))
    retry_at = opens.timestamp() if opens is not None else 0.0
    wrap_s = rt.roster.settings(record["queue"]).wrap_up
    status = rt.callbacks.ended(record["id"], attempt, result, retry_at=retry_at, agent_after=agent_after,
                                counts=counts, final=final, wrap_s=wrap_s, now=now)
    if status is None:
        return None
    log.info("callback %s attempt %s: %s -> %s", record["id"], attempt, result, status)
    if status == CallbackStatus.PENDING and (rt.callbacks.get(record["id"]) or {}).get("cancel_requested"):
        try:  # the caller cancelled while this attempt was being dialled
            rt.callbacks.cancel(record["id"], by="the caller (while it was being dialled)", now=now)
            status = CallbackStatus.CANCELLED
        except CallbackError as exc:  # claimed again meanwhile: the next attempt's end cancels it
            log.warning("callback %s: %s", record["id"], exc)
    agent = rt.roster.agents().get(record.get("agent") or "")
    request_dispatch(rt.redis, agent.queues if agent and agent_after == "available" else [record["queue"]])
    if agent is not None:
        now_state = agent_state.state(rt.redis, agent.name)
        if now_state["state"] == "wrap_up" and now_state["wrap_until"]:
            schedule_wrap_end(rt.redis, agent.name, now_state["wrap_until"])
    if status == CallbackStatus.PENDING:
        schedule_dispatch(rt.redis, record["queue"], retry_at)
    return status


def result_for(record: dict, call_status: str) -> str:
    """What a finished Twilio call means for the attempt."""
    if record["status"] == CallbackStatus.CONNECTED:
        return "completed"
    answered_by = record.get("answered_by") or ""
    if answered_by.startswith("machine") or answered_by == "fax":
        return "machine"
    if call_status == "completed":
        if record.get("agent_missed"):
            return "agent-no-answer"
        return "caller-hung-up" if record["status"] == CallbackStatus.ANSWERED else "no-answer"
    return call_status  # busy, no-answer, failed, canceled


def settle(rt: Runtime, record: dict, call_status: str, now: float | None = None) -> str | None:
    """Apply a finished call (from its status callback, or from Twilio when that was lost)."""
    result = result_for(record, call_status)
    missed = result == "agent-no-answer"
    return attempt_over(rt, record, int(record["dial_attempt"]), result, now=now,
                        # an agent who does not answer their reserved callback is away until they say
                        agent_after="away" if missed else "available")


def reconcile(rt: Runtime, record: dict) -> str:
    """A claimed attempt without a Twilio SID after the grace period: did the call happen?"""
    cid, attempt = record["id"], int(record["dial_attempt"])
    since = datetime.fromtimestamp(record["claimed_at"] - 5, UTC)
    known = set(filter(None, (record.get("sids") or "").split(",")))
    try:
        seen = [c for c in twilio_client.calls_to(rt.twilio(), record["number"], since) if c.sid not in known]
    except Exception:
        log.exception("callback %s: cannot ask Twilio about attempt %s; asking again later", cid, attempt)
        rt.queue().enqueue_in(timedelta(seconds=rt.config.callback_dial_grace), check_dial, cid, attempt,
                              result_ttl=0, failure_ttl=FAILURE_TTL, job_timeout=JOB_TIMEOUT)
        return "retry"
    if seen:
        call = min(seen, key=lambda c: c.created or datetime.max.replace(tzinfo=UTC))
        rt.callbacks.progress(cid, attempt, sid=call.sid)
        log.warning("callback %s attempt %s: the worker died after Twilio took the call; found %s",
                    cid, attempt, call.sid)
        if call.status in ("completed", "busy", "no-answer", "failed", "canceled"):
            settle(rt, rt.callbacks.get(cid) or record, call.status)
        return "found"
    if rt.callbacks.requeue_lost(cid, attempt):
        log.warning("callback %s attempt %s: the call never reached Twilio; back in line", cid, attempt)
        request_dispatch(rt.redis, [record["queue"]])
        return "requeued"
    return "settled"


def sweep_once(rt: Runtime, now: float | None = None) -> dict:
    """One pass of the safety net; returns what it did."""
    now = time.time() if now is None else now
    done = {"expired": 0, "repaired": 0, "dialled": 0, "stale_callers": 0}
    due: set[str] = set()
    for record in rt.callbacks.many(rt.callbacks.active_ids()):
        status = record["status"]
        try:
            if status == CallbackStatus.PENDING:
                if record["expires_at"] <= now:
                    done["expired"] += rt.callbacks.expire(record["id"], now)
                elif (record.get("not_before") or 0) <= now:
                    due.add(record["queue"])
            elif status == CallbackStatus.DIALING and not record.get("dial_sid"):
                if (record.get("claimed_at") or now) + rt.config.callback_dial_grace < now:
                    done["repaired"] += reconcile(rt, record) in ("found", "requeued")
            elif callback_is_live(status) and record.get("dial_sid") and _silent(rt, record, now):
                call = twilio_client.call_status(rt.twilio(), record["dial_sid"])
                if call.status in ("completed", "busy", "no-answer", "failed", "canceled"):
                    done["repaired"] += settle(rt, record, call.status, now) is not None
        except Exception:  # one broken record must not stop the sweep
            log.exception("sweep: callback %s", record.get("id"))
    for queue in sorted(due):
        done["dialled"] += len(dispatch_queue(rt, queue, now))
    for queue in line.queues(rt.redis):
        members = [m for m, _ in line.entries(rt.redis, queue) if line.is_live(m)]
        alive = live_callers(rt.redis, queue, members)
        done["stale_callers"] += line.remove_stale(rt.redis, queue, [m for m in members if m not in alive])
    rt.callbacks.forget_finished(now - rt.config.callback_keep_days * 86400)
    try:
        from .estimate import refresh_stats

        if not rt.migrated:
            rt.store.migrate()
            rt.migrated = True
        refresh_stats(rt.redis, rt.store)
    except SQLAlchemyError as exc:  # the database may be down: estimates use the last figures
        log.warning("sweep: could not refresh handling times from the call log: %s", exc)
    except Exception:
        log.exception("sweep: could not refresh handling times from the call log")
    return done


def _finished_or_gone(record: dict | None) -> bool:
    return record is None or callback_is_final(record.get("status"))


def _silent(rt: Runtime, record: dict, now: float) -> bool:
    """A live call we have heard nothing about for too long (a lost status callback)."""
    if record["status"] == CallbackStatus.CONNECTED:
        return (record.get("connected_at") or now) + STALE_TALK < now
    return (record.get("claimed_at") or now) + rt.config.callback_ring_timeout + STALE_RING < now
