"""`ivr worker`: an rq worker for the slow jobs (recordings, callbacks), with rq's scheduler."""

from __future__ import annotations

from rq import Queue, Worker

from ivr.config import Config
from ivr.runtime.connections import redis_for

# Queues a worker serves, highest priority first.
# Callbacks first: a free agent waits for its dial; a transcript can wait a moment.
QUEUES: list[str] = ["callbacks", "recordings"]


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
                    connection=connection, name=name)
    return worker.work(burst=burst, with_scheduler=True, logging_level=config.log_level)
