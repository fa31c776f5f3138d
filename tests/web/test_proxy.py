"""deploy/nginx in front of `ivr serve`, with Debian's nginx (scripts/test installs it,
without starting its service): clients that send their requests slowly do not hold the
server's threads, so Twilio's signed webhooks are still answered."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from tests.conftest import FLOWS, ROOT, free_port, sign, wait_http

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
SNIPPET = ROOT / "deploy" / "nginx" / "ivr-proxy.conf"
SLOW_CLIENTS = 40  # 5 times the threads of `ivr serve` (2 workers of 4)


def _nginx_conf(folder: Path, listen: int, upstream: int) -> Path:
    """A whole nginx.conf of the test's own (pid, logs, temp files in `folder`) whose server
    block includes the shipped snippet as it is."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "nginx.conf"
    conf.write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    upstream ivr {{
        server 127.0.0.1:{upstream};
        keepalive 16;
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:{listen};
        include {SNIPPET};
    }}
}}
""")
    return conf


@pytest.fixture
def nginx(tmp_path):
    if NGINX is None:
        pytest.skip("Debian's nginx is not installed (scripts/test installs it)")
    procs = []

    def start(listen: int, upstream: int) -> str:
        conf = _nginx_conf(tmp_path / "nginx", listen, upstream)
        check = subprocess.run([NGINX, "-t", "-c", str(conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        procs.append(subprocess.Popen([NGINX, "-c", str(conf)], stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{listen}/healthz", proc=procs[-1])
        return f"http://127.0.0.1:{listen}"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


class SlowClients:
    """Connections that send a request a byte at a time, half of them in the headers, half
    in a body they announced, until stopped."""

    def __init__(self, port: int, count: int):
        self.port, self.count = port, count
        self.stop = threading.Event()
        self.started = threading.Barrier(count + 1)
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]

    def __enter__(self) -> SlowClients:
        for t in self.threads:
            t.start()
        self.started.wait(timeout=30)  # every connection open and started
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)

    def _run(self, i: int) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            if i % 2:  # the headers, then a body that never comes whole
                sock.sendall(b"POST /voice HTTP/1.1\r\nHost: ivr\r\nContent-Type: "
                             b"application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\nCallSid=")
                trickle = b"A" * 100000
            else:  # headers that never end
                sock.sendall(b"POST /voice HTTP/1.1\r\nHost: ivr\r\n")
                trickle = b"X-Slow: " + b"a" * 100000
            self.started.wait(timeout=30)
            for byte in trickle:  # one byte every half second: slow, but never silent
                if self.stop.wait(0.5):
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:  # cut off by the proxy's timeouts: as it should be
                    return


def _signed_call(base: str, sid: str) -> requests.Response:
    params = {"CallSid": sid, "From": "+14155550101", "To": "+15005550006"}
    # Twilio gives up on a webhook after 15 s: so does this test
    return requests.post(base + "/voice", data=params, timeout=15,
                         headers={"X-Twilio-Signature": sign(base + "/voice", params)})


def test_slow_clients_through_nginx_do_not_hold_up_twilios_webhooks(start_server, nginx, redis_url, tmp_path):
    listen = free_port()
    public = f"http://127.0.0.1:{listen}"  # Twilio calls nginx; the server is on loopback
    server = start_server({"REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
                           "IVR_FLOWS_DIR": str(FLOWS), "PUBLIC_URL": public})
    proxy = nginx(listen, int(server.rsplit(":", 1)[1]))
    with SlowClients(listen, SLOW_CLIENTS):
        for i in range(5):
            answer = _signed_call(proxy, f"CAPROXY{i}")
            assert answer.status_code == 200 and "Northwind Fibre" in answer.text
    # a header with an underscore never reaches the server
    r = requests.post(proxy + "/voice", headers={"SCRIPT_NAME": "/elsewhere"}, timeout=15)
    assert r.status_code == 403  # unsigned: refused as usual, not a 400 or 500 from a path
