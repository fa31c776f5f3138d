"""Recordings are fetched from Twilio only: the account's credentials never go anywhere else."""

from __future__ import annotations

import io
import threading
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ivr.config import Config
from ivr.runtime.twilio_api import UntrustedMediaUrl, media_url
from tests.cbutil import ACCOUNT, config, run_worker
from tests.conftest import Twilio

VOICEMAIL = """
id: voicemail
numbers: ["+15005550099"]
nodes:
  message:
    record: {prompt: "Leave a message after the tone."}
    next: bye
  bye: {hangup: "Goodbye."}
"""


def silence_wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    return out.getvalue()


class InternalService:
    """A service inside the network that answers anyone, and notes who asked."""

    def __init__(self):
        self.requests: list[tuple[str, str | None]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                service.requests.append((self.path, self.headers.get("Authorization")))
                body = silence_wav()  # what a worker would take for a recording and keep
                self.send_response(200)
                self.send_header("Content-Type", "audio/x-wav")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def internal():
    service = InternalService()
    yield service
    service.server.shutdown()


def test_a_signed_recording_url_elsewhere_than_twilio_is_not_fetched_with_the_credentials(
        tmp_path, make_app, flows_dir, redis_url, internal, caplog):
    (flows_dir / "voicemail.yaml").write_text(VOICEMAIL)
    app = make_app(twilio_account_sid=ACCOUNT)
    phone = Twilio(app.test_client())
    sid = "CA" + "9" * 32
    assert "<Record" in phone.post("/voice", CallSid=sid, From="+14155550100", To="+15005550099").text
    url = f"{internal.url}/internal/secret"
    assert "Goodbye" in phone.post("/voice/record?s=1", CallSid=sid, RecordingUrl=url,
                                   RecordingDuration="4").text
    svc = app.extensions["ivr"]
    svc.migrate()
    svc.recorder().flush()
    # `ivr worker` as deployed: Twilio's real API, no stand-in.
    cfg = config(tmp_path, redis_url, flows_dir, None)
    log = run_worker(cfg, tmp_path)
    assert internal.requests == []
    [kept] = svc.store.recordings(sid)
    assert f"recording {sid}/{kept['seq']}: refused to download it: '{url}' is not on Twilio's API" in log
    assert kept["url"] == url and kept["path"] is None and kept["duration_s"] == 4
    assert not (tmp_path / "recordings").exists()


TWILIO = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/RE1"


@pytest.mark.parametrize("url", [
    f"http://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/RE1",  # not over https
    "https://api.twilio.com.evil.example/2010-04-01/Recordings/RE1",
    "https://api.twilio.com@evil.example/2010-04-01/Recordings/RE1",
    "https://evil.example/?u=https://api.twilio.com/",
    "https://api.twilio.com:8443/2010-04-01/Recordings/RE1",
    "https://www.twilio.com/2010-04-01/Recordings/RE1",
    "file:///etc/passwd",
    "https://api.twilio.com:99999/x",
])
def test_media_urls_other_than_twilios_api_are_refused(url):
    with pytest.raises(UntrustedMediaUrl):
        media_url(Config(), url)


def test_media_urls_on_twilios_api_are_fetched_there_or_from_the_stand_in():
    assert media_url(Config(), TWILIO) == TWILIO
    regional = "https://api.dublin.ie1.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1"
    assert media_url(Config(), regional) == regional
    standin = Config(twilio_api_base_url="http://127.0.0.1:8123")
    moved = f"http://127.0.0.1:8123/2010-04-01/Accounts/{ACCOUNT}/Recordings/RE1"
    assert media_url(standin, TWILIO) == moved
    assert media_url(standin, moved) == moved
    with pytest.raises(UntrustedMediaUrl):
        media_url(standin, "http://127.0.0.1:8124/2010-04-01/Recordings/RE1")
