"""What each agent is doing right now: one state per agent in Redis, changed only by Lua
scripts, every change recorded and published.

States:

    available   free: the dispatcher may offer them the head of a line they take
    ringing     reserved for one caller (a live caller or a callback): their phone rings
    on_call     talking to that caller
    wrap_up     the call is over; notes time (the queue's `wrap_up` seconds in agents.yaml),
                then available by itself
    away        not taking calls for now (set by the agent or a supervisor, or by the server
                when a ringing agent does not answer, declines or is busy)
    offline     not working (the state of an agent Redis has never heard of)

`available`, `away` and `offline` are set by hand (`set_status`; `busy` is accepted as another
name for `away`, as the API and `ivr agents status` said before). The others follow the calls:
the dispatcher reserves an available agent (ringing), the agent answering makes them on_call,
the end of the call wrap_up, and wrap_up ends by itself at `wrap_until` (it is read as
available from then on, even before a worker writes it down). A status set by hand while the
agent is ringing or on a call takes effect when that call ends.

The public API (the agent's desk, the dashboard, the CLI and the dispatcher use it)::

    state(r, name) -> {"agent", "state", "since", "call_sid", "queue", "callback", ...}
    all_states(r, names=None) -> {name: state dict}   (names: every agent Redis knows)
    set_status(r, name, "available" | "away" | "offline", by="alice") -> state dict
    reserve / answered / ended / missed / release / end_wrap   (call events, compare-and-set
                                                              on the call they are about)

`since` is epoch seconds; `call_sid` is the caller's call (for a callback, the call that booked
it, whose path and words the agent needs; `callback` then names the callback).

Every change is published on the Redis channel `ivr:agents:events` as JSON
`{"agent", "state", "since", "call_sid", "queue"}` (pages update live from it) and appended to
the step log stream as an `agent_state` record (agent, seq, from, to, at, call_sid, queue,
callback, by), which the recorder stores in the SQL table `agent_states` for the per-agent
reports.

Atomicity: each change is one script that reads the state it expects and writes the new one,
so any number of web processes and workers can race: an agent is reserved by one of them
only, and a late or repeated event (an old call's status callback) changes nothing because
it names a call the agent is no longer on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from . import keys

STATES = ("available", "ringing", "on_call", "wrap_up", "away", "offline")
BY_HAND = ("available", "away", "offline")
ALIASES = {"busy": "away"}  # the name `away` had before agents' states followed their calls
WORKING = ("available", "ringing", "on_call", "wrap_up")  # staffed: taking calls of their queues
CHANNEL = "ivr:agents:events"
KNOWN = "ivr:agents:known"  # every agent whose state Redis holds
STREAM = keys.LOG_STREAM

# Shared by every script that changes an agent (store.py's callback scripts include it too).
# agent_now: the state as it is now, a wrap-up whose time is up being available since it ended.
# agent_move: write a change, its record in the step log stream and its event.
LUA = """
local function agent_now(key, now)
  local f = redis.call('HMGET', key, 'state', 'since', 'wrap_until', 'status', 'reserved_for', 'after')
  local st, since = f[1], f[2]
  if not st then
    -- a hash written before states followed calls: status available|busy|offline
    if f[4] == 'busy' then
      if f[5] and f[5] ~= '' then st = 'ringing' else st = 'away' end
    elseif f[4] == 'available' then st = 'available'
    else st = 'offline' end
  end
  if st == 'wrap_up' and tonumber(f[3] or '0') <= tonumber(now) then
    local after = f[6]
    if not after or after == '' then after = 'available' end
    return after, f[3], true
  end
  return st, since, false
end
local function agent_record(key, stream, name, from, to, at, call_sid, queue, cb, by)
  local v = redis.call('HINCRBY', key, 'v', 1)
  redis.call('XADD', stream, '*', 'r', cjson.encode({type = 'agent_state', agent = name, seq = v,
    from = from, to = to, at = tonumber(at), call_sid = call_sid, queue = queue, callback = cb, by = by}))
  redis.call('PUBLISH', 'ivr:agents:events', cjson.encode({agent = name, state = to,
    since = tonumber(at), call_sid = call_sid, queue = queue}))
end
local function agent_move(key, stream, to, now, call_sid, queue, cb, wrap_until, by)
  local name = string.sub(key, 11)
  local from, since, wrapped = agent_now(key, now)
  local old = redis.call('HMGET', key, 'call_sid', 'queue', 'callback')
  if wrapped then
    agent_record(key, stream, name, 'wrap_up', from, since, old[1] or '', old[2] or '', old[3] or '',
                 'wrap-up time')
    redis.call('HSET', key, 'state', from, 'since', since, 'call_sid', '', 'queue', '', 'callback', '',
               'wrap_until', '', 'after', '', 'by', 'wrap-up time')
    if from == 'available' then redis.call('HSET', key, 'idle_since', since) end
    if to == from and call_sid == '' then return from end
    old = {false, false, false}
  end
  redis.call('HDEL', key, 'status', 'reserved_for')
  redis.call('HSET', key, 'state', to, 'since', now, 'call_sid', call_sid, 'queue', queue,
             'callback', cb, 'wrap_until', wrap_until, 'by', by)
  if to == 'available' then redis.call('HSET', key, 'idle_since', now) end
  if to == 'available' or to == 'away' or to == 'offline' then redis.call('HSET', key, 'after', '') end
  redis.call('SADD', 'ivr:agents:known', name)
  -- the record names the call a change is about: the new one, or the one just over
  if call_sid == '' then call_sid, queue, cb = old[1] or '', old[2] or '', old[3] or '' end
  agent_record(key, stream, name, from, to, now, call_sid, queue, cb, by)
  return from
