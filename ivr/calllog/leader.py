"""One of many: a Redis lease so that a single process on a host does a job that every
process could do (recording the step log), and another takes over when it dies."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import redis

log = logging.getLogger("ivr.leader")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def lead(client: redis.Redis, key: str, work: Callable[[threading.Event], None],
         stop: threading.Event, lease_ms: int = 15_000) -> None:
    """Until `stop` is set: wait to hold the lease `key`, then run `work(lost)` while holding
    it. `lost` is set when the lease cannot be renewed (or on stop), and `work` must return
    soon after."""
    token = uuid.uuid4().hex
    renew = client.register_script(_RENEW)
    every = lease_ms / 3000  # how often to try for (or renew) the lease, in seconds
    while not stop.is_set():
        try:
            held = client.set(key, token, nx=True, px=lease_ms)
        except redis.RedisError:
            held = False
        if not held:
            stop.wait(every)
            continue
        lost = threading.Event()

        keeper = threading.Thread(target=_keep, args=(renew, key, token, lease_ms, stop, lost),
                                  name=f"lease-{key}", daemon=True)
        keeper.start()
        try:
            work(lost)
        except Exception:
            log.exception("work under lease %s failed", key)
        finally:
            lost.set()
            keeper.join()
            try:
                if client.get(key) == token.encode():
                    client.delete(key)
            except redis.RedisError:
                pass


def _keep(renew, key: str, token: str, lease_ms: int, stop: threading.Event,
          lost: threading.Event) -> None:
    """Renew the lease every third of its length; set `lost` when that fails."""
    while not (stop.is_set() or lost.is_set()):
        stop.wait(lease_ms / 3000)
        try:
            if not renew(keys=[key], args=[token, lease_ms]):
                lost.set()
        except redis.RedisError:
            lost.set()
    lost.set()
