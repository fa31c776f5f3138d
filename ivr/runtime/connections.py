"""The Redis a process talks to: REDIS_URL, or the embedded one under IVR_DATA_DIR.

REDIS_URL may name a Redis Sentinel set (``redis+sentinel://host:26379,host:26380/mymaster/0``).
Clients then ask the sentinels which server is the master, and keep listening to them:

- When a sentinel starts a failover (``+try-failover``), commands wait, until the sentinels
  name the new master (``+switch-master``), at most FAILOVER_S. The old master goes on taking
  writes for some seconds after its replica is promoted, until Sentinel turns it into a replica
  itself, and every write it takes then is lost; a sentinel announces the failover a few tenths
  of a second before it promotes the replica, so nothing is written there once it does.
- After the switch, each connection to the old master is dropped before its next command, and
  a new one made to the new master.
- A server that answers that it is no longer the master (READONLY, or NOREPLICAS with
  ``min-replicas-to-write``) has its connection dropped, and the command is sent again to the
  master the sentinels name, for about FAILOVER_S (a failover the client did not hear of).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, ResponseError, TimeoutError
from redis.retry import Retry
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)

from ivr.config import Config, SentinelUrl, is_sentinel_url

log = logging.getLogger("ivr.redis")

# How long commands wait for a failover to finish. A forced one (SENTINEL FAILOVER) names the
# new master about 1.5 s after it starts; the wait stops well inside Twilio's 15 s for a webhook.
FAILOVER_S = 4.0


_starting = threading.Lock()
os.register_at_fork(after_in_child=lambda: globals().update(_starting=threading.Lock()))


class FailoverWatch:
    """What the sentinels say about failovers of one service, heard by a daemon thread per
    sentinel (started again in a forked process)."""

    def __init__(self, sentinels: list[tuple[str, int]], service: str, password: str | None):
        self.sentinels = sentinels
        self.service = service
        self.password = password
        self.generation = 0  # counts the switches heard: a connection made before one is stale
        self._until = 0.0  # monotonic time until which commands wait for a failover to end
        self._master: list[str] = []  # the address the last switch named
        self._pid = 0

    def hold(self) -> int:
        """Wait while a failover is under way (at most until FAILOVER_S after it began); return
        the number of switches heard."""
        if self._pid != os.getpid():
            self._start()
        if time.monotonic() < self._until:
            with self._changed:
                while (left := self._until - time.monotonic()) > 0:
                    self._changed.wait(left)
        return self.generation

    def _start(self) -> None:
        with _starting:
            if self._pid == os.getpid():
                return
            self._start_listening()

    def _start_listening(self) -> None:
        self._changed = threading.Condition()
        self._until = 0.0
        self._pid = os.getpid()
        for host, port in self.sentinels:
            threading.Thread(target=self._listen, args=(host, port), daemon=True,
                             name=f"ivr-sentinel-{host}:{port}").start()

    def _listen(self, host: str, port: int) -> None:
        pid = os.getpid()
        while self._pid == pid:
            try:
                client = Redis(host, port, password=self.password, socket_connect_timeout=1,
                               socket_keepalive=True)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe("+try-failover", "+switch-master")
                pubsub.psubscribe("-failover-abort*")
                for message in pubsub.listen():
                    self._heard(_text(message["channel"]), _text(message["data"]).split())
            except Exception:  # a sentinel down or restarting: listen again shortly
                time.sleep(1)

    def _heard(self, event: str, words: list[str]) -> None:
        # +try-failover and -failover-abort-*: "master <name> <ip> <port>";
        # +switch-master: "<name> <old ip> <old port> <new ip> <new port>"
        name = words[0] if event == "+switch-master" else (words[1] if len(words) > 1 else "")
        if name != self.service:
            return
        with self._changed:
            if event == "+try-failover":
                log.warning("Redis Sentinel: failover of %s under way; commands wait for the new master",
                            self.service)
                self._until = time.monotonic() + FAILOVER_S
            else:
                if event == "+switch-master" and words[3:5] != self._master:
                    self._master = words[3:5]  # every sentinel announces it: count it once
                    self.generation += 1
                    log.warning("Redis Sentinel: %s is now at %s", self.service, ":".join(words[3:5]))
                self._until = 0.0
            self._changed.notify_all()


class WatchedSentinel(Sentinel):
    """redis-py's Sentinel client, with the FailoverWatch its connections consult."""

    def __init__(self, spec: SentinelUrl):
        super().__init__(list(spec.sentinels), sentinel_kwargs={
            "password": spec.sentinel_password, "socket_connect_timeout": 1, "socket_timeout": 2})
        self.watch = FailoverWatch(list(spec.sentinels), spec.service, spec.sentinel_password)

    def discover_master(self, service_name: str) -> tuple[str, int]:
        """The master named with the highest configuration epoch by the sentinels that answer.
        (redis-py takes the first answer: just after a switch, a sentinel that has not heard of
        it yet names the old master, which takes writes and loses them.)"""
        best: tuple[int, tuple[str, int]] | None = None
        errors = []
        for sentinel in self.sentinels:
            try:
                state = sentinel.sentinel_masters().get(service_name)
            except (ConnectionError, ResponseError, TimeoutError) as exc:
                errors.append(f"{sentinel}: {exc}")
                continue
            if state and self.check_master_state(state, service_name):
                epoch = int(state.get("config-epoch") or 0)
                if best is None or epoch > best[0]:
                    best = (epoch, (state["ip"], int(state["port"])))
        if best is None:
            raise MasterNotFoundError(f"no sentinel names a master for {service_name!r}"
                                      + (f": {'; '.join(errors)}" if errors else ""))
        return best[1]


