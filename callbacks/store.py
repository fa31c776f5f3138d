"""Callback records in Redis: durable (with AOF persistence on), changed only by Lua scripts.

Each callback is one hash, `ivr:cb:<id>`, with its status history in `ivr:cb:<id>:log`. Every
change is one script, so it is atomic with everything that goes with it: the agent it reserves
or frees, its place in the line, the indexes, and a snapshot appended to the step log stream
(`ivr:log`), which the recorder writes to the SQL `callbacks` table off the webhook path.

Statuses:

    pending    waiting for its turn, or for its next attempt (not_before)
    dialing    a worker claimed it with an agent and is placing (or has placed) the call
    answered   the caller answered (a person, not a machine); the agent is being connected
    connected  the agent is talking to the caller
    completed  connected and finished: the callback was kept
    failed     no contact after max_attempts
    expired    not reached before expires_at, or outside the calling window until then
    cancelled  by the caller (phoning again) or a supervisor

A claim is a compare-and-set on (status pending, agent available): two workers can never
dial the same callback, and an attempt number travels with every later change, so a late or
repeated webhook for an old attempt changes nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from ivr.engine.states import CallbackStatus, callback_is_final
from ivr.errors import IvrError

from . import agent_state, keys

# Shared by every script: bump the version, note the change in the history and append a
# snapshot for the SQL log. KEYS/ARGV layout differs per script, so it takes its keys.
_TOUCH = agent_state.LUA + """
local function touch(key, hist, stream, now, status, note)
  redis.call('HINCRBY', key, 'v', 1)
  redis.call('HSET', key, 'updated_at', now)
  redis.call('RPUSH', hist, cjson.encode({at = tonumber(now), status = status, note = note}))
  local flat = redis.call('HGETALL', key)
  local rec = {type = 'callback'}
  for i = 1, #flat, 2 do rec[flat[i]] = flat[i + 1] end
  redis.call('XADD', stream, '*', 'r', cjson.encode(rec))
end
local function close(key, hist, active, by_number, id, keep)
  redis.call('ZREM', active, id)
  if redis.call('GET', by_number) == id then redis.call('DEL', by_number) end
  redis.call('EXPIRE', key, keep)
  redis.call('EXPIRE', hist, keep)
end
-- The agent reserved for this callback (and only if still for it) is done with it.
local function release(agent_key, stream, id, to, now, wrap_until, by)
  if redis.call('HGET', agent_key, 'callback') == id then
    local st = agent_now(agent_key, now)
    if st == 'ringing' or st == 'on_call' then agent_finish(agent_key, stream, to, now, wrap_until, by) end
  end
end
"""

# KEYS: cb, hist, by_call, by_number, line, active, recent, stream, lines
# ARGV: id, now, live member, queue, enqueued_at, requested_at, then field, value, ...
_CREATE = _TOUCH + """
local booked = redis.call('GET', KEYS[3])
if booked then return {0, booked} end
local pending = redis.call('GET', KEYS[4])
if pending and redis.call('HGET', 'ivr:cb:' .. pending, 'status') == 'pending' then
  return {0, pending}
end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('SET', KEYS[3], ARGV[1], 'EX', 604800)
redis.call('SET', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[5], 'cb:' .. ARGV[1])
redis.call('SADD', KEYS[9], ARGV[4])
redis.call('ZADD', KEYS[6], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[7], ARGV[6], ARGV[1])
touch(KEYS[1], KEYS[2], KEYS[8], ARGV[2], 'pending', 'requested')
return {1, ARGV[1]}
"""

# KEYS: cb, hist, agent, line, stream   ARGV: id, agent name, now
_CLAIM = _TOUCH + """
local f = redis.call('HMGET', KEYS[1], 'status', 'not_before', 'expires_at')
local now = tonumber(ARGV[3])
if f[1] ~= 'pending' then return {0, 'status is ' .. tostring(f[1])} end
if tonumber(f[2] or '0') > now then return {0, 'not due'} end
if tonumber(f[3] or '0') > 0 and tonumber(f[3]) <= now then return {0, 'expired'} end
if agent_now(KEYS[3], ARGV[3]) ~= 'available' then return {0, 'agent not available'} end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
-- Each dial gets a number of its own, never reused (an uncounted attempt gives its count back,
-- not its number): a stale check of an earlier dial can never match this one.
local attempt = redis.call('HINCRBY', KEYS[1], 'dials', 1)
redis.call('HSET', KEYS[1], 'status', 'dialing', 'agent', ARGV[2], 'dial_attempt', attempt,
           'dial_sid', '', 'claimed_at', ARGV[3], 'answered_at', '', 'answered_by', '', 'result', '',
           'attempt_ended_at', '', 'agent_missed', '')
