"""Live call state in Redis, keyed by CallSid, with a TTL.

One hash per call holds the engine state, the step token of the last answer and that
answer's TwiML. Writes go through one atomic script together with the call's log records, so
the state and the step log never disagree. A per-call lock keeps two webhooks for the same
call (Twilio retrying a slow answer) from running a step at the same time.

A webhook costs two round trips: one script takes the lock and reads the state, another
writes the state, its log records, the answer and any other change that must go with them
(a caller's place in a queue's line) and releases the lock. Both run on a connection each
thread keeps for itself: redis-py's pool checkout and retry wrapper cost more CPU than the
script does, on every webhook. Both scripts can be sent again after a lost connection.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import hiredis
import orjson
import redis
from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

from ivr.calllog import recorder
from ivr.errors import IvrError

from .connections import FAILOVER_S, is_failover_client

PREFIX = "ivr:call:"

# KEYS: lock, call hash. ARGV: token, hold ms, reads asked for now (JSON list, '' none), the
# step token of a request that answers with TwiML ('' for one that does not).
# -> {0} when busy, else {1, state, step, twiml, v, {replies of the reads asked for now},
#    replies of the reads stored by the last save...}; a read that fails gives its error as
#    its reply (pcall), so a bad read costs an estimate, never the call. The last answer's
#    TwiML (a few KB) comes only when the request needs it: it repeats an earlier step, or
#    that answer started a Media Stream the next one must stop.
# (A lock already holding this token was taken by this request before its connection broke.)
_ACQUIRE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
   and redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local v = redis.call('HMGET', KEYS[2], 'state', 'step', 'twiml', 'v', 'reads')
if v[3] and ((ARGV[4] or '') == '' or (tonumber(ARGV[4]) >= tonumber(v[2] or '0')
    and not string.find(v[3], 'name="ivr-' .. (v[2] or '0') .. '"', 1, true))) then v[3] = false end
local asked = {}
if ARGV[3] and ARGV[3] ~= '' then
  for _, command in ipairs(cjson.decode(ARGV[3])) do table.insert(asked, redis.pcall(unpack(command))) end
end
local reply = {1, v[1], v[2], v[3], v[4] or '0', asked}
if v[5] then
  for _, command in ipairs(cjson.decode(v[5])) do table.insert(reply, redis.pcall(unpack(command))) end
end
return reply
"""

