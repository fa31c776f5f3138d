"""`ivr serve`: the app under gunicorn, with an embedded Redis when none is configured."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from ivr.config import Config, safe_url

log = logging.getLogger("ivr.server")


# Sized for one small support line: two processes, so one answers while the other restarts,
# of four threads each. On two cores they hold over a thousand simultaneous calls
# (bench/webhooks.py, docs/performance.md); more workers, up to one per core, hold more.
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 4


def _end_worker(server: Any, worker: Any) -> None:
    """gunicorn's worker_exit hook: end the worker process here, skipping the C libraries'
    exit handlers. onnxruntime's (the intent model, loaded in the master and inherited across
    the fork) wait for threads that only the master had: the worker aborted (SIGABRT) or hung
    until the graceful timeout on every stop and restart. Nothing of ours needs them: the
    recorder is stopped first (what it has not stored waits in Redis for the next one), and
    the logs are flushed here."""
    import sys

    if os.getpid() != getattr(worker, "pid", None):
        return  # gunicorn's master calls it too, for a worker already gone: not ours to end
    svc = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("ivr")
    if svc is not None and getattr(svc, "_recorder_stop", None) is not None:
        svc.stop(wait_s=3)  # its batch stored and its lease given up for the next recorder
    error = sys.exc_info()[1]  # gunicorn calls this while the worker's SystemExit unwinds
    code = error.code if isinstance(error, SystemExit) else (1 if error else 0)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream must not keep the worker alive
            pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def _worker_gone(server: Any, worker: Any) -> None:
    """gunicorn's child_exit hook (in the master): the worker's live gauges leave the metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _metrics_folder() -> tuple[Path, bool]:
    """Where the workers keep their Prometheus counts (prometheus_client's multiprocess mode):
    PROMETHEUS_MULTIPROC_DIR when set, emptied of an earlier run's files; else a folder of this
    server's own. Set before anything makes a metric, so every process counts in it."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.db"):  # counts of a server that is gone would add up with ours
            old.unlink(missing_ok=True)
        return folder, False
    folder = Path(tempfile.mkdtemp(prefix="ivr-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder, True


def serve(config: Config, host: str, port: int, workers: int, threads: int = DEFAULT_THREADS,
          app_factory: str = "ivr.web.app:create_app", keepalive: int = 5) -> None:
    """Run the app with gunicorn. Blocks until the server stops.

    `keepalive` is how long an idle HTTP/1.1 connection stays open. A proxy that pools
    connections to the server must drop idle ones sooner than this, or a request it sends as
    the server closes one fails (a 502 for a webhook; nginx does not resend a POST)."""
    from gunicorn.app.base import BaseApplication

    owned_redis = False
    if not config.redis_url:
        from ivr.runtime.embedded import ensure_redis

        url, owned_redis = ensure_redis(config.data_dir)
        os.environ["REDIS_URL"] = url  # the workers and the recorder read it from the environment
        config = replace(config, redis_url=url)
        log.info("no REDIS_URL: using the embedded Redis at %s", url)
    if not config.database_url:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        log.info("no DATABASE_URL: using SQLite at %s", config.sqlite_url)

    # Migrate once in the master, before any worker writes. A database that is down must not
    # stop calls being answered: the step log waits in Redis, and the workers migrate again.
    from ivr.calllog.store import Store

    try:
        Store(config.effective_database_url).migrate()
    except Exception as exc:  # noqa: BLE001 - whatever it is, calls are still answered
        from sqlalchemy.exc import SQLAlchemyError

        log.error("could not bring the database at %s up to date (%s); answering calls anyway, "
                  "the step log waits in Redis until it is back", safe_url(config.effective_database_url),
                  exc.__class__.__name__, exc_info=not isinstance(exc, SQLAlchemyError))

    metrics_folder, owned_metrics = _metrics_folder()
    module, _, attr = app_factory.partition(":")

    class _App(BaseApplication):
        def load_config(self) -> None:
            opts: dict[str, Any] = {
                "bind": f"{host}:{port}",
                "workers": workers,
                "threads": threads,
                "worker_class": "gthread" if threads > 1 else "sync",
                "timeout": 30,
                "keepalive": keepalive,
                "graceful_timeout": 10,
                "accesslog": None,
                "control_socket_disable": True,  # several servers on one host must not collide
                # The app (flows, the intent model) is built once in the master and the workers
                # share its memory: each worker adds about 15 MiB of its own, not the 250 MiB
                # its RSS shows (docs/performance.md#memory).
                "preload_app": True,
                "forwarded_allow_ips": os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
                # No path from a header (PUBLIC_URL says where the server is published): a
                # SCRIPT_NAME header the request path did not start with was a 500. A header
                # name with an underscore is refused with 400, never merged with its dashed twin.
                "forwarder_headers": "",
                "header_map": "refuse",
                "worker_exit": _end_worker,
                "child_exit": _worker_gone,
            }
            for key, value in opts.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self):
            factory = getattr(__import__(module, fromlist=[attr]), attr)
            app = factory(config)
            svc = app.extensions.get("ivr")
            if svc is not None:
                svc.before_fork()  # no thread, socket or database connection crosses the fork
            # Everything loaded so far lives as long as the workers: keep the garbage
            # collector from walking it on every full collection (a 25 ms pause otherwise),
            # and from writing to the pages the workers share.
            gc.collect()
            gc.freeze()
            return app

    try:
        _App().run()
    finally:
        if owned_metrics:
            shutil.rmtree(metrics_folder, ignore_errors=True)
        if owned_redis:
            from ivr.runtime.embedded import stop_redis

            stop_redis(config.data_dir)
