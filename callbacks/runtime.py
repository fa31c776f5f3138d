"""What the callback machinery needs in one process, built once: configuration, Redis, the
agents, the callback records, and (on first use) Twilio's REST client and the SQL store."""

from __future__ import annotations

from typing import Any

from rq import Queue

from ivr.config import Config

from .agents import Agents, Roster
from .store import Callbacks

QUEUE = "callbacks"  # the rq queue of dispatch jobs


class Runtime:
    def __init__(self, config: Config, redis: Any):
        self.config = config
        self.redis = redis
        self.roster = Roster(config.agents_path, config.default_region)
        self.agents = Agents(redis, self.roster)
        self.callbacks = Callbacks(redis, config.callback_keep_days)
        self._twilio: Any = None
        self._store: Any = None
        self.migrated = False  # the SQL schema was brought up to date by this process

    def twilio(self) -> Any:
        """Twilio's REST client, with a timeout well inside the dial grace period: a request
        still in flight when the watchdog looks would otherwise be dialled again."""
        if self._twilio is None:
            from ivr.runtime.twilio_api import client

            self._twilio = client(self.config)
            self._twilio.http_client.timeout = max(1.0, min(15.0, self.config.callback_dial_grace / 2))
        return self._twilio

    @property
    def store(self) -> Any:
        if self._store is None:
            from ivr.calllog.store import Store

            self._store = Store(self.config.effective_database_url)
        return self._store

    def queue(self) -> Queue:
        return Queue(QUEUE, connection=self.redis)
