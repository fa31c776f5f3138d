"""Callback dispatch benchmark: how fast a free agent gets their next callback dialled.

    .venv/bin/python bench/callbacks.py --callbacks 1000 --agents 50 --workers 2

What it runs, all real: its own redis-server (append-only file on, as in production), the
agents' HTTP API (the callbacks blueprint, over HTTP on loopback), `--workers` real
`ivr worker` processes (rq, with its scheduler), and a stand-in for Twilio's REST API that
notes when each outbound call request arrives. It books `--callbacks` pending callbacks with
the same Lua script the webhook uses, then measures:

1. latency: `--samples` times, one agent becomes available (PUT /api/agents/<name>/status)
   while every other agent is busy; the time until the stand-in receives the outbound call
   request for the callback at the head of the line. Reported as p50/p90/p99/max.
2. throughput: every agent becomes available at once; each call the stand-in receives is
   answered, connected and finished at once (the same store calls the webhooks make), which
   frees the agent for the next callback. Reported as dials per second until the line is empty.
3. memory: Redis `used_memory` per pending callback (record, history, line and indexes; the
   step-log stream, which the recorder drains within a second, is left out and reported apart).

Prints a JSON report (and `--json FILE` writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callbacks import keys  # noqa: E402
from callbacks.dispatch import attempt_over  # noqa: E402
from callbacks.runtime import Runtime  # noqa: E402
from ivr.config import Config  # noqa: E402

ACCOUNT = "AC" + "b" * 32
TOKEN = "bench-auth-token"
API_TOKEN = "bench-api-token"
QUEUE = "bench"


class StandIn:
    """Twilio's Calls endpoint: answers like Twilio and notes when each request arrived."""

    def __init__(self) -> None:
        self.arrivals: queue.Queue = queue.Queue()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                at = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                sid = "CA" + uuid.uuid4().hex
                standin.arrivals.put((at, form["To"][0], form["Url"][0], sid))
                body = json.dumps({"sid": sid, "status": "queued", "to": form["To"][0],
                                   "from": form["From"][0], "date_created": None}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                             "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        try:
            if redis.Redis.from_url(url).ping():
                return proc, url
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def api_server(config: Config, redis_url: str) -> str:
    """The agents' API (the callbacks blueprint) on loopback, as agents' tools would call it."""
    from flask import Flask
    from werkzeug.serving import make_server

    from callbacks.api import bp

    class Services:
        def __init__(self) -> None:
            self.callbacks = Runtime(config, redis.Redis.from_url(redis_url))

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    app = Flask("bench")
    app.config["IVR"] = config
    app.extensions["ivr"] = Services()
    app.register_blueprint(bp)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def run(callbacks: int, agents: int, workers: int, samples: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ivr-bench-callbacks-"))
    redis_proc, redis_url = start_redis(tmp)
    procs: list[subprocess.Popen] = []
    try:
        standin = StandIn()
        flows = tmp / "flows"
        flows.mkdir()
        (flows / "agents.yaml").write_text("agents:\n" + "".join(
            f"  a{i:03d}:\n    queues: [{QUEUE}]\n    contact: \"+1500555{i:04d}\"\n" for i in range(agents)))
        config = Config(redis_url=redis_url, database_url=f"sqlite:///{tmp}/ivr.db", flows_dir=flows,
                        data_dir=tmp / "var", twilio_auth_token=TOKEN, twilio_account_sid=ACCOUNT,
                        twilio_api_base_url=standin.url, public_url="http://127.0.0.1:9",
                        recorder=False, api_token=API_TOKEN, callback_sweep_interval=3600,
                        log_level="WARNING")
        r = redis.Redis.from_url(redis_url)
        rt = Runtime(config, r)
        for i in range(agents):
            rt.agents.set_status(f"a{i:03d}", "busy")

        # -- book the callbacks and weigh them ---------------------------------------------
        r.execute_command("MEMORY", "PURGE")
        before = int(r.info("memory")["used_memory"])
        now = time.time()
        t0 = time.perf_counter()
        for i in range(callbacks):
            rt.callbacks.request(
                call_sid=f"CA{i:06d}", number=f"+1415{5550000 + i:07d}"[:12], queue=QUEUE,
                enqueued_at=now - callbacks + i, line_number="+15005550006", zones=["UTC"],
                calling_hours={"mon-sun": "24h"}, max_attempts=3, retry_after=300,
                caller={"known": True, "first_name": "Ada", "full_name": "Ada Lovelace",
                        "customer_id": f"C-{i}"}, intent="billing", vars={"account": str(1000 + i)},
                flow="callback", origin_flow="support")
        booking_s = time.perf_counter() - t0
        stream = int(r.memory_usage(keys.LOG_STREAM) or 0)
        after = int(r.info("memory")["used_memory"])
        sample_id = rt.callbacks.active_ids()[0]
        memory = {
            "per_callback_bytes": round((after - before - stream) / callbacks),
            "record_hash_bytes": int(r.memory_usage(keys.callback(sample_id))),
            "history_bytes": int(r.memory_usage(keys.history(sample_id))),
            "log_stream_bytes_per_callback": round(stream / callbacks),
            "booking_per_second": round(callbacks / booking_s),
        }
        r.delete(keys.LOG_STREAM)  # the recorder would have drained it

        env = {k: v for k, v in os.environ.items() if not k.startswith(("IVR_", "TWILIO_"))}
        for name, var in Config.ENV.items():
            value = getattr(config, name)
            if value not in ("", None):
                env[var] = str(value).lower() if isinstance(value, bool) else str(value)
        for _ in range(workers):
            procs.append(subprocess.Popen([sys.executable, "-m", "ivr.cli", "worker"], env=env, cwd=tmp,
                                          stdout=subprocess.DEVNULL, stderr=open(tmp / "workers.log", "a")))
        api = api_server(config, redis_url)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {API_TOKEN}"
        time.sleep(2.0)  # the workers start and block on their queues

        # -- 1. latency: one agent becomes available, the head of the line is dialled -------
        latencies = []
        for i in range(samples):
            agent = f"a{i % agents:03d}"
            start = time.time()
            response = session.put(f"{api}/api/agents/{agent}/status", json={"status": "available"})
            response.raise_for_status()
            at, to, _, _ = standin.arrivals.get(timeout=30)
            latencies.append(at - start)
            rt.agents.set_status(agent, "busy")  # on the call now; the next sample uses another
            time.sleep(0.02)

        # -- 2. throughput: all agents free; finished calls free their agent again -----------
        remaining = len([i for i in rt.callbacks.active_ids()
                         if (rt.callbacks.get(i) or {}).get("status") == "pending"])
        done = threading.Event()
        dialled = []

        def finish_calls() -> None:
            while len(dialled) < remaining:
                try:
                    at, to, url, sid = standin.arrivals.get(timeout=60)
                except queue.Empty:
                    break
                cid = url.split("cb=")[1].split("&")[0]
                attempt = int(url.split("a=")[1])
                rt.callbacks.progress(cid, attempt, sid=sid, answered_by="human", human=True)
                rt.callbacks.connected(cid, attempt)
                attempt_over(rt, rt.callbacks.get(cid), attempt, "completed")
                dialled.append(at)
            done.set()

        finisher = threading.Thread(target=finish_calls, daemon=True)
        finisher.start()
        start = time.time()
        for i in range(agents):
            session.put(f"{api}/api/agents/a{i:03d}/status", json={"status": "available"}).raise_for_status()
        done.wait(300)
        elapsed = (dialled[-1] - start) if dialled else float("nan")
        statuses: dict[str, int] = {}
        for rec in rt.callbacks.list(finished=True):
            statuses[rec["status"]] = statuses.get(rec["status"], 0) + 1
        return {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "redis": r.info("server")["redis_version"]},
            "setup": {"callbacks": callbacks, "agents": agents, "workers": workers, "samples": samples},
            "latency_s": {"p50": round(statistics.median(latencies), 4),
                          "p90": round(percentile(latencies, 90), 4),
                          "p99": round(percentile(latencies, 99), 4), "max": round(max(latencies), 4)},
            "throughput": {"dialled": len(dialled), "seconds": round(elapsed, 2),
                           "dials_per_second": round(len(dialled) / elapsed, 1) if dialled else 0},
            "memory": memory,
            "final_statuses": statuses,
            "outbound_requests": len(dialled) + samples,
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callbacks", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--json", dest="json_path", help="Also write the report to this file.")
    args = parser.parse_args()
    report = run(args.callbacks, args.agents, args.workers, args.samples)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text + "\n")


if __name__ == "__main__":
    main()