class FailoverConnection(SentinelManagedConnection):
    """A connection to the master the sentinels name (see the module doc)."""

    _generation = -1

    def connect(self):
        self._generation = self.connection_pool.sentinel_manager.watch.generation
        return super().connect()

    def send_packed_command(self, command, check_health: bool = True) -> None:
        generation = self.connection_pool.sentinel_manager.watch.hold()
        if self._sock is not None and generation != self._generation:
            self.disconnect()  # made before the last switch: to the old master
        if self._sock is None:
            # redis-py would connect again to the address it had (after READONLY, the old
            # master's): ask the sentinels instead
            self.connect()
        super().send_packed_command(command, check_health)

    def read_response(self, *args, **kwargs):
        try:
            return super().read_response(*args, **kwargs)
        except ResponseError as exc:
            if self.connection_pool.is_master and str(exc).startswith("NOREPLICAS"):
                self.disconnect()
                raise ConnectionError(f"{self.host}:{self.port} has no replica in sync (a failover?): "
                                      f"{exc}") from exc
            raise


def failover_retry() -> Retry:
    """Connection errors (refused, reset, not the master any more, no master known) retried for
    about FAILOVER_S; a timeout is not retried (a Redis that hangs must fail the webhook soon)."""
    backoff = ExponentialBackoff(cap=0.4, base=0.05)
    retries, total = 0, 0.0
    while total < FAILOVER_S:
        retries += 1
        total += backoff.compute(retries)
    return Retry(backoff, retries, supported_errors=(ConnectionError,))


def connect(url: str, **options) -> Redis:
    """A client for `url`: redis://, rediss://, unix://, or redis+sentinel://, whose commands go
    to the master of the Sentinel set, across failovers."""
    if not is_sentinel_url(url):
        return Redis.from_url(url, **options)
    spec = SentinelUrl.parse(url)
    return WatchedSentinel(spec).master_for(
        spec.service, connection_pool_class=SentinelConnectionPool, connection_class=FailoverConnection,
        db=spec.db, username=spec.username, password=spec.password, retry=failover_retry(), **options)


def is_failover_client(client: Redis) -> bool:
    """Whether `client` talks to the master of a Sentinel set."""
    return isinstance(client.connection_pool, SentinelConnectionPool)


def redis_url(config: Config) -> tuple[str, bool]:
    """(url, started): REDIS_URL, else the embedded Redis's URL, started if needed (`started`
    tells the caller it owns that server)."""
    if config.redis_url:
        return config.redis_url, False
    from .embedded import ensure_redis

    return ensure_redis(config.data_dir)


def redis_for(config: Config, **options) -> Redis:
    """A client for the configured Redis (the embedded one without REDIS_URL)."""
    url, _ = redis_url(config)
    return connect(url, **options)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