end
-- The end of a call for the agent: to wrap_up (available at once without wrap-up time),
-- available or away; a status set by hand during the call wins over going back to work.
local function agent_finish(key, stream, to, now, wrap_until, by)
  local after = redis.call('HGET', key, 'after')
  if after and after ~= '' and (to == 'available' or (to == 'wrap_up' and after ~= 'available')) then
    to = after
  end
  if to == 'wrap_up' and tonumber(wrap_until) <= tonumber(now) then to = 'available' end
  if to == 'wrap_up' then
    local c = redis.call('HMGET', key, 'call_sid', 'queue', 'callback')
    agent_move(key, stream, to, now, c[1] or '', c[2] or '', c[3] or '', wrap_until, by)
  else
    agent_move(key, stream, to, now, '', '', '', '', by)
  end
  return to
end
"""

# KEYS: agent, stream   ARGV: to, now, by
# By hand: available, away or offline. While ringing or on a call the wish waits for the end.
_SET = LUA + """
local now = ARGV[2]
local st = agent_now(KEYS[1], now)
if st == 'ringing' or st == 'on_call' then
  redis.call('HSET', KEYS[1], 'after', ARGV[1])
  return {0, st}
end
if st == 'wrap_up' and ARGV[1] ~= 'available' then
  redis.call('HSET', KEYS[1], 'after', ARGV[1])
  return {0, st}
end
if st == ARGV[1] then return {1, st} end
local c = redis.call('HMGET', KEYS[1], 'call_sid', 'queue')
if ARGV[1] == 'available' or ARGV[1] == 'away' or ARGV[1] == 'offline' then c = {'', ''} end
return {1, agent_move(KEYS[1], KEYS[2], ARGV[1], now, c[1] or '', c[2] or '', '', '', ARGV[3])}
"""

# KEYS: agent, stream
# ARGV: to, now, allowed from-states (comma separated), the call it must be on ('' for any),
#       call_sid, queue, callback, wrap_until, by
_MOVE = LUA + """
local now = ARGV[2]
local st = agent_now(KEYS[1], now)
if not string.find(',' .. ARGV[3] .. ',', ',' .. st .. ',', 1, true) then return {0, st} end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'call_sid') ~= ARGV[4] then return {0, 'other call'} end
if ARGV[1] == 'ringing' or ARGV[1] == 'on_call' then
  agent_move(KEYS[1], KEYS[2], ARGV[1], now, ARGV[5], ARGV[6], ARGV[7], '', ARGV[9])
  return {1, st, ARGV[1]}
