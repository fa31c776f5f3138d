"""Prometheus metrics at `/metrics`, for the people who keep the line running.

Two kinds, in one answer:

- **Counted as things happen**, in whichever process serves the request: Twilio's webhooks by
  route and status and how long each took, the fail-safe answers (a caller hearing the
  apology), requests refused for their signature, and flow files refused when they changed.
  Under `ivr serve`, gunicorn's workers are separate processes:
  prometheus_client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, which `ivr serve` sets
  to a folder of its own) adds their counts up, so any worker answers the same totals.
- **Read from Redis when scraped**, so they are the whole deployment's whatever process
  answers: queues (callers waiting, longest wait, estimated wait), agents by state, callbacks
  by status, calls in progress, rq's queues, the step log's backlog and dead letters, and the
  flows loaded or refused (the answering process's view of the flows folder).

`/metrics` answers only with `Authorization: Bearer $IVR_API_TOKEN` (401 otherwise, and when
the server has no token), like the agents' API. docs/supervisor-guide.md lists every metric,
the scrape configuration, the alert rules (docs/monitoring/alerts.yml) and the Grafana
dashboard (docs/monitoring/grafana-dashboard.json).
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from flask import Flask, Response, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from ivr.calllog.recorder import STREAM
from ivr.engine.states import CallbackStatus, callback_is_final
from ivr.runtime import live as live_calls

log = logging.getLogger("ivr.metrics")

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Twilio gives a webhook 15 s in all; most answer in a few milliseconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)

WEBHOOKS = Counter("ivr_webhook_requests", "Webhook requests answered, by route and HTTP status.",
                   ["route", "status"])
LATENCY = Histogram("ivr_webhook_duration_seconds", "Time to answer a webhook, by route.", ["route"],
                    buckets=LATENCY_BUCKETS)
FAIL_SAFE = Counter("ivr_failsafe_answers", "Callers answered with the apology and a person (or "
                    "voicemail) instead of their flow, by reason.", ["reason"])
REFUSED = Counter("ivr_webhook_refused", "Webhook requests refused for their signature (403) or "
                  "size (413), by reason.", ["reason"])
FLOW_REFUSED = Counter("ivr_flow_reload_errors", "Times a new or changed flow file failed its check "
                       "and was not loaded (counted by each process that read it).")

FAIL_SAFE_REASONS = ("flow", "error", "no_flow", "no_state", "flow_gone", "fallback")
REFUSED_REASONS = ("missing", "invalid", "unreadable", "too_large")
# Every known label value starts at 0, so a rate or an alert sees the first one happen.
for _reason in FAIL_SAFE_REASONS:
    FAIL_SAFE.labels(_reason)
for _reason in REFUSED_REASONS:
    REFUSED.labels(_reason)


def failed_safe(reason: str) -> None:
    """A caller got the fail-safe answer: `flow` (the flow failed at run time), `error` (the
    webhook failed: Redis, a bug), `no_flow`, `no_state`, `flow_gone`, `fallback` (Twilio
    used the fallback URL)."""
    FAIL_SAFE.labels(reason).inc()


def refused(reason: str) -> None:
    """A webhook was refused: `missing` (no signature), `invalid`, `unreadable`, `too_large`."""
    REFUSED.labels(reason).inc()


def flow_refused(_path: str) -> None:
    FLOW_REFUSED.inc()


_children: dict[tuple, Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, kept: finding a child costs several times what counting does,
    and this runs on every webhook."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_ENV))


# -- timing webhooks -------------------------------------------------------------------------


def init_app(app: Flask, webhooks: Iterable[str] = ("voice",)) -> None:
    """Time the requests of the blueprints named in `webhooks`, count the registry's refused
    flow files, and serve `/metrics`."""
    timed = frozenset(webhooks)
    svc = app.extensions["ivr"]
    svc.registry.on_refused = flow_refused
    live = CollectorRegistry(auto_describe=False)
    live.register(LiveCollector(svc))

    @app.before_request
    def _start() -> None:
        if request.blueprint in timed:
            g.metrics_start = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        start = g.pop("metrics_start", None)
        if start is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            _child(LATENCY, route).observe(time.perf_counter() - start)
            _child(WEBHOOKS, route, str(response.status_code)).inc()
        return response

    @app.get("/metrics")
    def metrics() -> Any:
        token = svc.config.api_token
        given = request.headers.get("Authorization", "")
        if not token:
            return jsonify(error="metrics are off: set IVR_API_TOKEN on the server"), 401
        if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].strip().encode(),
                                                                      token.encode()):
            return jsonify(error="missing or wrong bearer token"), 401
        if multiprocess():
            counted = CollectorRegistry()
            MultiProcessCollector(counted)
        else:
            counted = REGISTRY
        body = generate_latest(counted) + generate_latest(live)
        return Response(body, 200, content_type=CONTENT_TYPE_LATEST)


# -- read from Redis when scraped ------------------------------------------------------------


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels or [])


class LiveCollector:
    """The deployment's live state, read from Redis at each scrape."""

    def __init__(self, svc: Any):
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        svc = self.svc
        up = _gauge("ivr_redis_up", "Whether Redis answered this scrape (1) or not (0).")
        flows = _gauge("ivr_flows_loaded", "Flows this process is serving.")
        flows.add_metric([], len(svc.registry.flows))
        refused_now = _gauge("ivr_flow_files_refused", "Flow files whose latest version failed its "
                             "check (an older version of the file may still be serving).")
        refused_now.add_metric([], len(svc.registry.failing))
        try:
            families = list(self._from_redis())
        except redis.RedisError as exc:
            log.warning("metrics: Redis did not answer: %s", exc)
            up.add_metric([], 0)
            yield from (up, flows, refused_now)
            return
        up.add_metric([], 1)
        yield from (up, flows, refused_now, *families)

    def _from_redis(self) -> Iterator[Metric]:
        svc = self.svc
        r = svc.redis
        backlog = _gauge("ivr_steplog_backlog", "Step log entries in Redis not yet stored in SQL.")
        backlog.add_metric([], r.xlen(STREAM))
        dead = _gauge("ivr_steplog_dead_letters", "Step log entries SQL refused, kept aside in "
                      f"{STREAM}:dead.")
        dead.add_metric([], r.xlen(f"{STREAM}:dead"))
        yield from (backlog, dead)

        calls = _gauge("ivr_calls_active", "Calls in progress, by flow and what they wait for.",
                       ["flow", "wait"])
        for row in _active(live_calls.calls(r, svc.config.state_ttl)):
            calls.add_metric([row[0], row[1]], row[2])
        yield calls

        yield from self._rq(r)
        rt = svc.callbacks
        if rt is not None:
            yield from self._queues(rt)

    @staticmethod
    def _rq(r: Any) -> Iterator[Metric]:
        from rq import Queue

        jobs = _gauge("ivr_rq_jobs", "Jobs waiting in each rq queue (recordings, callbacks...).", ["queue"])
        failed = _gauge("ivr_rq_failed_jobs", "Jobs in each rq queue's failed registry.", ["queue"])
        for q in Queue.all(connection=r):
            jobs.add_metric([q.name], q.count)
            failed.add_metric([q.name], q.failed_job_registry.count)
        yield from (jobs, failed)

    @staticmethod
    def _queues(rt: Any) -> Iterator[Metric]:
        from callbacks import live

        waiting = _gauge("ivr_queue_callers_waiting", "Live callers in the queue's line.", ["queue"])
        longest = _gauge("ivr_queue_longest_wait_seconds", "How long the first caller in the line has "
                         "waited (0 when nobody waits).", ["queue"])
        estimated = _gauge("ivr_queue_estimated_wait_seconds", "The wait a caller joining now would "
                           "be told (absent when nobody is staffed).", ["queue"])
        queue_agents = _gauge("ivr_queue_agents", "Agents who take the queue, by state.", ["queue", "state"])
        due = _gauge("ivr_callbacks_due", "Pending callbacks whose next attempt may start now.", ["queue"])
        for q in live.snapshot(rt):
            waiting.add_metric([q["queue"]], q["waiting"])
            longest.add_metric([q["queue"]], q["longest_wait_s"] or 0)
            if q["estimated_wait_s"] is not None:
                estimated.add_metric([q["queue"]], q["estimated_wait_s"])
            for state in live.AGENT_STATES:
                queue_agents.add_metric([q["queue"], state], q["agents"].get(state, 0))
            due.add_metric([q["queue"]], q["callbacks"]["due"])
        agents = _gauge("ivr_agents", "Agents by state (each agent once).", ["state"])
        by_state = live.agents_by_state(rt)
        for state in live.AGENT_STATES:
            agents.add_metric([state], by_state.get(state, 0))
        callbacks = _gauge("ivr_callbacks", "Callbacks not finished yet, by queue and status.",
                           ["queue", "status"])
        counts = live.callbacks_by_status(rt)
        open_statuses = [s for s in CallbackStatus if not callback_is_final(s)]
        for queue in sorted({q for q, _ in counts} | set(live.queue_names(rt))):
            for status in open_statuses:
                callbacks.add_metric([queue, str(status)], counts.get((queue, status), 0))
        yield from (waiting, longest, estimated, queue_agents, agents, due, callbacks)


def _active(calls: dict[str, dict]) -> list[tuple[str, str, int]]:
    counts: dict[tuple[str, str], int] = {}
    for entry in calls.values():
        if entry.get("test"):
            continue
        key = (entry.get("flow") or "", str(entry.get("wait") or "start"))
        counts[key] = counts.get(key, 0) + 1
    return [(f, w, n) for (f, w), n in sorted(counts.items())]