agent_move(KEYS[3], KEYS[5], 'ringing', ARGV[3], redis.call('HGET', KEYS[1], 'call_sid') or '',
           redis.call('HGET', KEYS[1], 'queue') or '', ARGV[1], '', 'dispatcher')
redis.call('ZREM', KEYS[4], 'cb:' .. ARGV[1])
touch(KEYS[1], KEYS[2], KEYS[5], ARGV[3], 'dialing', 'attempt ' .. attempt .. ', agent ' .. ARGV[2])
return {1, attempt}
"""

# KEYS: cb, hist, stream   ARGV: id, attempt, sid, now, answered_by ('' to leave alone), human
_PROGRESS = _TOUCH + """
local f = redis.call('HMGET', KEYS[1], 'status', 'dial_attempt', 'dial_sid', 'sids')
if f[2] ~= ARGV[2] then return {0, 'stale attempt'} end
local status = f[1]
if status ~= 'dialing' and status ~= 'answered' and status ~= 'connected' then
  return {0, 'status is ' .. tostring(status)}
end
local changed = false
local note = ''
if ARGV[3] ~= '' and (not f[3] or f[3] == '') then
  local sids = (f[4] and f[4] ~= '') and (f[4] .. ',' .. ARGV[3]) or ARGV[3]
  redis.call('HSET', KEYS[1], 'dial_sid', ARGV[3], 'sids', sids)
  changed = true
  note = 'call ' .. ARGV[3]
end
if ARGV[5] ~= '' and status == 'dialing' then
  redis.call('HSET', KEYS[1], 'answered_by', ARGV[5], 'answered_at', ARGV[4])
  if ARGV[6] == '1' then
    status = 'answered'
    redis.call('HSET', KEYS[1], 'status', status)
  end
  changed = true
  note = 'answered by ' .. ARGV[5]
end
if changed then touch(KEYS[1], KEYS[2], KEYS[3], ARGV[4], status, note) end
return {1, status}
"""

# KEYS: cb, hist, stream, agent   ARGV: id, attempt, now
_CONNECTED = _TOUCH + """
local f = redis.call('HMGET', KEYS[1], 'status', 'dial_attempt', 'requested_at')
if f[2] ~= ARGV[2] then return {0, 'stale attempt'} end
if f[1] == 'connected' then return {1, 'connected'} end
if f[1] ~= 'answered' and f[1] ~= 'dialing' then return {0, 'status is ' .. tostring(f[1])} end
local wait = tonumber(ARGV[3]) - tonumber(f[3])
redis.call('HSET', KEYS[1], 'status', 'connected', 'connected_at', ARGV[3],
           'wait_s', string.format('%.3f', wait))
if redis.call('HGET', KEYS[4], 'callback') == ARGV[1] and agent_now(KEYS[4], ARGV[3]) == 'ringing' then
  local c = redis.call('HMGET', KEYS[4], 'call_sid', 'queue')
  agent_move(KEYS[4], KEYS[3], 'on_call', ARGV[3], c[1] or '', c[2] or '', ARGV[1], '', 'answered')
end
touch(KEYS[1], KEYS[2], KEYS[3], ARGV[3], 'connected', 'agent connected')
return {1, 'connected'}
"""

# KEYS: cb, hist, agent, line, active, by_number, stream
# ARGV: id, attempt, now, result, retry_at (0: none), agent status after, counts ('1'/'0'), keep,
#       final reason ('' unless the callback must fail now, e.g. Twilio refused the number),
#       retry_at as text for the history, the agent's wrap-up end (after a conversation)
_ENDED = _TOUCH + """
local f = redis.call('HMGET', KEYS[1], 'status', 'dial_attempt', 'attempts', 'max_attempts',
                     'expires_at', 'enqueued_at')
