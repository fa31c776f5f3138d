"""Engine actions -> TwiML, built with the twilio library.

Every URL Twilio must come back to carries the step token `s`, so a retried webhook can be
recognised and answered with the same TwiML instead of running the step twice.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote_plus, urlencode

from twilio.twiml.voice_response import VoiceResponse

from ivr.engine import actions as A
from ivr.i18n import Language, language
from ivr.i18n import sentences as S

# The path in front of /voice where the server is published behind a proxy (PUBLIC_URL
# https://example.com/ivr: "/ivr"), set for each request by the web layer: Twilio resolves
# the URLs in TwiML against the host, so they must carry it.
_prefix: ContextVar[str] = ContextVar("ivr_twiml_prefix", default="")


def set_prefix(prefix: str) -> None:
    _prefix.set(prefix.rstrip("/"))


def url(path: str, **params: object) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    path = _prefix.get() + path
    return f"{path}?{query}" if query else path


def _say(parent, a: A.Say) -> None:
    kwargs = {}
    if a.voice:
        kwargs["voice"] = a.voice
    if a.language:
        kwargs["language"] = a.language
    parent.say(a.text, **kwargs)


def _sound(parent, a) -> None:
    if isinstance(a, A.Say):
        _say(parent, a)
    elif isinstance(a, A.Play):
        parent.play(a.url)
    elif isinstance(a, A.Silence):
        parent.pause(length=max(1, round(a.seconds)))


@dataclass(frozen=True)
class LiveSpeech:
    """Recognise speech on this server: stream the call's audio to `url` (a wss:// URL)."""

    url: str
    language: str
    token: str = ""  # proves to /voice/media that this server started the stream for this step


def stream_name(step: int) -> str:
    return f"ivr-{step}"


# Most answers differ between calls only in the step token and the call id, so their TwiML
# is built once per distinct list of actions and the two values are filled in afterwards.
_STEP, _PREVIOUS, _SID = 987654321, 987654320, "CAtwimltemplatecallsid"


def render(actions: list, step: int, call_sid: str, live: LiveSpeech | None = None,
           stop_stream: str | None = None) -> str:
    """TwiML for the actions of one engine step (see _render)."""
    try:
        key = (tuple(actions), live, stop_stream is not None, _prefix.get())
        hash(key)
    except TypeError:
        return _render(actions, step, call_sid, live, stop_stream)
    if (stop_stream is not None and stop_stream != stream_name(step - 1)) or (live and live.token):
        return _render(actions, step, call_sid, live, stop_stream)  # one of a kind: not cached
    template = _template(key)
    if template is None:
        return _render(actions, step, call_sid, live, stop_stream)
    # The call id is only ever in a URL's query (the whisper's): filled in as urlencode
    # writes it, which leaves nothing XML would read as markup (a forged CallSid with quotes
    # and tags stays a value). The step numbers are ints.
    return (template.replace(str(_STEP), str(int(step))).replace(str(_PREVIOUS), str(int(step) - 1))
            .replace(_SID, quote_plus(call_sid)))


@lru_cache(maxsize=2048)
def _template(key: tuple) -> str | None:
    """The TwiML with placeholders for the step and call id; None when the actions themselves
    contain a placeholder's text (a number to dial, digits read back), which must stay as is."""
    if any(p in repr(key) for p in (str(_STEP), str(_PREVIOUS), _SID)):
        return None
    actions, live, stops, _ = key
    return _render(list(actions), _STEP, _SID, live, stream_name(_PREVIOUS) if stops else None)


def _render(actions: list, step: int, call_sid: str, live: LiveSpeech | None = None,
            stop_stream: str | None = None) -> str:
    """TwiML for the actions of one engine step. With `live`, menus that listen for speech
    stream the caller's audio to this server instead of using Twilio's recognizer; the
    keypad still goes through <Gather>."""
    r = VoiceResponse()
    if stop_stream:
        r.stop().stream(name=stop_stream)
    for a in actions:
        if isinstance(a, (A.Say, A.Play, A.Silence)):
            _sound(r, a)
        elif isinstance(a, A.Gather):
            inputs = list(a.input)
            if live is not None and "speech" in inputs:
                stream = r.start().stream(name=stream_name(step), url=live.url, track="inbound_track")
                stream.parameter(name="step", value=str(step))
                stream.parameter(name="language", value=live.language)
                if live.token:
                    stream.parameter(name="token", value=live.token)
                stream.parameter(name="phrases", value=json.dumps(list(a.hints[:60]), ensure_ascii=False))
                inputs = [i for i in inputs if i != "speech"] or ["dtmf"]
            kwargs: dict = dict(
                input=" ".join(inputs), action=url("/voice/gather", s=step), method="POST",
                timeout=a.timeout, action_on_empty_result=True,
            )
            if a.num_digits:
                kwargs["num_digits"] = a.num_digits
            if a.finish_on_key is not None:
                kwargs["finish_on_key"] = a.finish_on_key
            if a.language:  # speech is heard in it; prompts and keypad menus name it too
                kwargs["language"] = a.language
            if "speech" in inputs:
                kwargs["speech_timeout"] = a.speech_timeout
                if a.hints:
                    kwargs["hints"] = ", ".join(h[:100] for h in a.hints[:500])
            g = r.gather(**kwargs)
            for p in a.prompts:
                _sound(g, p)
        elif isinstance(a, A.Enqueue):
            r.enqueue(a.queue, action=url("/voice/queue/left", s=step), method="POST",
                      wait_url=url("/voice/queue/wait", s=step), wait_url_method="POST")
        elif isinstance(a, A.LeaveQueue):
            r.leave()
        elif isinstance(a, A.Dial):
            d = r.dial(action=url("/voice/dial", s=step), method="POST", timeout=a.timeout,
                       caller_id=a.caller_id)
            whisper = url("/voice/whisper", call=call_sid, s=step) if a.whisper else None
            if a.to.startswith("sip:"):
                d.sip(a.to, url=whisper, method="POST" if whisper else None)
            else:
                d.number(a.to, url=whisper, method="POST" if whisper else None)
        elif isinstance(a, A.Record):
            r.record(action=url("/voice/record", s=step), method="POST", max_length=a.max_length,
                     finish_on_key=a.finish_on_key, play_beep=a.beep, timeout=a.timeout)
        elif isinstance(a, (A.Request, A.AwaitRequest)):
            # The API is slow: the caller hears the prompt while it runs, then Twilio asks
            # for the answer (ivr.web.voice.request_answered).
            for p in a.prompts:
                _sound(r, p)
            r.redirect(url("/voice/request", s=step), method="POST")
        elif isinstance(a, A.Hangup):
            r.hangup()
    return str(r)


