"""Offline speech in real calls: Media Streams into vosk on the real server, and recorded
messages transcribed by a real rq worker. Korean model and Korean phrases (the only vosk
model installable here), synthesised by espeak-ng at telephone quality.

Twilio itself cannot be reached from here: a stand-in REST server on loopback (tests/twilio_standin.py)
takes the call redirect and serves the recording, checking the account's credentials.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest
import redis
import requests
from simple_websocket import Client, ConnectionClosed

from ivr.calllog.store import Store
from ivr.runtime.recordings import RecordingError, recording_path
from tests.conftest import TOKEN, sign
from tests.speechutil import (
    TOOLS_MISSING,
    have_audio_tools,
    mulaw_silence,
    synthesise_mulaw,
    synthesise_wav,
    twilio_stream,
)
from tests.twilio_standin import TwilioStandIn

pytestmark = pytest.mark.skipif(not have_audio_tools(), reason=TOOLS_MISSING)

ACCOUNT = "AC" + "7" * 32
FLOW = """
id: korean
numbers: ["+15005550020"]
language: ko-KR
settings: {speech: vosk, escape: agent}
intents:
  billing: {phrases: ["요금"], keywords: ["요금"]}
  agent: {phrases: ["상담원"], keywords: ["상담원"]}
  cancel: ["해지"]
  refund: ["환불"]
nodes:
  menu:
    ask:
      prompt: "무엇을 도와드릴까요?"
      choices:
        - {key: 1, label: "요금", intent: billing, goto: billing}
        - {key: 0, label: "상담원", intent: agent, goto: agent}
        - {key: 2, label: "해지", intent: cancel, goto: cancel}
        - {key: 3, label: "환불", intent: refund, goto: billing}
  billing: {queue: billing, next: voicemail}
  agent: {queue: general, next: voicemail}
  cancel: {queue: retention, next: voicemail}
  voicemail:
    record: {prompt: "메시지를 남겨 주세요."}
    next: bye
  bye: {hangup: "감사합니다."}
"""
VOICEMAIL = """
id: korean_voicemail
numbers: ["+15005550021"]
language: ko-KR
intents:
  refund: {phrases: ["환불"]}
  reservation: {phrases: ["예약"]}
nodes:
  voicemail:
    record: {prompt: "메시지를 남겨 주세요."}
    next: bye
  bye: {hangup: "감사합니다."}
