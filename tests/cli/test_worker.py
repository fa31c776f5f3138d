"""`ivr worker` ends when it is done: its Pub/Sub listener never keeps the process alive."""

from __future__ import annotations

import threading

import redis
from rq import Queue

from ivr.cli.worker import Worker


class WatchedEvent(threading.Event):
    """redis-py's "subscribed" event, telling when a thread starts waiting on it."""

    def __init__(self, was_set: bool):
        super().__init__()
        self.waited = threading.Event()
        if was_set:
            self.set()

    def wait(self, timeout: float | None = None) -> bool:
        self.waited.set()
        return super().wait(timeout)


def test_the_worker_ends_even_when_its_listener_hears_the_unsubscribe_first(redis_url):
    """Under load, the listener thread can read Redis's reply to the worker's unsubscribe before
    the worker stops it; it then waited up to 60 s for a new subscription while the worker, done,
    waited for it without a limit (`ivr worker --burst` lived a minute after "done, quitting").
    The test makes that order certain: the unsubscribe returns only once the listener has read
    the reply and either waits again or has ended."""
    connection = redis.Redis.from_url(redis_url)
    worker = Worker([Queue("callbacks", connection=connection)], connection=connection)
    worker.subscribe()
    pubsub, listener = worker.pubsub, worker.pubsub_thread
    event = pubsub.subscribed_event = WatchedEvent(pubsub.subscribed_event.is_set())
    unsubscribe = pubsub.unsubscribe

    def unsubscribe_then_let_the_listener_run(*args):
        unsubscribe(*args)
        while not (event.waited.wait(0.01) or not listener.is_alive()):
            pass

    pubsub.unsubscribe = unsubscribe_then_let_the_listener_run
    ended = threading.Event()
    threading.Thread(target=lambda: (worker.unsubscribe(), ended.set()), daemon=True).start()
    # Ending takes milliseconds; the fault this guards against held the worker for 60 s.
    assert ended.wait(15), "the worker is still waiting for its Pub/Sub listener"
    listener.join(5)
    assert not listener.is_alive()
    assert not event.waited.is_set()  # the listener never went back to waiting for a subscription
    event.set()  # frees a listener left waiting, if the assertions above failed
