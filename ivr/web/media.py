"""Live call audio from Twilio Media Streams, recognised offline by vosk.

When a flow says `speech: vosk`, a menu's TwiML starts a Media Stream to `/voice/media`
while a keypad-only <Gather> plays the prompt. Each finished utterance is matched here; the
first one that says something moves the call on: the server redirects the live call through
Twilio's REST API to the menu's Gather action, with the words in the URL, exactly as if
Twilio's own recognizer had heard them.
"""

from __future__ import annotations

import hmac
import logging
from urllib.parse import urlencode

from flask import current_app, request
from flask_sock import Sock

from .signatures import is_valid_websocket, public_base, stream_token

log = logging.getLogger("ivr.media")

sock = Sock()

RECEIVE_TIMEOUT_S = 120  # a menu never listens longer; Twilio sends audio every 20 ms


def redirect_url(base: str, step: str, text: str, confidence: float) -> str:
    query = urlencode({"s": step, "speech": text, "confidence": f"{confidence:.3f}"})
    return f"{base}/voice/gather?{query}"


@sock.route("/voice/media")
def media(ws) -> None:
    """One Media Stream: audio in, at most one redirect of the call out."""
    from speech.media_stream import MediaStreamError, MediaStreamSession
    from speech.models import ModelUnavailable

    svc = current_app.extensions["ivr"]
    if not is_valid_websocket(request, svc.config):
        log.warning("rejected a Media Stream without a valid X-Twilio-Signature")
        ws.close(reason=1008, message="invalid signature")
        return
    base = public_base(request, svc.config)
    # The stream's `language` parameter (the flow's language) picks the model.
    session = MediaStreamSession(svc.vosk_models, language="en-US")
    try:
        while not session.stopped:
            raw = ws.receive(timeout=RECEIVE_TIMEOUT_S)
            if raw is None:
                break
            try:
                results = session.handle(raw)
            except (ModelUnavailable, MediaStreamError) as exc:
                # The keypad <Gather> is still running, so the caller is not stranded.
                log.error("media stream for call %s: %s", session.call_sid, exc)
                break
            if session.stopped:
                # Twilio stops a stream once the next answer is playing: the call has moved on
                # (a key, a timeout), and what vosk still held must not move it again.
                break
            heard = next((r for r in results if r.text or r.phrase), None)
            if heard is not None:
                _move_call_on(svc, base, session, heard)
                break
    except Exception:  # the keypad <Gather> keeps the call going; log for the operator
        log.exception("media stream for call %s failed", session.call_sid)
    finally:
        try:
            ws.close()
        except Exception:  # the peer may already be gone
            pass


def _move_call_on(svc, base: str, session, result) -> None:
    params = session.info.custom_parameters
    step = params.get("step", "")
    call_sid = session.call_sid or ""
    text = result.phrase or result.text
    try:
        current = str(svc.calls.load(call_sid)[1]) if call_sid else ""
    except Exception:  # Redis trouble: the keypad <Gather> still moves the call on
        log.exception("call %s: could not read the call's state", call_sid)
        return
    token = svc.config.twilio_auth_token
    if not hmac.compare_digest(params.get("token", ""), stream_token(token, call_sid, step)):
        log.warning("call %s: a media stream without this server's token for step %s; not moved",
                    call_sid, step)
        return
    if not step or current != step:
        # Only the menu that started this stream may be answered through it: not a call that
        # has moved on, nor one a stream was started for by anyone else.
        log.info("call %s: heard %r for step %s, but the call is at step %s; not moved",
                 call_sid, text, step, current or "none")
        return
    url = redirect_url(base, step, text, result.confidence)
    try:
        svc.twilio().calls(call_sid).update(url=url, method="POST")
        log.info("call %s: heard %r (%.2f); moved on to %s", call_sid, text, result.confidence, url)
    except Exception:
        # The keypad <Gather> still times out into the menu's no-input handling.
        log.exception("call %s: could not redirect the call after hearing %r", call_sid, text)


def init_app(app) -> None:
    sock.init_app(app)
