"""Flows' API requests run beside the webhooks, their answers handed over through Redis.

A webhook whose step enters a `request:` node starts the request on a thread of its own
process and waits for it a moment (IVR_REQUEST_QUICK_MS): a quick API is answered in the
same webhook and the caller hears nothing of it. A slower one goes on running while the
caller hears the node's prompt; Twilio then asks /voice/request, on whichever web process,
which takes the answer from Redis:

    ivr:req:<CallSid>:<id>          the answer (events.RequestDone as JSON)
    ivr:req:<CallSid>:<id>:ready    a list pushed once the answer is there (to block on)
    ivr:req:<CallSid>:<id>:started  set by the webhook that started it: started once only

A process that dies with a request running loses it; the call's deadline (the request's
timeout and a grace) then gives the flow an answer with error "lost", and its `on_error`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import redis

from ivr.engine import actions as A
from ivr.engine import events as E

log = logging.getLogger("ivr.requests")

PREFIX = "ivr:req:"
TTL_S = 300  # answers are read within seconds; kept a little while for a retried webhook


def key(call_sid: str, request_id: str) -> str:
    return f"{PREFIX}{call_sid}:{request_id}"


def encode(done: E.RequestDone) -> str:
    return json.dumps(dataclasses.asdict(done), separators=(",", ":"))


def decode(raw: bytes | str) -> E.RequestDone:
    return E.RequestDone(**json.loads(raw))


class RequestRunner:
    """Starts requests on a thread pool of this process and finds answers in Redis."""

    def __init__(self, client: redis.Redis, prepare: Callable[[A.Request], Any],
                 send: Callable[[Any], E.RequestDone], threads: int = 16):
        self.redis = client
        self.prepare = prepare  # the request ready to send, or its answer when it must not be sent
        self.send = send
        self.threads = threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        # One pool per process: gunicorn forks the workers after the app is built.
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = concurrent.futures.ThreadPoolExecutor(self.threads,
                                                                   thread_name_prefix="ivr-request")
                self._pid = os.getpid()
            return self._pool

    def start(self, call_sid: str, req: A.Request, wait_s: float) -> E.RequestDone | None:
        """Start the request (once: a request already started is not sent again) and wait up
        to `wait_s` for its answer; None if it is still running."""
        k = key(call_sid, req.id)
        if not self.redis.set(k + ":started", "1", nx=True, ex=TTL_S):
            return self.result(call_sid, req.id, 0)
        ready = self.prepare(req)
        if isinstance(ready, E.RequestDone):  # refused at once (an open circuit...): no waiting
            return self._store(k, ready)
        future = self._executor().submit(self._run, k, ready)
        try:
            return future.result(timeout=wait_s)
        except concurrent.futures.TimeoutError:
            return None

    def _run(self, k: str, ready: Any) -> E.RequestDone:
        return self._store(k, self.send(ready))

    def _store(self, k: str, done: E.RequestDone) -> E.RequestDone:
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(k, encode(done), ex=TTL_S)
            pipe.rpush(k + ":ready", "1")
            pipe.expire(k + ":ready", TTL_S)
            pipe.execute()
        except Exception:  # noqa: BLE001 - the call's deadline gives the flow its on_error
            log.exception("the answer to request %s could not be stored in Redis", k)
        return done

    def result(self, call_sid: str, request_id: str, wait_s: float) -> E.RequestDone | None:
        """The answer to a request, waiting up to `wait_s` for it; None if there is none yet."""
        k = key(call_sid, request_id)
        raw = self.redis.get(k)
        if raw is None and wait_s > 0:
            # The ready list may be emptied by another waiter (a retried webhook): the answer
            # itself stays, so it is read again after waking either way.
            self.redis.blpop([k + ":ready"], timeout=max(wait_s, 0.01))
            raw = self.redis.get(k)
        return decode(raw) if raw is not None else None
