"""Each flow's intent matcher: its `intents` handed to speech.intents, built once per flow
version and shared by every call."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from .model import Flow

log = logging.getLogger("ivr")


def intent_matcher(flow: Flow):
    """The flow's intent matcher for its language (built by the speech package; cached per
    flow version): meaning in English, words, synonyms and meaning in French, exact phrases and
    keywords in any other language."""
    from speech.intents import IntentSpec, build_matcher, language_kind

    specs = {name: IntentSpec(phrases=list(i.phrases), keywords=list(i.keywords))
             for name, i in flow.intents.items()}
    if language_kind(flow.language) == "keyword":
        # The meaning model and its off-topic background are English: in other languages it
        # would route any words with full confidence. Exact phrases and keywords only.
        log.info("flow '%s' (%s): intents match exact phrases and keywords (speech is understood "
                 "in English and French)", flow.id, flow.language)
    return build_matcher(specs, language=flow.language)


@dataclass
class Matchers:
    """Intent matchers per flow version; built on first use, shared by all requests."""

    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def match(self, flow: Flow, text: str):
        return self.matcher(flow).match(text)

    def warm(self, flows: list[Flow]) -> threading.Thread:
        """Build the matchers (and load the model) in the background at start-up, so the
        first caller who speaks does not wait for it."""

        def build() -> None:
            for flow in flows:
                if flow.intents:
                    try:
                        self.matcher(flow)
                    except Exception:
                        log.exception("could not build the intent matcher for flow %s", flow.id)

        # Not a daemon: a process that exits while onnxruntime is loading in this thread
        # aborts (SIGABRT, "terminate called without an active exception"); exit waits instead.
        thread = threading.Thread(target=build, name="ivr-intents-warmup", daemon=False)
        thread.start()
        return thread

    def matcher(self, flow: Flow):
        key = (flow.id, flow.digest)
        matcher = self._cache.get(key)
        if matcher is None:
            with self._lock:
                matcher = self._cache.get(key)
                if matcher is None:
                    matcher = intent_matcher(flow)
                    self._cache = {k: v for k, v in self._cache.items() if k[0] != flow.id}
                    self._cache[key] = matcher
        return matcher