if f[2] ~= ARGV[2] then return {0, 'stale attempt'} end
local status = f[1]
if status ~= 'dialing' and status ~= 'answered' and status ~= 'connected' then
  return {0, 'status is ' .. tostring(status)}
end
if status == 'connected' then
  release(KEYS[3], KEYS[7], ARGV[1], 'wrap_up', ARGV[3], ARGV[11], 'call ended')
else
  release(KEYS[3], KEYS[7], ARGV[1], ARGV[6], ARGV[3], '', ARGV[4])
end
redis.call('HSET', KEYS[1], 'result', ARGV[4], 'attempt_ended_at', ARGV[3])
local new, note
if status == 'connected' then
  new, note = 'completed', 'call ended'
  redis.call('HSET', KEYS[1], 'ended_at', ARGV[3])
else
  local attempts = tonumber(f[3])
  if ARGV[7] == '0' then
    attempts = attempts - 1
    redis.call('HSET', KEYS[1], 'attempts', attempts)
  end
  local retry_at = tonumber(ARGV[5])
  if ARGV[9] ~= '' then
    new, note = 'failed', ARGV[9]
  elseif attempts >= tonumber(f[4]) then
    new = 'failed'
    note = 'no contact after ' .. attempts .. ' attempts (last: ' .. ARGV[4] .. ')'
  elseif retry_at <= 0 or retry_at >= tonumber(f[5]) then
    new = 'expired'
    note = 'no time left in the calling window before it expires (last: ' .. ARGV[4] .. ')'
  else
    new = 'pending'
    note = ARGV[4] .. '; next attempt at ' .. ARGV[10]
    redis.call('HSET', KEYS[1], 'status', 'pending', 'not_before', ARGV[5], 'dial_sid', '')
    redis.call('ZADD', KEYS[4], f[6], 'cb:' .. ARGV[1])
  end
  if new ~= 'pending' then redis.call('HSET', KEYS[1], 'ended_at', ARGV[3], 'closed_reason', note) end
end
redis.call('HSET', KEYS[1], 'status', new)
if new ~= 'pending' then close(KEYS[1], KEYS[2], KEYS[5], KEYS[6], ARGV[1], tonumber(ARGV[8])) end
touch(KEYS[1], KEYS[2], KEYS[7], ARGV[3], new, note)
return {1, new}
"""

# The call was never placed (the worker died before Twilio had it): put it back, uncounted.
# KEYS: cb, hist, agent, line, stream   ARGV: id, attempt, now
_REQUEUE = _TOUCH + """
local f = redis.call('HMGET', KEYS[1], 'status', 'dial_attempt', 'dial_sid', 'attempts', 'enqueued_at')
if f[1] ~= 'dialing' or f[2] ~= ARGV[2] or (f[3] and f[3] ~= '') then return {0, 'not lost'} end
release(KEYS[3], KEYS[5], ARGV[1], 'available', ARGV[3], '', 'never placed')
redis.call('HSET', KEYS[1], 'status', 'pending', 'attempts', tonumber(f[4]) - 1, 'not_before', ARGV[3])
redis.call('ZADD', KEYS[4], f[5], 'cb:' .. ARGV[1])
touch(KEYS[1], KEYS[2], KEYS[5], ARGV[3], 'pending', 'the call was never placed; back in line')
return {1, 'pending'}
"""

# KEYS: cb, hist, line, active, by_number, stream   ARGV: id, now, new status, reason, keep, need
_CLOSE_PENDING = _TOUCH + """
local f = redis.call('HMGET', KEYS[1], 'status', 'expires_at')
if f[1] ~= 'pending' then return {0, tostring(f[1])} end
if ARGV[6] == 'expired' and tonumber(f[2]) > tonumber(ARGV[2]) then return {0, 'pending'} end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'closed_reason', ARGV[4], 'ended_at', ARGV[2])
redis.call('ZREM', KEYS[3], 'cb:' .. ARGV[1])
close(KEYS[1], KEYS[2], KEYS[4], KEYS[5], ARGV[1], tonumber(ARGV[5]))
touch(KEYS[1], KEYS[2], KEYS[6], ARGV[2], ARGV[3], ARGV[4])
return {1, ARGV[3]}
"""

# KEYS: cb, hist, stream   ARGV: now, field, value
_NOTE = _TOUCH + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
touch(KEYS[1], KEYS[2], KEYS[3], ARGV[1], redis.call('HGET', KEYS[1], 'status'), ARGV[2] .. ' set')
return 1
"""

