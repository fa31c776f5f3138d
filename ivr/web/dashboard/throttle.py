"""The dashboard's login throttle: a wait that grows with each failure, never a lockout.

Each attempt takes a turn atomically (one Lua script): the attempt is counted before the
password is checked, so parallel guesses cannot slip past the count; past FREE_ATTEMPTS
failures the next attempt must wait 1 s, then 2, 4... up to MAX_WAIT_S. The count is kept
per client address and name (a supervisor elsewhere is never slowed by someone guessing
their password), and per address over all names (guessing many names). A success clears
the address and name's count.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import redis

PREFIX = "ivr:dashboard:login:"


@dataclass(frozen=True)
class Limit:
    free: int  # failures before the first wait
    first_wait_ms: int
    max_wait_ms: int
    forget_ms: int  # a count with no failure for this long starts again


PAIR = Limit(free=5, first_wait_ms=1000, max_wait_ms=5 * 60 * 1000, forget_ms=15 * 60 * 1000)
ADDRESS = Limit(free=30, first_wait_ms=1000, max_wait_ms=5 * 60 * 1000, forget_ms=15 * 60 * 1000)

# KEYS: one hash per count. ARGV: now (ms), then free, first wait, max wait, forget for each key.
# -> 0 when the attempt may go on (it is counted), else the milliseconds left to wait.
_TAKE = """
local now = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local at = tonumber(redis.call('HGET', key, 'at') or '0')
  if at - now > wait then wait = at - now end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local free, first = tonumber(ARGV[4*i-2]), tonumber(ARGV[4*i-1])
  local most, forget = tonumber(ARGV[4*i]), tonumber(ARGV[4*i+1])
  local n = redis.call('HINCRBY', key, 'n', 1)
  local delay = 0
  if n >= free then delay = math.floor(math.min(most, first * 2 ^ (n - free))) end
  redis.call('HSET', key, 'at', now + delay)
  redis.call('PEXPIRE', key, forget + delay)
end
return 0
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def _keys(address: str, name: str) -> list[str]:
    pair = hashlib.sha256(f"{address}\n{name.lower()}".encode()).hexdigest()[:32]
    return [f"{PREFIX}pair:{pair}", f"{PREFIX}ip:{address[:64]}"]


def take_turn(client: redis.Redis, address: str, name: str) -> float:
    """0 when this login attempt may be checked (and is counted as a failure until
    `succeeded`), else the seconds to wait first. Redis trouble lets the attempt through:
    it must not lock supervisors out."""
    args: list[int] = [now_ms()]
    for limit in (PAIR, ADDRESS):
        args += [limit.free, limit.first_wait_ms, limit.max_wait_ms, limit.forget_ms]
    try:
        wait_ms = client.eval(_TAKE, 2, *_keys(address, name), *args)
    except redis.RedisError:
        return 0.0
    return int(wait_ms) / 1000


def succeeded(client: redis.Redis, address: str, name: str) -> None:
    """The password was right: the address and name start again, and the attempt no longer
    counts against the address."""
    pair, address_key = _keys(address, name)
    try:
        client.pipeline().delete(pair).hincrby(address_key, "n", -1).execute()
    except redis.RedisError:
        pass
