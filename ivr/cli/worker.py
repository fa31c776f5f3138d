"""`ivr worker`: an rq worker for the slow jobs (recordings, callbacks), with rq's scheduler."""

from __future__ import annotations

import redis
import rq
from rq import Queue

from ivr.config import Config
from ivr.runtime.connections import redis_for

# Queues a worker serves, highest priority first.
# Callbacks first: a free agent waits for its dial; then texts callers are told to expect;
# a transcript can wait a moment.
QUEUES: list[str] = ["callbacks", "messages", "recordings"]

# How often a worker without rq's scheduler tries to take it (rq's maintenance interval; rq's
# default is 10 minutes). A worker killed with kill -9 leaves its scheduler lock behind for
# 61 s; until some worker takes it over, no retry, watchdog or sweep runs.
SCHEDULER_RETRY_S = 10
# rq's worker TTL; an idle worker wakes from its blocking wait every TTL - 15 s, and only then
# looks at the maintenance interval: 26 s makes that 11 s, just past SCHEDULER_RETRY_S.
WORKER_TTL_S = 26


class Worker(rq.Worker):
    """rq's worker, which ends its Pub/Sub listener in the order that cannot hang.

    rq unsubscribes first and then stops the listener thread, and redis-py (8.2 and later)
    waits for that thread without a limit. When the thread reads Redis's unsubscribe reply
    before it is told to stop, it goes back to waiting up to 60 s for a subscription, and the
    worker lives on that long after "done, quitting". Told to stop first, the thread ends on
    the unsubscribe reply itself.
    """

    def unsubscribe(self) -> None:
        thread = self.pubsub_thread
        if thread is None:
            return
        self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
        try:
            thread.stop(timeout=0)  # redis-py 8.2+: clears the running flag, waits for nothing
        except TypeError:  # older redis-py: stop() only clears the flag
            thread.stop()
        try:
            self.pubsub.unsubscribe()  # the reply wakes the thread, which sees the flag and ends
        except redis.RedisError:  # the thread ended and closed the connection meanwhile
            pass
        thread.join(timeout=1)
        self.pubsub.close()


def run(config: Config, queues: list[str] | None = None, burst: bool = False,
        name: str | None = None) -> bool:
    """Work until stopped (or, with burst, until nothing is due). Returns rq's result."""
    connection = redis_for(config)
    if "recordings" in (queues or QUEUES):
        from ivr.runtime.recordings import warm as warm_recordings

        warm_recordings(config)
    if "callbacks" in (queues or QUEUES):
        from callbacks.dispatch import warm

        warm(config, connection)  # agents file and settings loaded once, before rq forks a work horse per job
    worker = Worker([Queue(q, connection=connection) for q in (queues or QUEUES)],
                    connection=connection, name=name, maintenance_interval=SCHEDULER_RETRY_S,
                    worker_ttl=WORKER_TTL_S)
    return worker.work(burst=burst, with_scheduler=True, logging_level=config.log_level)