def wait_music(actions: list, hold_music_url: str | None, step: int = 0) -> str:
    """TwiML for an Enqueue waitUrl request: announcements, then music. Twilio requests the
    wait URL again when this ends, so it loops by itself. A callback offer listens (<Gather>,
    allowed in a waitUrl) through its prompts and the music for the key or words."""
    try:
        return _wait_music(tuple(actions), hold_music_url, step, _prefix.get())
    except TypeError:  # an action that cannot be a cache key
        return _wait_music.__wrapped__(tuple(actions), hold_music_url, step, _prefix.get())


@lru_cache(maxsize=2048)
def _wait_music(actions: tuple, hold_music_url: str | None, step: int, prefix: str) -> str:
    # `prefix` is in the cache key: url() reads it
    r = VoiceResponse()
    music = False
    for a in actions:
        if isinstance(a, A.LeaveQueue):
            r.leave()
            return str(r)
        if isinstance(a, A.OfferCallback):
            kwargs: dict = {}
            if a.language:
                kwargs["language"] = a.language
            if "speech" in a.input:
                # Twilio hears this offer even in `speech: vosk` flows: live recognition only
                # moves callers on from menus, not out of a queue's wait music.
                kwargs["speech_timeout"] = "auto"
                if a.phrases:
                    kwargs["hints"] = ", ".join(a.phrases)
            g = r.gather(input=" ".join(a.input), num_digits=1, timeout=1,
                         action=url("/voice/queue/offer", s=step), method="POST", **kwargs)
            for p in a.prompts:
                _sound(g, p)
            if not any(isinstance(p, A.Play) for p in a.prompts):
                if hold_music_url:
                    g.play(hold_music_url)
                else:
                    g.pause(length=20)
            return str(r)
        _sound(r, a)
        music = music or isinstance(a, A.Play)
    if not music:
        if hold_music_url:
            r.play(hold_music_url)
        else:
            r.pause(length=20)
    return str(r)


def apology(fallback_number: str | None, lang: Language | None = None, voice: str | None = None) -> str:
    """TwiML for when the system cannot serve the call: never silence, never an HTTP 500.
    Said in the language of the flow the call was for (English when not known)."""
    lang = lang or language(None)
    r = VoiceResponse()
    how = _speaking(lang, voice)
    text = lang.say(S.TECHNICAL_DIFFICULTIES)
    if fallback_number:
        r.say(f"{text} {lang.say(S.HOLD_FOR_SOMEONE)}", **how)
        r.dial(fallback_number, timeout=30)
        r.say(lang.say(S.NOBODY_GOODBYE), **how)
    else:
        r.say(f"{text} {lang.say(S.LEAVE_A_MESSAGE_CALL_BACK)}", **how)
        r.record(max_length=120, action=url("/voice/fallback/done"), method="POST", play_beep=True)
    r.hangup()
    return str(r)


def text(message: str, hangup: bool = True, lang: Language | None = None, voice: str | None = None) -> str:
    """TwiML that says one thing (in `lang` and `voice`), then hangs up unless told not to."""
    r = VoiceResponse()
    r.say(message, **_speaking(lang or language(None), voice))
    if hangup:
        r.hangup()
    return str(r)


def _speaking(lang: Language, voice: str | None) -> dict:
    voice = voice or lang.voice
    return {"language": lang.tag, **({"voice": voice} if voice else {})}


def leave_queue() -> str:
    """TwiML that takes the caller out of the queue (allowed in a waitUrl): Twilio then
    requests the Enqueue's action URL."""
    r = VoiceResponse()
    r.leave()
    return str(r)


def hangup() -> str:
    r = VoiceResponse()
    r.hangup()
    return str(r)