NUMBERS = ("v", "enqueued_at", "requested_at", "expires_at", "not_before", "attempts", "dials",
           "max_attempts", "retry_after", "dial_attempt", "claimed_at", "answered_at", "connected_at",
           "ended_at", "updated_at", "wait_s", "reason_seq", "attempt_ended_at")
JSONS = ("vars", "calling_hours", "zones")
# The caller's directory record is kept as one short field each (caller_first_name, ...): short
# values keep the hash in Redis's compact encoding, about half the memory of one JSON field.
CALLER = "caller_"


class CallbackError(IvrError):
    """A change that does not fit the callback's state (e.g. cancelling one being dialled)."""


class Callbacks:
    """The callback records of one Redis database."""

    def __init__(self, redis: Any, keep_days: int = 7, stream: str = keys.LOG_STREAM):
        self.redis = redis
        self.keep = max(1, int(keep_days * 86400))
        self.stream = stream
        self._create = redis.register_script(_CREATE)
        self._claim = redis.register_script(_CLAIM)
        self._progress = redis.register_script(_PROGRESS)
        self._connected = redis.register_script(_CONNECTED)
        self._ended = redis.register_script(_ENDED)
        self._requeue = redis.register_script(_REQUEUE)
        self._close_pending = redis.register_script(_CLOSE_PENDING)
        self._note = redis.register_script(_NOTE)

    # -- booking ------------------------------------------------------------------------

    def request(self, *, call_sid: str, number: str, queue: str, enqueued_at: float,
                now: float | None = None, **fields: Any) -> tuple[str, bool]:
        """Book a callback for the caller of `call_sid`. Returns (id, created).

        Idempotent: the same call books once (a retried webhook gets the same id), and a number
        that already has a pending callback keeps that one, with its earlier place.
        """
        now = time.time() if now is None else now
        cid = "CB" + uuid.uuid4().hex
        expire_after = float(fields.pop("expire_after", 4 * 3600))
        record = {"id": cid, "status": CallbackStatus.PENDING, "v": 0, "queue": queue, "number": number,
                  "call_sid": call_sid, "enqueued_at": enqueued_at, "requested_at": now,
                  "expires_at": now + expire_after, "not_before": 0, "attempts": 0,
                  "dial_attempt": 0, **fields}
        caller = record.pop("caller", None) or {}
        record.update({CALLER + k: v for k, v in caller.items() if v not in (None, "")})
        flat: list[Any] = []
        for key, value in record.items():
            flat += [key, _encode(key, value)]
        created, found = self._create(
            keys=[keys.callback(cid), keys.history(cid), keys.by_call(call_sid), keys.by_number(number),
                  keys.line(queue), keys.ACTIVE, keys.RECENT, self.stream, keys.LINES],
            args=[cid, repr(now), keys.live_member(call_sid), queue, repr(enqueued_at), repr(now), *flat])
        return _text(found), bool(created)

    # -- reading ------------------------------------------------------------------------

    def get(self, callback_id: str) -> dict | None:
        raw = self.redis.hgetall(keys.callback(callback_id))
        return decode(raw) if raw else None

    def many(self, ids: list[str]) -> list[dict]:
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.hgetall(keys.callback(cid))
        return [decode(raw) for raw in pipe.execute() if raw]

    def history(self, callback_id: str) -> list[dict]:
        return [json.loads(_text(e)) for e in self.redis.lrange(keys.history(callback_id), 0, -1)]

    def active_ids(self) -> list[str]:
        return [_text(i) for i in self.redis.zrange(keys.ACTIVE, 0, -1)]

    def list(self, finished: bool = False) -> list[dict]:
        """Callbacks in line order (first joined first); with `finished`, also those kept in
        Redis after they ended, newest request last."""
        if not finished:
            return self.many(self.active_ids())
        records = self.many([_text(i) for i in self.redis.zrange(keys.RECENT, 0, -1)])
        return sorted(records, key=lambda r: (callback_is_final(r["status"]), r.get("enqueued_at") or 0))

    def pending_for(self, number: str) -> dict | None:
        """The number's pending callback (not one being dialled), for callers who phone again."""
        cid = self.redis.get(keys.by_number(number))
        record = self.get(_text(cid)) if cid else None
        return record if record and record["status"] == CallbackStatus.PENDING else None

    # -- changes ------------------------------------------------------------------------

    def claim(self, callback_id: str, agent: str, now: float | None = None) -> tuple[bool, Any]:
        """Reserve the agent and take the callback for one attempt: (True, attempt) or (False, why)."""
        record = self.get(callback_id)
        if record is None:
            return False, "no such callback"
        ok, value = self._claim(
            keys=[keys.callback(callback_id), keys.history(callback_id), keys.agent(agent),
                  keys.line(record["queue"]), self.stream],
            args=[callback_id, agent, repr(time.time() if now is None else now)])
        return bool(ok), int(value) if ok else _text(value)

    def progress(self, callback_id: str, attempt: int, *, sid: str = "", answered_by: str = "",
                 human: bool = False, now: float | None = None) -> str | None:
        """Note the Twilio call of an attempt and who answered; returns the status or None."""
        ok, status = self._progress(
            keys=[keys.callback(callback_id), keys.history(callback_id), self.stream],
            args=[callback_id, str(attempt), sid or "", repr(time.time() if now is None else now),
                  answered_by or "", "1" if human else "0"])
        return _text(status) if ok else None

    def connected(self, callback_id: str, attempt: int, now: float | None = None) -> bool:
        """The agent answered: the callback is connected and its agent on_call."""
        record = self.get(callback_id)
        ok, _ = self._connected(keys=[keys.callback(callback_id), keys.history(callback_id), self.stream,
                                      _agent_key(record or {})],
                                args=[callback_id, str(attempt), repr(time.time() if now is None else now)])
        return bool(ok)

    def ended(self, callback_id: str, attempt: int, result: str, *, retry_at: float = 0.0,
              agent_after: str = "available", counts: bool = True, final: str = "", wrap_s: float = 0.0,
              now: float | None = None) -> str | None:
        """An attempt is over. Returns the new status (pending again, or final) or None when the
        attempt was already settled (a repeated or late status callback). The agent goes to
        wrap-up for `wrap_s` seconds after a conversation, else to `agent_after` (available, or
        away when they did not answer)."""
        record = self.get(callback_id)
        if record is None:
            return None
        now = time.time() if now is None else now
        ok, status = self._ended(
            keys=[keys.callback(callback_id), keys.history(callback_id), _agent_key(record),
                  keys.line(record["queue"]), keys.ACTIVE, keys.by_number(record["number"]), self.stream],
            args=[callback_id, str(attempt), repr(time.time() if now is None else now), result,
                  repr(float(retry_at)), agent_after, "1" if counts else "0", str(self.keep), final,
                  _iso(retry_at), repr(now + max(0.0, wrap_s))])
        return _text(status) if ok else None

    def requeue_lost(self, callback_id: str, attempt: int, now: float | None = None) -> bool:
        """Put back a claimed callback whose call never reached Twilio (not counted as an attempt)."""
        record = self.get(callback_id)
        if record is None:
            return False
        ok, _ = self._requeue(
            keys=[keys.callback(callback_id), keys.history(callback_id), _agent_key(record),
                  keys.line(record["queue"]), self.stream],
            args=[callback_id, str(attempt), repr(time.time() if now is None else now)])
        return bool(ok)

    def cancel(self, callback_id: str, by: str, now: float | None = None) -> dict:
        """Cancel a pending callback; CallbackError if it is being dialled or already over."""
        return self._close(callback_id, CallbackStatus.CANCELLED, f"cancelled by {by}", now, need="pending")

    def expire(self, callback_id: str, now: float | None = None) -> bool:
        """Expire a pending callback whose time is up; False if it is not due to expire."""
        try:
            self._close(callback_id, CallbackStatus.EXPIRED, "not reached before it expired", now,
                        need="expired")
        except CallbackError:
            return False
        return True

    def _close(self, callback_id: str, status: str, reason: str, now: float | None, need: str) -> dict:
        record = self.get(callback_id)
        if record is None:
            raise CallbackError(f"no callback {callback_id}")
        now = time.time() if now is None else now
        if need == "expired":
            reason = f"not reached before it expired ({record['attempts']} attempts" + (
                f", last: {record['result']})" if record.get("result") else ")")
        ok, found = self._close_pending(
            keys=[keys.callback(callback_id), keys.history(callback_id), keys.line(record["queue"]),
                  keys.ACTIVE, keys.by_number(record["number"]), self.stream],
            args=[callback_id, repr(now), status, reason, str(self.keep), need])
        if not ok:
            raise CallbackError(f"callback {callback_id} is {_text(found)}, not pending")
        return self.get(callback_id) or record

    def note(self, callback_id: str, field: str, value: str, now: float | None = None) -> bool:
        """Set one descriptive field (e.g. reason_text) and log the change."""
        return bool(self._note(keys=[keys.callback(callback_id), keys.history(callback_id), self.stream],
                               args=[repr(time.time() if now is None else now), field, value]))

    def forget_finished(self, before: float) -> int:
        """Drop ids of callbacks requested before `before` from the recent index (their hashes
        expire by themselves)."""
        old = [_text(i) for i in self.redis.zrangebyscore(keys.RECENT, "-inf", before)]
        active = set(self.active_ids())
        gone = [i for i in old if i not in active]
        return int(self.redis.zrem(keys.RECENT, *gone)) if gone else 0


