"""The outside world the engine needs, wired once per process: Redis, the SQL store, flows,
caller directories, intent matchers. The web app, the simulator and the CLI share it."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import redis

from ivr.config import Config
from ivr.engine.runner import Context, clock
from ivr.flows.directory import unknown_context
from ivr.flows.intents import Matchers
from ivr.flows.model import Flow
from ivr.flows.registry import FlowRegistry
from ivr.phone import normalize

from .callstate import CallStates

log = logging.getLogger("ivr")


def caller_context(registry: FlowRegistry, flow: Flow, phone: str | None) -> dict:
    """The caller's directory record as flow context; unknown (never an error) when the number
    is withheld, not in the directory, or the directory cannot be read."""
    directory = registry.directory(flow)
    if phone and directory is not None:
        try:
            found = directory.lookup(phone)
        except Exception:  # a directory outage must not stop the call
            log.exception("caller directory lookup failed for flow %s", flow.id)
            found = None
        if found is not None:
            return found.as_context()
    return unknown_context(phone)


class Services:
    """Everything a process needs to run calls."""

    def __init__(self, config: Config, redis_client: redis.Redis | None = None,
                 registry: FlowRegistry | None = None,
                 callbacks: Callable[[Config, redis.Redis], Any] | None = None):
        self.config = config
        self.redis_url = config.redis_url
        self.owns_redis = False
        if redis_client is None:
            from .connections import connect, redis_url

            self.redis_url, self.owns_redis = redis_url(config)
            redis_client = connect(self.redis_url, socket_timeout=5, socket_connect_timeout=2,
                                   health_check_interval=30)
        self.redis = redis_client
        self._make_callbacks = callbacks
        self.calls = CallStates(self.redis, ttl=config.state_ttl)
        self.registry = registry or FlowRegistry(config.flows_dir, config.default_flow,
                                                 config.default_region,
                                                 request_hosts=config.allowed_hosts)
        self.matchers = Matchers()
        self.warmup = self.matchers.warm(list(self.registry.flows.values()))
        self._store = None
        self._twilio = None
        self._callbacks = None
        self._requests = None
        self._circuit = None
        self._crm = None
        self._vosk_models = None
        self._vosk_missing: set[str] = set()
        self._recorder_pid: int | None = None
        self._recorder_stop = threading.Event()
        self._recorder_thread: threading.Thread | None = None

    # The SQL store is opened lazily: answering a call never needs it.
    @property
    def store(self):
        if self._store is None:
            from ivr.calllog.store import Store

            self._store = Store(self.config.effective_database_url)
        return self._store

    @property
    def vosk_models(self):
        """Offline speech models per language (IVR_VOSK_MODELS), loaded once per process."""
        if self._vosk_models is None:
            from speech.models import ModelRegistry

            self._vosk_models = ModelRegistry.from_env()
        return self._vosk_models

    def vosk_available(self, flow: Flow) -> bool:
        """Whether `speech: vosk` can work for this flow; says loudly, once, when it cannot."""
        if flow.settings.speech != "vosk":
            return False
        if not self.vosk_models.is_available(flow.language):
            if flow.language not in self._vosk_missing:
                self._vosk_missing.add(flow.language)
                from speech.models import how_to_get_model

                log.error("flow '%s' asks for offline speech (speech: vosk) but no vosk model for %s "
                          "is installed; using Twilio's speech recognition instead. %s", flow.id,
                          flow.language, how_to_get_model(flow.language))
            return False
        if not (self.config.twilio_account_sid and self.config.twilio_auth_token):
            # A recognised answer moves the call on through Twilio's REST API: no account, no way.
            if "account" not in self._vosk_missing:
                self._vosk_missing.add("account")
                log.error("flow '%s' asks for offline speech (speech: vosk) but TWILIO_ACCOUNT_SID "
                          "and TWILIO_AUTH_TOKEN are not both set, so a recognised answer could not "
                          "move the call on; using Twilio's speech recognition instead", flow.id)
            return False
        return True

    def twilio(self):
        """The Twilio REST client (TWILIO_API_BASE_URL points it at a stand-in)."""
        if self._twilio is None:
            from .twilio_api import client

            self._twilio = client(self.config)
        return self._twilio

    def prepare_request(self, req):
        """One `request:` node's request ready to send, with this server's allowed hosts and the
        circuit breakers every process shares; or its answer, when it must not be sent."""
        from .http_requests import prepare

        return prepare(req, hosts=self.config.allowed_hosts, circuit=self.circuit)

    def send_request(self, ready):
        from .http_requests import send

        return send(ready, self.circuit)

    def perform_request(self, req):
        """Send one `request:` node's request now and return its answer."""
        from ivr.engine.events import RequestDone

        ready = self.prepare_request(req)
        return ready if isinstance(ready, RequestDone) else self.send_request(ready)

    @property
    def circuit(self):
        """The API hosts' circuit breakers, in Redis (ivr.runtime.circuit.Circuit)."""
        if self._circuit is None:
            from .circuit import Circuit

            cfg = self.config
            self._circuit = Circuit(self.redis, cfg.request_circuit_failures, cfg.request_circuit_seconds)
        return self._circuit

    @property
    def requests(self):
        """Requests running beside the webhooks (ivr.runtime.request_runner.RequestRunner)."""
        if self._requests is None:
            from .request_runner import RequestRunner

            self._requests = RequestRunner(self.redis, self.prepare_request, self.send_request,
                                           self.config.request_threads)
        return self._requests

    @property
    def crm(self):
        """Lookups in flows' HTTP caller directories, cached in Redis (ivr.runtime.crm)."""
        if self._crm is None:
            from .crm import CrmLookup

            self._crm = CrmLookup(self.redis, self.config.allowed_hosts, self.circuit)
        return self._crm

    def caller_context(self, flow: Flow, phone: str | None) -> dict:
        """Who is calling, from the flow's directory: a file, a table or an HTTP API (a CRM);
        unknown (never an error) when the number is withheld, not found or cannot be looked up."""
        if flow.directory_api is not None:
            return (self.crm.lookup(flow, phone) if phone else None) or unknown_context(phone)
        return caller_context(self.registry, flow, phone)

    @property
    def callbacks(self):
        """The callback machinery (callbacks.runtime.Runtime: agents, the line, callback
        records), built on first use by the factory the shell gave; None without one."""
        if self._callbacks is None and self._make_callbacks is not None:
            self._callbacks = self._make_callbacks(self.config, self.redis)
        return self._callbacks

    def migrate(self) -> None:
        if not self.config.database_url:
            self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store.migrate()

    def recorder(self):
        from ivr.calllog.recorder import Recorder

        return Recorder(self.redis, self.store)

    def ensure_recorder_thread(self) -> None:
        """Start this process's recorder thread (once per process, also after a fork).

        Every web process offers to record the step log, but only the holder of a per-host
        lease does: one writer batches far better than one per worker, and when its process
        dies another takes over within seconds.
        """
        if not self.config.recorder or self._recorder_pid == os.getpid():
            return
        self._recorder_pid = os.getpid()
        self._recorder_stop = threading.Event()
        from ivr.calllog.leader import lead

        key = f"ivr:recorder:leader:{socket.gethostname()}"
        thread = threading.Thread(
            target=lead, args=(self.redis, key, lambda lost: self.recorder().run(lost),
                               self._recorder_stop),
            name="ivr-recorder", daemon=True)
        thread.start()
        self._recorder_thread = thread

    def stop(self, wait_s: float = 0.0) -> None:
        """End this process's recorder; wait up to `wait_s` for it to store its batch and give
        up the lease, so another process takes over at once rather than when it expires."""
        self._recorder_stop.set()
        thread = self._recorder_thread
        if wait_s and thread is not None and thread.is_alive():
            thread.join(wait_s)

    def before_fork(self) -> None:
        """Ready to be forked into worker processes (gunicorn's preloaded app): the intent
        matchers built and the vosk models of `speech: vosk` flows loaded, so the workers
        share them, and no Redis or database connection left open to be shared by the
        children. Each worker connects again on first use."""
        self.warmup.join()
        for language in sorted({f.language for f in self.registry.flows.values() if self.vosk_available(f)}):
            try:
                self.vosk_models.get(language)
            except Exception:  # the worker that needs it tries again and says why
                log.exception("could not load the vosk model for %s", language)
        self.redis.connection_pool.disconnect()
        self.registry.close_connections()
        if self._store is not None:
            self._store.close()
        if self._callbacks is not None and self._callbacks._store is not None:
            self._callbacks._store.close()

    def context(self, flow: Flow | None = None, **hooks: Any) -> Context:
        """The engine's Context for a call of `flow`; `hooks` fill its other fields (the
        callback hooks of callbacks.web.hooks)."""
        registry = self.registry
        region = self.config.default_region

        def lookup(field_name: str, value: str) -> dict | None:
            if flow is not None and flow.directory_api is not None:
                number = normalize(value, region) if field_name == "phone" else None
                return self.crm.lookup(flow, number) if number else None
            directory = registry.directory(flow) if flow else None
            if directory is None:
                return None
            if field_name == "phone":
                found = directory.lookup(normalize(value, region) or "")
            else:
                found = directory.find(field_name, value)
            return found.as_context() if found else None

        def sms_opted_out(number: str) -> bool:
            from .sms import opted_out

            return opted_out(self.redis, number)

        return Context(now=clock(), flows=registry.flows, lookup=lookup, sms_opted_out=sms_opted_out,
                       match=self.matchers.match, fallback_number=self.config.fallback_number,
                       propagate=self.config.propagate_exceptions, **hooks)
