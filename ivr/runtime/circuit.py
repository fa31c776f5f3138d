"""A circuit breaker per API host, in Redis, shared by every web process.

When a host fails several times in a row (a timeout, a refused connection, a 5xx), its
circuit opens: for a while requests to it are not sent at all, and callers take the
flow's `on_error` at once instead of each waiting for the timeout. When that while is over,
one request is let through as a trial: if it succeeds the circuit closes, if it fails the
circuit opens again. A 4xx is the API's answer (no such order), not a failure of the API.

    ivr:circuit:<host:port>        hash: fails (in a row), open_until (epoch seconds)
    ivr:circuit:<host:port>:trial  set while the trial request runs
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

log = logging.getLogger("ivr.requests")

PREFIX = "ivr:circuit:"

# KEYS: hash, trial. ARGV: now, trial ttl (ms). 1: send it; 0: open, refuse; 2: the trial.
_ALLOW = """
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until == 0 then return 1 end
if tonumber(ARGV[1]) < open_until then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 2 end
return 0
"""

# KEYS: hash, trial. ARGV: now, failures that open, seconds open, hash ttl (s).
# Returns 1 when this failure opened the circuit (it was closed), else 0.
_FAILED = """
local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
redis.call('DEL', KEYS[2])
local was_open = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0') > 0
if fails >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'open_until', tonumber(ARGV[1]) + tonumber(ARGV[3]))
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
if fails >= tonumber(ARGV[2]) and not was_open then return 1 end
return 0
"""


class Circuit:
    """Circuit breakers for API hosts (`key` is "host:port")."""

    def __init__(self, client: redis.Redis, failures: int = 5, open_s: float = 30,
                 clock: Callable[[], float] = time.time):
        self.redis = client
        self.failures = failures
        self.open_s = open_s
        self.clock = clock  # wall time, shared by every process (tests move it on)
        self._allow = client.register_script(_ALLOW)
        self._failed = client.register_script(_FAILED)

    def allow(self, key: str, trial_s: float = 15) -> bool:
        """Whether a request to `key` may be sent now (one trial when an open circuit's time is
        up; `trial_s` is how long that trial may take before another is let through)."""
        verdict = int(self._allow(keys=[PREFIX + key, PREFIX + key + ":trial"],
                                  args=[self.clock(), int(trial_s * 1000)]))
        if verdict == 2:
            log.info("circuit to %s: sending one request to see whether it is back", key)
        return verdict != 0

    def record(self, key: str, ok: bool) -> None:
        """How a request sent to `key` went: a success closes its circuit, a failure counts."""
        if ok:
            closed = self.redis.pipeline(transaction=True)
            closed.hget(PREFIX + key, "open_until")
            closed.delete(PREFIX + key, PREFIX + key + ":trial")
            was_open = closed.execute()[0]
            if was_open:
                log.warning("circuit to %s closed: it answers again", key)
            return
        opened = self._failed(keys=[PREFIX + key, PREFIX + key + ":trial"],
                              args=[self.clock(), self.failures, self.open_s,
                                    int(max(self.open_s * 4, 300))])
        if int(opened):
            log.error("circuit to %s opened after %d failures in a row: requests to it take "
                      "on_error at once for %d s", key, self.failures, self.open_s)

    def state(self, key: str) -> str:
        """"closed", "open" or "trial" (the open time is over: the next request is a trial)."""
        raw = self.redis.hget(PREFIX + key, "open_until")
        if not raw:
            return "closed"
        return "open" if self.clock() < float(raw) else "trial"
