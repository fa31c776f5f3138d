"""The speech package's errors. They derive from the project's one base, ivr.errors.IvrError
(ivr.errors sits in speech's own layer, below the flow language)."""

from __future__ import annotations

from pathlib import Path

from ivr.errors import IvrError


class SpeechError(IvrError):
    """Speech recognition or intent matching cannot do what was asked."""


class ModelUnavailable(SpeechError, RuntimeError):
    """A model cannot be loaded: no usable vosk model for a language (the message says which
    path and how to get one), or the packages of the intent model are missing.

    Callers catch this and fall back: to Twilio's speech recognition or the keypad, to
    matching exact phrases and keywords.
    """

    def __init__(self, message: str, *, language: str | None = None, path: Path | None = None):
        super().__init__(message)
        self.language = language
        self.path = path


class AudioFormatError(SpeechError, ValueError):
    """An audio file or buffer is not in a format this package can read."""


class MediaStreamError(SpeechError, ValueError):
    """A Media Streams message this session cannot use (bad JSON, unsupported audio format)."""