def public(record: dict) -> dict:
    """A callback as `ivr callbacks list --json` and the API show it."""
    def iso(name: str) -> str | None:
        value = record.get(name)
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds") if value else None

    return {
        "id": record["id"], "number": record["number"], "status": record["status"],
        "queue": record["queue"], "requested_at": iso("requested_at"), "enqueued_at": iso("enqueued_at"),
        "attempts": int(record.get("attempts") or 0), "max_attempts": int(record.get("max_attempts") or 0),
        "next_attempt_at": iso("not_before") if record["status"] == CallbackStatus.PENDING else None,
        "expires_at": iso("expires_at"), "agent": record.get("agent") or None,
        "last_result": record.get("result") or None, "closed_reason": record.get("closed_reason") or None,
        "call_sid": record.get("call_sid"), "callback_call_sid": record.get("dial_sid") or None,
        "connected_at": iso("connected_at"), "wait_s": record.get("wait_s") or None,
        "reason": record.get("reason_text") or None,
    }


def decode(raw: dict) -> dict:
    out: dict[str, Any] = {"caller": {}}
    for k, v in raw.items():
        key, value = _text(k), _text(v)
        if key.startswith(CALLER):
            name = key[len(CALLER):]
            out["caller"][name] = value == "True" if name == "known" else value
        elif key in NUMBERS:
            out[key] = float(value) if value not in ("", None) else None
            if key in ("v", "attempts", "max_attempts", "dial_attempt", "retry_after", "reason_seq") \
                    and out[key] is not None:
                out[key] = int(out[key])
        elif key in JSONS:
            out[key] = json.loads(value) if value else None
        else:
            out[key] = value
    return out


def _encode(key: str, value: Any) -> str:
    if key in JSONS:
        return json.dumps(value, separators=(",", ":"), default=str) if value is not None else ""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds") if epoch else ""


def _agent_key(record: dict) -> str:
    return keys.agent(record.get("agent") or "-")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
