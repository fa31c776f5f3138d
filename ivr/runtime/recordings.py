"""Messages callers leave: downloaded, kept under recordings/, transcribed, routed.

When a call's <Record> finishes, the webhook enqueues `process_recording` on the rq queue
`recordings`. A worker (`ivr worker`) downloads the audio from Twilio with the account's
credentials, stores it as recordings/<CallSid>/<seq>.wav, transcribes it with vosk (the
model for the flow's language), matches the transcript to the flow's intents and attaches
transcript and intent to the call record. Nothing here runs in the webhook.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import requests
from redis import Redis
from rq import Queue, Retry
from sqlalchemy.exc import SQLAlchemyError

from ivr.config import Config
from ivr.errors import IvrError

log = logging.getLogger("ivr.recordings")

QUEUE = "recordings"
_SID = re.compile(r"[A-Za-z0-9]{2,64}")  # used with fullmatch: no trailing newline either


class RecordingError(IvrError):
    """A recording that cannot be fetched or stored (the job fails and rq retries it)."""


def enqueue(redis: Redis, call_sid: str, seq: int, url: str, flow_id: str,
            duration_s: int | None = None):
    """Queue a recording for processing; retried with back-off if Twilio is slow to serve it."""
    return Queue(QUEUE, connection=redis).enqueue(
        process_recording, call_sid, seq, url, flow_id, duration_s,
        retry=Retry(max=3, interval=[10, 60, 300]), job_timeout=600,
        description=f"recording {call_sid}/{seq}",
    )


def recording_path(root: Path, call_sid: str, seq: int) -> Path:
    """Where a recording is kept. Names come from the call id and step number only, checked,
    so no request can make the worker write outside `root`."""
    if not _SID.fullmatch(call_sid or ""):
        raise RecordingError(f"refusing a recording with an unusual call id {call_sid!r}")
    root = root.resolve()
    path = (root / call_sid / f"{int(seq)}.wav").resolve()
    if root not in path.parents:
        raise RecordingError(f"{path} is outside {root}")
    return path


def download(config: Config, url: str, dest: Path) -> Path:
    """Fetch the recording as WAV with the account's credentials (Twilio's recording URLs
    serve WAV when `.wav` is appended), from Twilio's API only (UntrustedMediaUrl otherwise)."""
    from .twilio_api import media_url

    source = media_url(config, url)
    if source.endswith(".mp3"):
        source = source[: -len(".mp3")]
    if not source.endswith(".wav"):
        source += ".wav"  # the recordings folder keeps WAV only: vosk reads it, people can play it
    auth = (config.twilio_account_sid, config.twilio_auth_token) if config.twilio_account_sid else None
    response = requests.get(source, auth=auth, timeout=30)
    if response.status_code != 200:
        raise RecordingError(f"downloading {source} gave HTTP {response.status_code}")
    if not _is_wav(response.content):
        # An error page served with 200, say: keeping it would make every retry skip the download.
        raise RecordingError(f"downloading {source} gave something that is not a WAV file "
                             f"({response.headers.get('Content-Type', 'no content type')})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    tmp.write_bytes(response.content)
    tmp.replace(dest)  # a half-written file never looks like a recording
    return dest


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(12)


def _is_wav(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE"


_services = None


def warm(config: Config) -> None:
    """Load flows, the intent model and the vosk models once in the worker, before rq forks a
    work horse per job: each job then starts with them in memory instead of loading them."""
    global _services
    from .services import Services

    svc = Services(config)
    svc.warmup.join()  # a fork while the intent model loads in a thread would crash the worker
    try:
        svc.migrate()
    except SQLAlchemyError as exc:  # callbacks must still be dialled; recording jobs retry later
        log.error("could not bring the database up to date (%s); recording jobs will fail and be "
                  "retried until it is back", exc.__class__.__name__)
    except Exception:
        log.exception("could not bring the database up to date; recording jobs will fail and be "
                      "retried")
    for language in sorted({f.language for f in svc.registry.flows.values()}):
        if svc.vosk_models.is_available(language):
            svc.vosk_models.get(language)
    svc.store.close()  # database connections must not cross the fork: each job opens its own
    _services = svc


def _worker_services():
    global _services
    if _services is None:  # a job run outside `ivr worker` (rq's own CLI, tests)
        from .services import Services

        _services = Services(Config.from_env())
        _services.migrate()
    return _services


def process_recording(call_sid: str, seq: int, url: str, flow_id: str,
                      duration_s: int | None = None) -> dict:
    """The rq job: download, keep, transcribe, match, attach. Returns what it attached."""
    from .twilio_api import UntrustedMediaUrl

    svc = _worker_services()
    cfg = svc.config
    path = recording_path(cfg.recordings_dir, call_sid, seq)
    if not path.exists() or not _is_wav(_head(path)):
        try:
            download(cfg, url, path)
        except UntrustedMediaUrl as exc:
            # A signed request named a URL that is not Twilio's: sending the account's
            # credentials there would hand them out. The recording stays in the log, unfetched.
            log.error("recording %s/%s: refused to download it: %s", call_sid, seq, exc)
            svc.store.update_recording(call_sid, seq, url, duration_s=duration_s)
            return {"path": None, "transcript": None, "confidence": None, "intent": None,
                    "refused": str(exc)}
    transcript, intent, confidence = None, None, None
    flow = svc.registry.get(flow_id)
    language = flow.language if flow else "en-US"
    if svc.vosk_models.is_available(language):
        from speech.recognizer import transcribe_file

        model = svc.vosk_models.get(language)
        result = transcribe_file(path, model)
        transcript, confidence = result.text, result.confidence
        if flow is not None and flow.intents:
            # A second, constrained pass spots the flow's own phrases, which free-form
            # recognition of a short message often misses; the free text is kept for people.
            phrases = [p for i in flow.intents.values() for p in (*i.phrases, *i.keywords)]
            spotted = transcribe_file(path, model, phrases)
            heard = " ".join(r.phrase for r in spotted.results if r.phrase) or transcript
            if heard:
                intent = svc.matchers.match(flow, heard).intent
    else:
        log.warning("no vosk model for %s: recording %s/%s kept without a transcript", language,
                    call_sid, seq)
    svc.store.update_recording(call_sid, seq, url, path=str(path), transcript=transcript,
                               intent=intent, duration_s=duration_s)
    log.info("recording %s/%s: %r -> %s", call_sid, seq, transcript, intent)
    return {"path": str(path), "transcript": transcript, "confidence": confidence, "intent": intent}