"""


@pytest.fixture
def standin():
    s = TwilioStandIn(ACCOUNT, TOKEN).start()
    yield s
    s.stop()


@pytest.fixture
def live_env(tmp_path, redis_url, standin):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "korean.yaml").write_text(FLOW)
    (flows / "korean_voicemail.yaml").write_text(VOICEMAIL)
    return {"REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path}/ivr.db",
            "IVR_FLOWS_DIR": str(flows), "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_API_BASE_URL": standin.url, "IVR_RECORDINGS_DIR": str(tmp_path / "recordings")}


def post(base: str, url: str, **params):
    params = {k: str(v) for k, v in params.items()}
    full = url if url.startswith("http") else base + url
    return requests.post(full, data=params, headers={"X-Twilio-Signature": sign(full, params)},
                         timeout=30)


def test_caller_speaks_to_vosk_over_a_media_stream(start_server, live_env, standin, tmp_path):
    base = start_server(live_env)
    sid = "CA" + "5" * 32
    first = post(base, "/voice", CallSid=sid, From="+14155550100", To="+15005550020")
    root = ET.fromstring(first.text)
    stream = root.find("Start/Stream")
    assert stream is not None, first.text
    ws_url = stream.get("url")
    assert ws_url == base.replace("http://", "ws://") + "/voice/media"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params["step"] == "1" and params["language"] == "ko-KR"
    assert {"요금", "상담원", "해지"} <= set(json.loads(params["phrases"]))
    gather = root.find("Gather")
    assert gather.get("input") == "dtmf"  # the keypad still works; speech goes to vosk

    # espeak-ng's Korean is rough: 해지 ("cancel") is one of the words the model reliably hears
    audio = mulaw_silence(0.5) + synthesise_mulaw("해지", tmp_path) + mulaw_silence(1.0)

    ws = Client.connect(ws_url, headers={"X-Twilio-Signature": sign(ws_url, {})})
    try:
        for message in twilio_stream(audio, call_sid=sid, account_sid=ACCOUNT, custom_parameters=params):
            ws.send(json.dumps(message))
        # like Twilio, keep the stream open until the call moves on
        update = standin.wait_for(lambda r: r.method == "POST" and r.path.endswith(f"/Calls/{sid}.json"))
    except ConnectionClosed:  # the server may close first once it has heard enough
        update = standin.wait_for(lambda r: r.method == "POST" and r.path.endswith(f"/Calls/{sid}.json"))
    finally:
        if ws.connected:
            ws.close()
    assert update is not None, "the server never redirected the call"
    assert update.auth == (ACCOUNT, TOKEN)
    redirect = update.form["Url"]
    assert urlsplit(redirect).path == "/voice/gather" and "s=1" in redirect
    routed = post(base, redirect, CallSid=sid)  # Twilio now fetches the redirect URL
    assert ET.fromstring(routed.text).find("Enqueue").text == "retention"
    assert '<Stop><Stream name="ivr-1" /></Stop>' in routed.text


def _stream_words(ws_url: str, audio: bytes, sid: str, params: dict) -> None:
    """Send a whole stream as Twilio does, until the server has heard enough and closes it."""
    ws = Client.connect(ws_url, headers={"X-Twilio-Signature": sign(ws_url, {})})
    try:
        for message in twilio_stream(audio, call_sid=sid, account_sid=ACCOUNT, custom_parameters=params):
            ws.send(json.dumps(message))
        for _ in range(60):
            ws.receive(timeout=0.5)
    except ConnectionClosed:
        pass
    finally:
        if ws.connected:
            ws.close()


def test_a_stream_only_answers_the_menu_that_started_it(start_server, live_env, standin, tmp_path):
    """Twilio signs only a stream's URL, the same for every stream: a stream without this
    server's token for the call's step, or for a call that has moved on (a key pressed while
    speaking, then Twilio's `stop`), must not move the call."""
    base = start_server(live_env)
    sid = "CA" + "7" * 32
    first = ET.fromstring(post(base, "/voice", CallSid=sid, From="+14155550100", To="+15005550020").text)
    stream = first.find("Start/Stream")
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert len(params["token"]) == 32
    audio = mulaw_silence(0.5) + synthesise_mulaw("해지", tmp_path) + mulaw_silence(1.0)
    moved_on = lambda r: r.method == "POST" and "/Calls/" in r.path  # noqa: E731
    _stream_words(stream.get("url"), audio, sid, {**params, "token": "0" * 32})  # replayed or forged
    assert standin.wait_for(moved_on, timeout=1) is None
    moved = post(base, "/voice/gather?s=1", CallSid=sid, Digits="1")  # billing, by keypad
    assert ET.fromstring(moved.text).find("Enqueue").text == "billing"
    _stream_words(stream.get("url"), audio, sid, params)  # the real stream, now too late
    assert standin.wait_for(moved_on, timeout=1) is None


def test_media_stream_without_signature_is_refused(start_server, live_env, standin):
    base = start_server(live_env)
    ws = Client.connect(base.replace("http://", "ws://") + "/voice/media")
    with pytest.raises(ConnectionClosed):
        ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        ws.receive(timeout=5)
        ws.receive(timeout=5)
    assert not standin.requests


def test_voicemail_is_downloaded_transcribed_and_routed_by_a_worker(start_server, live_env, standin,
                                                                      tmp_path):
    base = start_server(live_env)
    sid = "CA" + "6" * 32
    wav = synthesise_wav("환불", tmp_path / "message.wav", pad=(0.3, 0.5))
    standin.recordings["RE" + "1" * 32] = wav.read_bytes()
    first = post(base, "/voice", CallSid=sid, From="Anonymous", To="+15005550021")
    assert ET.fromstring(first.text).find("Record") is not None
    url = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/RE{'1' * 32}"
    done = post(base, "/voice/record?s=1", CallSid=sid, RecordingUrl=url, RecordingDuration="2")
    assert "감사합니다." in done.text

    # The queued job is lost (say Redis was flushed): the step log still holds the recording,
    # and `ivr recordings retry` queues it again.
    redis.Redis.from_url(live_env["REDIS_URL"]).delete("rq:queue:recordings")
    store = Store(live_env["DATABASE_URL"])
    for _ in range(100):
        if store.recordings(sid):
            break
        time.sleep(0.05)
    env = {**os.environ, **live_env, "TWILIO_AUTH_TOKEN": TOKEN}
    retry = subprocess.run([sys.executable, "-m", "ivr.cli", "recordings", "retry"], env=env,
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert retry.returncode == 0 and "queued 1 recording for" in retry.stdout, retry.stderr[-2000:]
    worker = subprocess.run([sys.executable, "-m", "ivr.cli", "worker", "--burst"], env=env,
                            capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert worker.returncode == 0, worker.stderr[-2000:]
    download = standin.wait_for(lambda r: r.path.endswith(f"RE{'1' * 32}.wav"), timeout=1)
    assert download is not None and download.auth == (ACCOUNT, TOKEN), worker.stderr[-3000:]

    (recording,) = store.recordings(sid)
    assert recording["url"] == url
    kept = tmp_path / "recordings" / sid / f"{recording['seq']}.wav"
    assert recording["path"] == str(kept) and kept.read_bytes() == wav.read_bytes()
    assert recording["transcript"]  # free-form text for people (espeak's Korean is rough)
    assert recording["intent"] == "refund"  # spotted among the flow's phrases


def test_recordings_cannot_be_written_outside_their_folder(tmp_path):
    assert recording_path(tmp_path, "CA123", 4) == (tmp_path / "CA123" / "4.wav").resolve()
    for bad in ("../../etc", "CA1/../../x", "", "CA 1", "CA123\n"):
        with pytest.raises(RecordingError):
            recording_path(tmp_path, bad, 1)


def test_live_speech_without_a_twilio_account_falls_back_to_twilio_speech(make_app, flows_dir, caplog):
    (flows_dir / "korean.yaml").write_text(FLOW)
    with caplog.at_level(logging.ERROR, logger="ivr"):
        app = make_app(twilio_account_sid="")
    assert "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not both set" in caplog.text
    params = {"CallSid": "CA8", "From": "+14155550100", "To": "+15005550020"}
    signature = sign("https://ivr.example.test/voice", params)
    response = app.test_client().post("/voice", data=params, headers={"X-Twilio-Signature": signature})
    root = ET.fromstring(response.data)
    assert root.find("Start") is None  # no media stream nobody could act on
    assert root.find("Gather").get("input") == "dtmf speech"


def test_a_download_that_is_not_a_wav_is_not_kept(standin, tmp_path):
    from ivr.config import Config
    from ivr.runtime.recordings import download

    cfg = Config(twilio_account_sid=ACCOUNT, twilio_auth_token=TOKEN, twilio_api_base_url=standin.url)
    standin.recordings["RE" + "2" * 32] = b"<html>Service Unavailable</html>"
    url = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/RE{'2' * 32}.mp3"
    dest = tmp_path / "CA1" / "1.wav"
    with pytest.raises(RecordingError, match="not a WAV file"):
        download(cfg, url, dest)
    assert not dest.exists()  # so the retry downloads it again
    assert standin.requests[-1].path.endswith(f"RE{'2' * 32}.wav")  # WAV asked for, not MP3


def test_a_flow_without_a_model_falls_back_to_twilio_speech(make_app, flows_dir, caplog, open_hours):
    flow = flows_dir / "support.yaml"
    flow.write_text(flow.read_text().replace("language: en-US", "language: xx-XX").replace(
        "  escape: agent_queue", "  escape: agent_queue\n  speech: vosk"))
    with caplog.at_level(logging.ERROR, logger="ivr"):
        app = make_app()
    assert "no vosk model for xx-XX is installed" in caplog.text
    params = {"CallSid": "CA9", "From": "+14155550100", "To": "+15005550006"}
    signature = sign("https://ivr.example.test/voice", params)
    response = app.test_client().post("/voice", data=params, headers={"X-Twilio-Signature": signature})
    gather = ET.fromstring(response.data).find("Gather")
    assert gather.get("input") == "dtmf speech"