end
return {1, st, agent_finish(KEYS[1], KEYS[2], ARGV[1], now, ARGV[8], ARGV[9])}
"""


def normalise(status: str) -> str:
    """A state name set by hand, with `busy` read as `away`; ValueError for anything else."""
    from ivr.errors import suggest

    status = ALIASES.get(status, status)
    if status not in BY_HAND:
        raise ValueError(f"'{status}' is not a status an agent sets; use one of: {', '.join(BY_HAND)}"
                         f" (or busy, the same as away){suggest(status, BY_HAND)}")
    return status


def _scripts(r: Any) -> dict:
    # One registration per client: redis-py's Script keeps its SHA and reloads on NOSCRIPT.
    cache = getattr(r, "_ivr_agent_scripts", None)
    if cache is None:
        cache = {"set": r.register_script(_SET), "move": r.register_script(_MOVE)}
        try:
            r._ivr_agent_scripts = cache
        except AttributeError:  # a client that takes no attributes: register every time
            pass
    return cache


def set_status(r: Any, name: str, status: str, by: str = "", now: float | None = None,
               stream: str = STREAM) -> dict:
    """Set an agent's state by hand (available, away or offline; busy means away). While the
    agent is ringing or on a call it takes effect when the call ends (`after` in the result)."""
    status = normalise(status)
    now = time.time() if now is None else now
    _scripts(r)["set"](keys=[keys.agent(name), stream], args=[status, repr(now), by or "hand"])
    return state(r, name, now)


def _move(r: Any, name: str, to: str, allowed: str, *, on_call: str = "", call_sid: str = "",
          queue: str = "", callback: str = "", wrap_until: float = 0.0, by: str = "",
          now: float | None = None, stream: str = STREAM) -> str | None:
    now = time.time() if now is None else now
    reply = _scripts(r)["move"](keys=[keys.agent(name), stream],
                                args=[to, repr(now), allowed, on_call, call_sid, queue, callback,
                                      repr(float(wrap_until)), by])
    return _text(reply[2]) if reply[0] else None


def reserve(r: Any, name: str, call_sid: str, queue: str, callback: str = "", by: str = "dispatcher",
            now: float | None = None) -> bool:
    """available -> ringing for this call. False when the agent is not available."""
    return _move(r, name, "ringing", "available", call_sid=call_sid, queue=queue, callback=callback,
                 by=by, now=now) is not None


def answered(r: Any, name: str, call_sid: str, now: float | None = None) -> bool:
    """ringing -> on_call: the agent picked up this call."""
    current = state(r, name, now)
    return _move(r, name, "on_call", "ringing", on_call=call_sid, call_sid=call_sid,
                 queue=current["queue"] or "", callback=current["callback"] or "", by="answered",
                 now=now) is not None


def ended(r: Any, name: str, call_sid: str, wrap_s: float, now: float | None = None) -> str | None:
    """The call this agent was on (or ringing for) is over: on_call -> wrap_up for `wrap_s`
    seconds (available at once with 0), ringing -> available (the caller went before the agent
    answered). Returns the new state, None when the agent is not on that call."""
    now = time.time() if now is None else now
    current = state(r, name, now)
    if current["call_sid"] != call_sid:
        return None
    if current["state"] == "ringing":
        return _move(r, name, "available", "ringing", on_call=call_sid, by="caller gone", now=now)
    return _move(r, name, "wrap_up", "on_call", on_call=call_sid, wrap_until=now + max(0.0, wrap_s),
                 by="call ended", now=now)


def missed(r: Any, name: str, call_sid: str, why: str = "no-answer", now: float | None = None) -> bool:
    """ringing -> away: the agent did not answer, declined or was busy."""
    return _move(r, name, "away", "ringing", on_call=call_sid, by=why, now=now) is not None


def release(r: Any, name: str, call_sid: str, why: str = "released", now: float | None = None) -> bool:
    """ringing -> available: the offer was withdrawn through no fault of the agent's."""
    return _move(r, name, "available", "ringing", on_call=call_sid, by=why, now=now) is not None


def end_wrap(r: Any, name: str, now: float | None = None) -> bool:
    """Write down the end of a wrap-up whose time is up (reads already treat it as over)."""
    now = time.time() if now is None else now
    raw = r.hmget(keys.agent(name), "state", "wrap_until")
    if _text(raw[0]) != "wrap_up" or float(raw[1] or 0) > now:
        return False
    # agent_now reads it as available (or the status asked for meanwhile): writing that records
    # the wrap-up's end at its own time.
    return _move(r, name, "available", "available,away,offline", by="wrap-up time", now=now) is not None


# -- reading ------------------------------------------------------------------------------

FIELDS = ("state", "since", "call_sid", "queue", "callback", "wrap_until", "idle_since", "after",
          "status", "reserved_for")


def from_fields(name: str, values: list[Any], now: float | None = None) -> dict:
    """An agent's state from the hash fields FIELDS (as HMGET returns them)."""
    now = time.time() if now is None else now
    f = dict(zip(FIELDS, (_text(v) for v in values), strict=True))
    st = f["state"]
    if not st:  # written before states followed calls
        st = {"available": "available", "busy": "ringing" if f["reserved_for"] else "away"}.get(
            f["status"] or "", "offline")
    since = float(f["since"]) if f["since"] else None
    idle = float(f["idle_since"]) if f["idle_since"] else since
    wrap_until = float(f["wrap_until"]) if f["wrap_until"] else None
    if st == "wrap_up" and (wrap_until or 0) <= now:
        st = f["after"] or "available"
        since = idle = wrap_until
    busy = st in ("ringing", "on_call", "wrap_up")
    return {"agent": name, "state": st, "since": since,
            "call_sid": (f["call_sid"] or None) if busy else None,
            "queue": (f["queue"] or None) if busy else None,
            "callback": (f["callback"] or f["reserved_for"] or None) if busy else None,
            "wrap_until": wrap_until if st == "wrap_up" else None,
            "idle_since": idle if st == "available" else None,
            "after": (f["after"] or None) if busy else None}


def state(r: Any, name: str, now: float | None = None) -> dict:
    """One agent's state now (see the module doc); `offline` for an agent Redis never saw."""
    return from_fields(name, r.hmget(keys.agent(name), *FIELDS), now)


def all_states(r: Any, names: Iterable[str] | None = None, now: float | None = None) -> dict[str, dict]:
    """The states of `names` (default: every agent Redis knows), in one round trip."""
    names = sorted(_text(n) for n in r.smembers(KNOWN)) if names is None else list(names)
    if not names:
        return {}
    pipe = r.pipeline(transaction=False)
    for n in names:
        pipe.hmget(keys.agent(n), *FIELDS)
    return {n: from_fields(n, v, now) for n, v in zip(names, pipe.execute(), strict=True)}


def event(message: Any) -> dict | None:
    """The change carried by one pub/sub message of CHANNEL (None for subscribe notices)."""
    if not isinstance(message, dict) or message.get("type") != "message":
        return None
    return json.loads(_text(message["data"]))


def _text(value: Any) -> str | None:
    if value is None or value is False:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