# KEYS: call hash, lock, stream.
# ARGV: token, ttl, state, step ('' keeps it), twiml, version read under the lock ('' none),
# commands (a JSON list of Redis commands to run with the save, '' none),
# reads (a JSON list of read-only commands for the next acquire to run, '' none), then the
# step's log records as one JSON array (one stream entry per webhook; absent when none).
# -> {0}, writing nothing, when the state changed since this request read it (its lock expired
# and another request ran the same step meanwhile): only one of them may store the step.
# Else {1, the commands' replies...}; {2} when this request had already stored it (the reply was
# lost with its connection).
_SAVE = """
if ARGV[6] ~= '' and (redis.call('HGET', KEYS[1], 'v') or '0') ~= ARGV[6] then
  if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'by') == ARGV[1] then return {2} end
  return {0}
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
local fields = {'state', ARGV[3], 'by', ARGV[1]}
if ARGV[4] ~= '' then
  table.insert(fields, 'step'); table.insert(fields, ARGV[4])
  table.insert(fields, 'twiml'); table.insert(fields, ARGV[5])
end
if ARGV[8] ~= '' then
  table.insert(fields, 'reads'); table.insert(fields, ARGV[8])
else
  redis.call('HDEL', KEYS[1], 'reads')
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[2])
for i = 9, #ARGV do redis.call('XADD', KEYS[3], '*', 'r', ARGV[i]) end
local replies = {1}
if ARGV[7] ~= '' then
  for _, command in ipairs(cjson.decode(ARGV[7])) do
    table.insert(replies, redis.call(unpack(command)))
  end
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return replies
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class CallBusy(IvrError):
    """Another request for the same call held the lock for too long."""


class LockLost(IvrError):
    """This request took so long that its lock expired and another request for the call ran."""


IDLE_S = 10.0  # a connection unused this long may have been dropped on the way without a word


class Scripts:
    """Lua scripts run on one connection per thread (and process), made like the client's own.

    Checking a connection out of redis-py's pool (a poll for stale data, locks) and its retry
    wrapper cost about 120 us of CPU per command, more than the work: a webhook runs two
    scripts, so these skip both. A connection that breaks is dropped and the script sent once
    more on a new one; callers make their scripts safe to run twice.
    """

    def __init__(self, client: redis.Redis):
        pool = client.connection_pool
        self._new = lambda: pool.connection_class(**pool.connection_kwargs)
        timeout = pool.connection_kwargs.get("socket_timeout")
        # A script that failed sooner than this lost its connection and is sent again. One
        # that failed later timed out: on a connection idle for IDLE_S or more, a firewall or
        # NAT may have dropped it without a word, so it is sent once more on a new one; on a
        # busy connection Redis is not answering, and a second wait would keep the caller
        # past Twilio's 15 s before the fail-safe answer.
        self._resend_within = timeout / 2 if timeout else float("inf")
        # With Sentinel, a script refused by a server that is no longer the master, or sent
        # while none is known, is sent again for up to FAILOVER_S (connections.py).
        self._failover = is_failover_client(client)
        self._local = threading.local()
        self._shas: dict[str, str] = {}

    def register(self, script: str) -> str:
        from hashlib import sha1

        sha = sha1(script.encode()).hexdigest()
        self._shas[sha] = script
        return sha

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():  # never share a socket with a parent
            conn = self._new()
            conn.connect()
            _kernel_timeouts(conn)
            self._local.conn = conn
            self._local.pid = os.getpid()
            self._local.used = time.monotonic()
        return conn

    def run(self, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        give_up, pause = 0.0, 0.05
        for attempt in itertools.count(1):
            conn = self._connection()  # with Sentinel, waits up to FAILOVER_S for a master
            sent = time.monotonic()
            idle = sent - self._local.used
            try:
                try:
                    conn.send_packed_command([_pack("EVALSHA", sha, len(keys), *keys, *args)])
                    reply = conn.read_response()
                except NoScriptError:  # a restarted or flushed Redis: send the script itself
                    conn.send_packed_command([_pack("EVAL", self._shas[sha], len(keys), *keys, *args)])
                    reply = conn.read_response()
                self._local.used = time.monotonic()
                return reply
            except (ConnectionError, TimeoutError, OSError) as exc:
                conn.disconnect()
                self._local.conn = None
                timed_out = time.monotonic() - sent >= self._resend_within
                if self._failover and isinstance(exc, ConnectionError) and not timed_out:
                    give_up = give_up or sent + FAILOVER_S
                    if time.monotonic() + pause < give_up:
                        time.sleep(pause)  # until the sentinels name the new master
                        pause = min(pause * 2, 0.4)
                        continue
                if attempt >= 2 or (timed_out and idle < IDLE_S):
                    if isinstance(exc, ConnectionError | TimeoutError):
                        raise
                    raise ConnectionError(f"call state: {exc}") from exc
        raise AssertionError("unreachable")


def _kernel_timeouts(conn: Any) -> None:
    """Let the kernel time out the connection's reads and writes instead of Python: a Python
    socket with a timeout polls before every send and receive, two more system calls per
    script on every webhook. The socket blocks, for at most the client's socket timeout."""
    sock = getattr(conn, "_sock", None)
    timeout = getattr(conn, "socket_timeout", None)
    if sock is None or not timeout or sock.gettimeout() is None:
        return
    if isinstance(sock, ssl.SSLSocket):  # its reads retry a kernel timeout forever: keep Python's
        return
    seconds = int(timeout)
    limit = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
    except OSError:  # a socket that has no such options keeps Python's timeout
        return
    sock.settimeout(None)


