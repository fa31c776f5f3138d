"""Shared parts of the callback tests (their fixtures are in conftest.py): the agents file, the
app served over real HTTP, `ivr worker` processes, and a Redis server with persistence."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis
from werkzeug.serving import make_server

from ivr.config import Config

from .conftest import TOKEN, free_port
from .twilio_standin import TwilioStandIn

ACCOUNT = "AC" + "c" * 32
API_TOKEN = "api-token-for-tests"
AGENTS = """agents:
  alice:
    queues: [billing, general]
    contact: "+15005550021"
  bob:
    queues: [billing]
    contact: "+15005550022"
  tess:
    queues: [technical]
    contact: "sip:tess@pbx.example.test"
"""


def config(tmp_path: Path, redis_url: str, flows: Path, standin: TwilioStandIn | None = None,
           public_url: str = "", **overrides) -> Config:
    values = dict(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/ivr.db", flows_dir=flows,
                  data_dir=tmp_path / "var", twilio_auth_token=TOKEN, twilio_account_sid=ACCOUNT,
                  twilio_api_base_url=standin.url if standin else "", public_url=public_url,
                  recorder=False, fallback_number="+15005550010", api_token=API_TOKEN,
                  callback_dial_grace=1)
    values.update(overrides)
    return Config(**values)


def env(cfg: Config) -> dict:
    """The environment for an `ivr` process with this configuration."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("IVR_", "TWILIO_"))
           and k not in ("REDIS_URL", "DATABASE_URL", "PUBLIC_URL")}
    for name, var in Config.ENV.items():
        value = getattr(cfg, name)
        if value not in ("", None):
            out[var] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


class AppServer:
    """The Flask app on a real loopback port (Twilio's stand-in posts webhooks to it)."""

    def __init__(self, make_app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = make_app(self.url)
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()


def worker(cfg: Config, cwd: Path, burst: bool = True, log: Path | None = None) -> subprocess.Popen:
    """`ivr worker` as a real process (its own session, so it can be killed with its children)."""
    args = [sys.executable, "-m", "ivr.cli", "worker"] + (["--burst"] if burst else [])
    out = open(log or cwd / f"worker-{time.monotonic_ns()}.log", "w")
    return subprocess.Popen(args, env=env(cfg), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def run_worker(cfg: Config, cwd: Path, timeout: float = 60) -> str:
    """Run `ivr worker --burst` to the end; returns its log."""
    log = cwd / f"worker-{time.monotonic_ns()}.log"
    proc = worker(cfg, cwd, burst=True, log=log)
    try:
        code = proc.wait(timeout)
    finally:
        kill_tree(proc)
    text = log.read_text()
    assert code == 0, text[-3000:]
    return text


def _children(pid: int) -> list[int]:
    """Every descendant of `pid`, from /proc (rq's work horses leave the process group)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """kill -9 a worker and everything it started (rq's work horse, its scheduler)."""
    for pid in _children(proc.pid) + [proc.pid]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


class RedisServer:
    """A redis-server of the test's own, with append-only persistence, that can be killed and
    started again on the same port and data."""

    def __init__(self, folder: Path, tls: bool = False):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls  # TLS only (rediss://), with a self-signed certificate made by openssl
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_cert_reqs=none"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        listen = ["--port", str(self.port)]
        if self.tls:
            cert, key = self.folder / "cert.pem", self.folder / "key.pem"
            if not cert.exists():
                subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                                "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                               check=True, capture_output=True)
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                      "--tls-key-file", str(key), "--tls-auth-clients", "no"]
        self.proc = subprocess.Popen(
            [binary, *listen, "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start: " + (self.folder / "redis.log").read_text())

    def kill(self) -> None:
        """kill -9: no shutdown save, only what the append-only file already holds survives."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met")
