"""Shared fixtures: a real Redis, signed Twilio requests, the app on the Flask test client,
and the real server in its own process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "flows"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOKEN = "test-auth-token-1234567890"
PUBLIC = "https://ivr.example.test"
REDIS_HOST = os.environ.get("IVR_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("IVR_TEST_REDIS_PORT", "6379"))
CLAIM_KEY = "ivr-tests:claimed-by"

# A bug fails the test that meets it instead of being answered with an apology (the fail-safe):
# `ivr` commands and servers started by tests read this; make_app sets it on its Config. Tests
# of the fail-safe itself turn it off.
os.environ["IVR_PROPAGATE_EXCEPTIONS"] = "true"

# A database is this run's when it was empty, or held only by a run whose process is gone.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return 1 end
if redis.call('DBSIZE') == 0 or (holder and ARGV[2] ~= '' and string.find(ARGV[2], holder, 1, true)) then
  redis.call('FLUSHDB')
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
_EMPTY = "redis.call('FLUSHDB') redis.call('SET', KEYS[1], ARGV[1]) return 1"


def sign(url: str, params: dict) -> str:
    return RequestValidator(TOKEN).compute_signature(url, params)


class Databases:
    """Redis databases of this test run's own: never one another run (or a person) is using.

    A database is claimed only when it is empty, by a key naming this process; `empty` clears
    one between tests and keeps the claim. Databases claimed by a run that died are taken back.
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.me = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.claimed: dict[str, int] = {}

    def _dead_holders(self, client: redis.Redis) -> str:
        # claims of this machine's processes that are gone, as one string to search
        dead = []
        for db in range(1, 16):
            holder = redis.Redis(self.host, self.port, db=db).get(CLAIM_KEY)
            if holder:
                host, pid, _ = holder.decode().split(":", 2)
                if host == socket.gethostname() and not _alive(int(pid)):
                    dead.append(holder.decode())
        return "|".join(dead)

    def url(self, name: str) -> str:
        """The URL of this run's database for `name` (claimed on first use)."""
        if name not in self.claimed:
            dead = None
            for db in range(1, 16):  # 0 is where people and other tools work by default
                client = redis.Redis(self.host, self.port, db=db)
                if db in self.claimed.values():
                    continue
                if dead is None:
                    dead = self._dead_holders(client)
                if client.eval(_CLAIM, 1, CLAIM_KEY, self.me, dead):
                    self.claimed[name] = db
                    break
            else:
                pytest.fail(f"no empty Redis database left at {self.host}:{self.port} for the tests")
        return f"redis://{self.host}:{self.port}/{self.claimed[name]}"

    def empty(self, name: str) -> str:
        """This run's database for `name`, emptied."""
        url = self.url(name)
        redis.Redis.from_url(url).eval(_EMPTY, 1, CLAIM_KEY, self.me)
        return url

    def release(self) -> None:
        for db in self.claimed.values():
            redis.Redis(self.host, self.port, db=db).flushdb()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def redis_server() -> tuple[str, int]:
    try:
        redis.Redis(REDIS_HOST, REDIS_PORT, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:  # the project's machines always run one
        pytest.fail(f"tests need a real Redis at {REDIS_HOST}:{REDIS_PORT}: {exc}")
    return REDIS_HOST, REDIS_PORT


@pytest.fixture(scope="session")
def redis_dbs(redis_server) -> Databases:
    dbs = Databases(*redis_server)
    yield dbs
    dbs.release()


@pytest.fixture
def redis_url(redis_dbs) -> str:
    """This run's web database, empty."""
    url = redis_dbs.empty("web")
    yield url
    redis_dbs.empty("web")


@pytest.fixture
def flows_dir(tmp_path) -> Path:
    """A private copy of the example flows, so a test can edit them."""
    target = tmp_path / "flows"
    shutil.copytree(FLOWS, target)
    return target


@pytest.fixture
def make_app(tmp_path, redis_url, flows_dir):
    from ivr import create_app
    from ivr.config import Config

    def make(**overrides):
        values = dict(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/ivr.db",
                      flows_dir=flows_dir, data_dir=tmp_path / "var", twilio_auth_token=TOKEN,
                      public_url=PUBLIC, recorder=False, fallback_number="+15005550010",
                      propagate_exceptions=True)
        values.update(overrides)
        return create_app(Config(**values))

    return make


@pytest.fixture
def app(make_app):
    return make_app()


class Twilio:
    """Posts signed requests the way Twilio does."""

    def __init__(self, client, base: str = PUBLIC):
        self.client = client
        self.base = base

    def post(self, path: str, signed: bool = True, **params):
        params = {k: str(v) for k, v in params.items()}
        headers = {"X-Twilio-Signature": sign(self.base + path, params)} if signed else {}
        return self.client.post(path, data=params, headers=headers)


@pytest.fixture
def twilio(app) -> Twilio:
    return Twilio(app.test_client())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


@pytest.fixture
def open_hours(monkeypatch):
    """The example line is open on weekdays in New York: pin the engine's clock inside its
    opening hours, so a test of the menu does not hear the after-hours message at night."""
    from datetime import UTC, datetime

    import ivr.runtime.services

    monkeypatch.setattr(ivr.runtime.services, "clock", lambda: datetime(2026, 11, 24, 15, 0, tzinfo=UTC))


@pytest.fixture
def start_server(tmp_path):
    """Start `ivr serve` (gunicorn) as a real process; stops it after the test."""
    procs: list[subprocess.Popen] = []

    def start(env_extra: dict, workers: int = 2, args: tuple[str, ...] = ()) -> str:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
        env.update({"TWILIO_AUTH_TOKEN": TOKEN, "PUBLIC_URL": f"http://127.0.0.1:{port}",
                    "IVR_DATA_DIR": str(tmp_path / "var"), "IVR_FALLBACK_NUMBER": "+15005550010"})
        env.update(env_extra)
        log = open(tmp_path / f"server-{port}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "serve", "--port", str(port),
                                 "--workers", str(workers), *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
        procs.append(proc)
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- callbacks (tests/test_callbacks_*.py; helpers in tests/cbutil.py) -----------------------

@pytest.fixture
def cb_redis_url(redis_dbs) -> str:
    """This run's callbacks database, empty."""
    url = redis_dbs.empty("callbacks")
    yield url
    redis_dbs.empty("callbacks")


@pytest.fixture
def cb_flows(tmp_path) -> Path:
    """The example flows with a test agents file, in a folder of the test's own."""
    from . import cbutil

    target = tmp_path / "flows"
    shutil.copytree(FLOWS, target)
    (target / "agents.yaml").write_text(cbutil.AGENTS)
    return target


@pytest.fixture
def standin():
    from . import cbutil
    from .twilio_standin import TwilioStandIn

    s = TwilioStandIn(cbutil.ACCOUNT, TOKEN).start()
    yield s
    s.stop()