class CallStates:
    def __init__(self, client: redis.Redis, ttl: int = 4 * 3600, stream: str = recorder.STREAM):
        self.redis = client
        self.ttl = ttl
        self.stream = stream
        self.scripts = Scripts(client)
        self._acquire = self.scripts.register(_ACQUIRE)
        self._save = self.scripts.register(_SAVE)
        self._release = self.scripts.register(_RELEASE)
        self._held = threading.local()  # what this thread read when it took a call's lock

    @staticmethod
    def key(call_sid: str) -> str:
        return PREFIX + call_sid

    @staticmethod
    def _lock_key(call_sid: str) -> str:
        return f"{PREFIX}{call_sid}:lock"

    @contextmanager
    def lock(self, call_sid: str, wait_s: float = 8.0, hold_ms: int = 10_000,
             reads: Sequence[Sequence[str | int | float]] = (), step: int | None = None):
        """Hold the call's lock; wait for a concurrent request rather than run twice.

        `reads` are read-only commands run with it (see `asked`): a call's first webhook has
        no stored reads, but knows what it will look up. `step` is the step token of a
        request that answers with TwiML: `load` then has the last answer's TwiML if the
        request repeats an earlier step or that answer started a Media Stream, and None
        otherwise (without `step`, always None)."""
        key = self._lock_key(call_sid)
        token = _token()
        deadline = time.monotonic() + wait_s
        delay = 0.005
        while True:
            reply = self.scripts.run(self._acquire, [key, self.key(call_sid)],
                                     [token, hold_ms, _commands(reads), "" if step is None else step])
            if reply[0]:
                break
            if time.monotonic() > deadline:
                raise CallBusy(call_sid)
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        self._held.call = {"sid": call_sid, "token": token, "read": _decode(reply[1:4]),
                           "version": _text(reply[4]), "asked": list(reply[5]), "reads": list(reply[6:]),
                           "released": False}
        try:
            yield
        except (ConnectionError, TimeoutError):
            # Redis failed this request: waiting on it again to release the lock would only
            # delay the caller's fail-safe answer; the lock expires by itself (hold_ms).
            self._held.call = None
            raise
        finally:
            held = getattr(self._held, "call", None)
            self._held.call = None
            if held and not held["released"]:
                self.scripts.run(self._release, [key], [token])

    def _holding(self, call_sid: str) -> dict | None:
        held = getattr(self._held, "call", None)
        return held if held and held["sid"] == call_sid and not held["released"] else None

    def load(self, call_sid: str) -> tuple[dict | None, int, str | None]:
        """(state, step token of the last answer, that answer's TwiML: see `lock` for when a
        request holding the lock has it)."""
        held = self._holding(call_sid)
        if held is not None:  # read when the lock was taken: no second round trip
            return held["read"]
        return _decode(self.redis.hmget(self.key(call_sid), "state", "step", "twiml"))

    def asked(self, call_sid: str) -> list[Any]:
        """The replies to the `reads` given to `lock` (empty without the lock)."""
        held = self._holding(call_sid)
        return held["asked"] if held is not None else []

    def prefetched(self, call_sid: str) -> list[Any]:
        """The replies to the reads the last save asked for, run when this thread took the
        call's lock (empty when it holds no lock or none were asked for)."""
        held = self._holding(call_sid)
        return held["reads"] if held is not None else []

    def save(self, call_sid: str, state: dict, records: list[dict], step: int | None = None,
             twiml: str | None = None, ttl: int | None = None,
             commands: Sequence[Sequence[str | int | float]] = (),
             reads: Sequence[Sequence[str | int | float]] = ()) -> list[Any]:
        """Store the new state (and the answer for `step`) with the step's log records, run
        `commands` (other Redis writes that belong to the step), and release the call's lock
        if this thread holds it, all in one atomic script. Returns the commands' replies.

        `reads` are read-only commands the call's next step will want answered (a queue's
        figures for the next wait cycle): the script that takes the lock runs them, so
        `prefetched` has their replies without another round trip."""
        held = self._holding(call_sid)
        args = [held["token"] if held else "", ttl or self.ttl,
                _dumps(state),
                "" if step is None else str(step), twiml or "", held["version"] if held else "",
                _commands(commands), _commands(reads)]
        if records:
            args.append(recorder.encode(records))
        reply = self.scripts.run(self._save, [self.key(call_sid), self._lock_key(call_sid), self.stream],
                                 args)
        if not reply[0]:
            self._held.call = None
            raise LockLost(call_sid)
        if held is not None:
            held["released"] = True
            self._held.call = None
        return list(reply[1:])

    def log(self, records: list[dict]) -> None:
        recorder.append(self.redis, records, self.stream)


def _token() -> str:
    """A token no other request holds: random per process, counted within it (a random one
    per request costs a system call)."""
    global _token_base
    if _token_base[0] != os.getpid():  # a forked worker must not count on from its parent's
        _token_base = (os.getpid(), os.urandom(8).hex(), itertools.count())
    return f"{_token_base[1]}{next(_token_base[2]):x}"


_token_base: tuple[int, str, Any] = (0, "", itertools.count())


def _pack(*args: str | bytes | int | float) -> bytes:
    """One command in the Redis protocol, packed by hiredis in C: redis-py's packer, general
    enough for any client setting, costs a tenth of a webhook's CPU for these few arguments."""
    return hiredis.pack_command(args)


def _commands(commands: Sequence[Sequence[str | int | float]]) -> bytes:
    return orjson.dumps([[str(a) for a in c] for c in commands]) if commands else b""


def _decode(values) -> tuple[dict | None, int, str | None]:
    state, step, twiml = values
    if state is None:
        return None, 0, None
    if isinstance(twiml, bytes):
        twiml = twiml.decode()
    decoded = None
    long_number = _LONG_NUMBER if isinstance(state, bytes) else _LONG_NUMBER_TEXT
    if long_number.search(state) is None:  # orjson reads integers past 64 bits as floats
        try:
            decoded = orjson.loads(state)
        except ValueError:  # state written by an older version may hold NaN, which json reads
            pass
    if decoded is None:
        decoded = json.loads(state)
    return decoded, int(step or 0), twiml


_LONG_NUMBER = re.compile(rb"\d{20}")
_LONG_NUMBER_TEXT = re.compile(r"\d{20}")


def _dumps(state: dict) -> bytes:
    try:
        return orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # what orjson refuses (an integer past 64 bits), json writes
        return json.dumps(state, separators=(",", ":")).encode()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
