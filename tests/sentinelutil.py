"""A Redis Sentinel set of the test's own: a master, a replica and three sentinels (Debian's
redis-server and redis-sentinel), on free ports, in a folder of the test's."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from .conftest import free_port

SERVICE = "ivr"


def have_sentinel() -> bool:
    return bool(shutil.which("redis-server") and shutil.which("redis-sentinel"))


class SentinelSet:
    def __init__(self, folder: Path):
        self.folder = folder
        self.ports = [free_port(), free_port()]  # the first master, its replica
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> SentinelSet:
        master = self.ports[0]
        for port in self.ports:
            folder = self.folder / f"redis-{port}"
            folder.mkdir(parents=True)
            # The replica syncs at once (Redis waits 5 s for more replicas by default).
            args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
                    "--appendonly", "no", "--repl-diskless-sync-delay", "0",
                    "--logfile", str(folder / "redis.log")]
            if port != master:
                args += ["--replicaof", "127.0.0.1", str(master)]
            self.procs.append(subprocess.Popen([shutil.which("redis-server"), *args],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.sentinel_ports:
            conf = self.folder / f"sentinel-{port}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
                            f"logfile {self.folder / f'sentinel-{port}.log'}\n"
                            f"sentinel monitor {SERVICE} 127.0.0.1 {master} 2\n"
                            f"sentinel down-after-milliseconds {SERVICE} 5000\n"
                            f"sentinel failover-timeout {SERVICE} 20000\n")
            self.procs.append(subprocess.Popen([shutil.which("redis-sentinel"), str(conf)],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self._wait(self._ready, "the sentinels to know each other and the replica to be in sync")
        return self

    def sentinel(self, i: int = 0) -> redis.Redis:
        return redis.Redis("127.0.0.1", self.sentinel_ports[i], socket_timeout=2)

    def master_port(self) -> int:
        return int(self.sentinel().sentinel_get_master_addr_by_name(SERVICE)[1])

    def server(self, port: int) -> redis.Redis:
        return redis.Redis("127.0.0.1", port, socket_timeout=2)

    def _ready(self) -> bool:
        try:
            for i in range(3):
                state = self.sentinel(i).sentinel_master(SERVICE)
                if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                    return False
            replica = [p for p in self.ports if p != self.master_port()][0]
            info = self.server(replica).info("replication")
            return info.get("master_link_status") == "up"
        except redis.RedisError:
            return False

    def failover(self) -> int:
        """SENTINEL FAILOVER; returns the port of the master being replaced."""
        old = self.master_port()
        assert self.sentinel().execute_command("SENTINEL", "FAILOVER", SERVICE)
        return old

    def wait_for_new_master(self, old: int) -> int:
        """Until the sentinels name another master and the old one is its replica again."""
        def switched() -> bool:
            try:
                role = self.server(old).execute_command("ROLE")[0]
            except redis.RedisError:
                return False
            return self.master_port() != old and role in (b"slave", "slave")
        self._wait(switched, "the old master to become a replica", timeout=60)
        return self.master_port()

    def _wait(self, predicate, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {what}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait(10)
