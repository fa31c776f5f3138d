"""What callers hear: menu announcements and how long prompts take to say."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ivr.i18n import Language, language
from ivr.i18n import sentences as S

from .model import Pause, PlayAudio, Prompt, SayText

if TYPE_CHECKING:  # the ask node's module uses this one
    from .nodes.ask import AskNode, Choice

UNKNOWN_AUDIO_SECONDS = 5.0  # assumed length of an audio file whose `seconds` is not given
_TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


def announcement(choice: Choice, lang: Language | str = "en-US") -> str | None:
    """'For billing, press 1.' (the label first, so callers know whether to listen for the
    key), in the flow's language: 'Pour la facturation, tapez 1.'"""
    if choice.key is None or not choice.label:
        return None
    lang = lang if isinstance(lang, Language) else language(lang)
    return lang.say(S.MENU_CHOICE, label=choice.label, keys=lang.keys(choice.key))


def announcements(node: AskNode, lang: Language | str = "en-US") -> list[str]:
    if not node.announce:
        return []
    return [a for a in (announcement(c, lang) for c in node.choices) if a]


def words(text: str) -> int:
    # Each template counts as one spoken word (usually a name or a number).
    n_templates = len(_TEMPLATE.findall(text))
    return len(_TEMPLATE.sub(" ", text).split()) + n_templates


def text_seconds(text: str, wpm: int) -> float:
    return words(text) * 60.0 / wpm


def prompt_seconds(prompt: Prompt, wpm: int) -> float:
    """Estimated seconds to play a prompt: speech at `wpm`, audio at its declared length."""
    total = 0.0
    for item in prompt:
        if isinstance(item, SayText):
            total += text_seconds(item.text, wpm)
        elif isinstance(item, PlayAudio):
            total += item.seconds if item.seconds is not None else UNKNOWN_AUDIO_SECONDS
        elif isinstance(item, Pause):
            total += item.seconds
    return total
